/**
 * Authorization: the leader compiles each managed namespace's AuthorizationPolicies (src/authz/compile.ts) into
 * the `citadel-authz` ConfigMap that pods mount (kept right like `istio-ca-root-cert`, root-configmap-controller.ts), and
 * writes on each policy's status whether it was compiled exactly or what was not expressed and how that fails
 * closed. Keys: the namespace (ConfigMap) and `<namespace>/<name>` (status).
 */
import { compileNamespace } from '../authz/compile.js';
import { AUTHZ_CONFIG_KEY, AUTHZ_CONFIGMAP_NAME, type AuthorizationPolicyObject } from '../authz/types.js';
import type { Logger } from '../log.js';
import type { ObjectWriter } from '../kube/writes.js';
import type { ControllerMetrics } from './metrics.js';
import { namespaceSkipReason, type NamespaceFilter } from './namespaces.js';
import type { ConfigMapObject, NamespaceObject } from './objects.js';
import { RetryLater } from './queue.js';
import type { Cache, Reconciler } from './reconciler.js';
import { createContentConfigMapReconciler } from './root-configmap-controller.js';

export const AUTHZ_CONFIGMAP_CONTROLLER = 'authz-configmap';
export const AUTHZ_STATUS_CONTROLLER = 'authz-status';
/** The condition citadel writes on every AuthorizationPolicy it compiles. */
export const COMPILED_CONDITION = 'citadel.io/Compiled';

export interface PolicyObject extends AuthorizationPolicyObject {
  readonly status?: { readonly conditions?: readonly StatusCondition[]; readonly [k: string]: unknown };
}

export interface StatusCondition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason?: string;
  readonly message?: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime?: string;
}

export interface AuthzDeps {
  readonly namespaces: Cache<NamespaceObject>;
  readonly configMaps: Cache<ConfigMapObject>;
  readonly policies: Cache<PolicyObject>;
  readonly filter: NamespaceFilter;
  readonly trustDomain: string;
  readonly writer: ObjectWriter;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
}

/** The ConfigMap's document for a namespace, as the bytes the agent reads. */
export function authzConfigMapData(namespace: string, trustDomain: string, policies: readonly AuthorizationPolicyObject[]): string {
  return `${JSON.stringify(compileNamespace({ namespace, trustDomain, policies }).document, null, 1)}\n`;
}

export const AUTHZ_CONFIGMAP = { name: AUTHZ_CONFIGMAP_NAME, key: AUTHZ_CONFIG_KEY, what: 'the compiled AuthorizationPolicies' } as const;

export function createAuthzConfigMapReconciler(deps: AuthzDeps): Reconciler {
  return createContentConfigMapReconciler({
    ...deps,
    controller: AUTHZ_CONFIGMAP_CONTROLLER,
    spec: AUTHZ_CONFIGMAP,
    content: (namespace) => authzConfigMapData(namespace, deps.trustDomain, deps.policies.list(namespace)),
  });
}

/**
 * The status a policy should carry, or undefined when it already does. Other status fields and conditions of
 * other types (e.g. Istio's own) are kept. Pure: `now` is passed in.
 */
export function decidePolicyStatus(policy: PolicyObject, trustDomain: string, now: Date): Record<string, unknown> | undefined {
  const namespace = policy.metadata?.namespace ?? '';
  const [report] = compileNamespace({ namespace, trustDomain, policies: [policy] }).reports;
  if (!report) return undefined;
  const ok = report.problems.length === 0;
  const want = {
    type: COMPILED_CONDITION,
    status: ok ? 'True' : 'False',
    reason: ok ? 'Compiled' : 'PartlyUnsupported',
    message: ok ? 'compiled into Envoy RBAC exactly' : report.problems.join('; '),
    ...(policy.metadata?.generation !== undefined ? { observedGeneration: policy.metadata.generation } : {}),
  } as const;
  const conditions = policy.status?.conditions ?? [];
  const have = conditions.find((c) => c.type === COMPILED_CONDITION);
  if (have && have.status === want.status && have.reason === want.reason && have.message === want.message && have.observedGeneration === want.observedGeneration) {
    return undefined;
  }
  const lastTransitionTime = have && have.status === want.status && have.lastTransitionTime ? have.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return { ...policy.status, conditions: [...conditions.filter((c) => c.type !== COMPILED_CONDITION), { ...want, lastTransitionTime }] };
}

export const policyKey = (p: { metadata?: { namespace?: string; name?: string } }) =>
  p.metadata?.namespace && p.metadata.name ? `${p.metadata.namespace}/${p.metadata.name}` : undefined;

export function createAuthzStatusReconciler(deps: AuthzDeps & { now: () => Date }): Reconciler {
  const log = deps.log.child({ controller: AUTHZ_STATUS_CONTROLLER });
  return {
    name: AUTHZ_STATUS_CONTROLLER,
    allKeys: () => deps.policies.list().map(policyKey).filter((k): k is string => !!k),
    async reconcile(key, signal) {
      const [namespace, name] = key.split('/') as [string, string];
      const policy = deps.policies.get(name, namespace);
      if (!policy || namespaceSkipReason(namespace, deps.namespaces.get(namespace), deps.filter)) return;
      const status = decidePolicyStatus(policy, deps.trustDomain, deps.now());
      if (!status) return;
      const outcome = await deps.writer.setAuthorizationPolicyStatus(namespace, name, status, signal);
      deps.metrics.writes.inc({ controller: AUTHZ_STATUS_CONTROLLER, action: 'update', outcome });
      if (outcome === 'gone') return;
      if (outcome !== 'updated') throw new RetryLater(`status of AuthorizationPolicy ${key}: ${outcome}`);
      const condition = (status.conditions as StatusCondition[]).find((c) => c.type === COMPILED_CONDITION)!;
      const fields = { policy: key, compiled: condition.status, message: condition.message };
      if (condition.status === 'True') log.info(fields, 'AuthorizationPolicy compiled');
      else log.warn(fields, 'AuthorizationPolicy not fully expressible; it fails closed as the status says');
    },
  };
}
