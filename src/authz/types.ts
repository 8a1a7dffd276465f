/**
 * The shapes on both ends of authorization: Istio's AuthorizationPolicy (security.istio.io/v1, as stored in the
 * apiserver; only the fields citadel reads) and the compiled document the CA publishes in each namespace's
 * `citadel-authz` ConfigMap and the agent turns into Envoy RBAC filter configs. Envoy messages are written in
 * proto-loader's object shape (snake_case field names, oneof members as plain keys), so the agent can put them
 * into an Any without translation.
 */

/** ConfigMap the leader CA writes into every managed namespace, and the key the agent reads. */
export const AUTHZ_CONFIGMAP_NAME = 'citadel-authz';
export const AUTHZ_CONFIG_KEY = 'authz.json';
/** Version of the compiled document's format (the agent refuses others and keeps its last good one). */
export const AUTHZ_FORMAT_VERSION = 1;

export type StringList = readonly string[];

export interface PolicySource {
  readonly principals?: StringList;
  readonly notPrincipals?: StringList;
  readonly requestPrincipals?: StringList;
  readonly notRequestPrincipals?: StringList;
  readonly namespaces?: StringList;
  readonly notNamespaces?: StringList;
  readonly serviceAccounts?: StringList;
  readonly notServiceAccounts?: StringList;
  readonly ipBlocks?: StringList;
  readonly notIpBlocks?: StringList;
  readonly remoteIpBlocks?: StringList;
  readonly notRemoteIpBlocks?: StringList;
  readonly trustDomains?: StringList;
  readonly notTrustDomains?: StringList;
}

export interface PolicyOperation {
  readonly hosts?: StringList;
  readonly notHosts?: StringList;
  readonly ports?: StringList;
  readonly notPorts?: StringList;
  readonly methods?: StringList;
  readonly notMethods?: StringList;
  readonly paths?: StringList;
  readonly notPaths?: StringList;
}

export interface PolicyRule {
  readonly from?: ReadonlyArray<{ readonly source?: PolicySource }>;
  readonly to?: ReadonlyArray<{ readonly operation?: PolicyOperation }>;
  readonly when?: ReadonlyArray<{ readonly key?: string; readonly values?: StringList; readonly notValues?: StringList }>;
}

export type PolicyAction = 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';

export interface AuthorizationPolicySpec {
  readonly selector?: { readonly matchLabels?: Readonly<Record<string, string>> };
  readonly targetRef?: unknown;
  readonly targetRefs?: readonly unknown[];
  readonly action?: PolicyAction | string;
  readonly provider?: { readonly name?: string };
  readonly rules?: readonly PolicyRule[];
}

export interface AuthorizationPolicyObject {
  readonly metadata?: {
    readonly name?: string;
    readonly namespace?: string;
    readonly generation?: number;
    readonly annotations?: Readonly<Record<string, string>>;
  };
  readonly spec?: AuthorizationPolicySpec;
}

// --- Envoy RBAC (envoy.config.rbac.v3), proto-loader object shape -------------------------------------------

export type StringMatcher =
  | { readonly exact: string; readonly ignore_case?: boolean }
  | { readonly prefix: string; readonly ignore_case?: boolean }
  | { readonly suffix: string; readonly ignore_case?: boolean }
  | { readonly safe_regex: { readonly regex: string } };

export type Permission =
  | { readonly any: true }
  | { readonly and_rules: { readonly rules: readonly Permission[] } }
  | { readonly or_rules: { readonly rules: readonly Permission[] } }
  | { readonly not_rule: Permission }
  | { readonly header: { readonly name: string; readonly string_match?: StringMatcher; readonly present_match?: boolean } }
  | { readonly url_path: { readonly path: StringMatcher } }
  /** A workload (container) port: the agent resolves it against the port its Envoy listener fronts. */
  | { readonly destination_port: number };

export type Principal =
  | { readonly any: true }
  | { readonly and_ids: { readonly ids: readonly Principal[] } }
  | { readonly or_ids: { readonly ids: readonly Principal[] } }
  | { readonly not_id: Principal }
  | { readonly authenticated: { readonly principal_name: StringMatcher } };

export interface RbacPolicy {
  readonly permissions: readonly Permission[];
  readonly principals: readonly Principal[];
}

/** The compiled policies of one action for the workloads one selector picks: Envoy policy id -> policy. */
export type RbacPolicies = Readonly<Record<string, RbacPolicy>>;

/** All policies of a namespace that share one selector (`matchLabels` absent: every workload of the namespace). */
export interface CompiledSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
  /** Present when at least one ALLOW policy has this selector (even with no policies: then it allows nothing). */
  readonly allow?: RbacPolicies;
  readonly deny?: RbacPolicies;
}

/** The document in the `citadel-authz` ConfigMap (key `authz.json`). */
export interface CompiledAuthz {
  readonly version: typeof AUTHZ_FORMAT_VERSION;
  readonly namespace: string;
  readonly selectors: readonly CompiledSelector[];
}
