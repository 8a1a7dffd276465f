/**
 * The decision for a ConfigMap the CA publishes into every namespace (`istio-ca-root-cert`, `istio-ca-crl`): given
 * what the caches hold for one namespace and the content to publish, what single write (if any) makes it right.
 * Pure: no I/O, no clock.
 */
import { namespaceSkipReason, type NamespaceFilter } from './namespaces.js';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, type ConfigMapObject, type NamespaceObject } from './objects.js';

export { DEFAULT_EXCLUDED_NAMESPACES, namespaceSkipReason, type NamespaceFilter } from './namespaces.js';

/** Istio's names: pods mount this ConfigMap and read this key. */
export const ROOT_CONFIGMAP_NAME = 'istio-ca-root-cert';
export const ROOT_CERT_KEY = 'root-cert.pem';
/** citadel's addition: the trust domain's SPIFFE bundle (X.509 roots and JWT-SVID keys), JSON; agents read it. */
export const SPIFFE_BUNDLE_KEY = 'spiffe-bundle.json';
export const ISTIO_CONFIG_LABEL = 'istio.io/config';

/** A ConfigMap published into every managed namespace: its name and the one key citadel owns in it. */
export interface PublishedConfigMap {
  readonly name: string;
  readonly key: string;
  /** What the content is, for reasons and logs ("the trust bundle"). */
  readonly what: string;
}

export const ROOT_CONFIGMAP: PublishedConfigMap = { name: ROOT_CONFIGMAP_NAME, key: ROOT_CERT_KEY, what: 'the trust bundle' };

export interface PublishedConfigMapInput {
  readonly namespaceName: string;
  readonly namespace: NamespaceObject | undefined;
  readonly configMap: ConfigMapObject | undefined;
  readonly spec: PublishedConfigMap;
  /** What the key must hold; undefined when there is nothing to publish yet ("" is content: e.g. no CRL). */
  readonly content: string | undefined;
  /** More keys citadel owns in the same ConfigMap, written and checked beside `spec.key`. */
  readonly extraData?: Readonly<Record<string, string>>;
  readonly filter: NamespaceFilter;
}

export interface RootConfigMapInput {
  readonly namespaceName: string;
  readonly namespace: NamespaceObject | undefined;
  readonly configMap: ConfigMapObject | undefined;
  /** The CA's whole trust bundle (every root, PEM). Empty means the CA has nothing to publish yet. */
  readonly bundlePem: string;
  /** The SPIFFE bundle JSON, published beside the PEM when given. */
  readonly spiffeBundleJson?: string;
  readonly filter: NamespaceFilter;
}

export type RootConfigMapDecision =
  | { readonly action: 'none'; readonly reason: string }
  | { readonly action: 'create' | 'update'; readonly reason: string; readonly desired: ConfigMapObject };

const REQUIRED_LABELS: Readonly<Record<string, string>> = { [ISTIO_CONFIG_LABEL]: 'true', [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };

/**
 * Decides the one write for a namespace. Updates keep every other key, label, annotation and owner of an existing
 * ConfigMap and carry its resourceVersion, so a concurrent edit makes the write fail (and be retried) rather
 * than be lost. A namespace leaving the selector keeps its ConfigMap (as in Istio).
 */
export function decideRootConfigMap(input: RootConfigMapInput): RootConfigMapDecision {
  if (input.bundlePem.trim() === '' && !namespaceSkipReason(input.namespaceName, input.namespace, input.filter)) return { action: 'none', reason: 'no trust bundle loaded yet' };
  const extraData = input.spiffeBundleJson !== undefined ? { [SPIFFE_BUNDLE_KEY]: input.spiffeBundleJson } : undefined;
  return decidePublishedConfigMap({ ...input, spec: ROOT_CONFIGMAP, content: input.bundlePem, ...(extraData ? { extraData } : {}) });
}

/** decideRootConfigMap for any published ConfigMap. */
export function decidePublishedConfigMap(input: PublishedConfigMapInput): RootConfigMapDecision {
  const { spec, content } = input;
  const skip = namespaceSkipReason(input.namespaceName, input.namespace, input.filter);
  if (skip) return { action: 'none', reason: skip };
  if (content === undefined) return { action: 'none', reason: 'nothing to publish yet' };
  const cm = input.configMap;
  if (!cm) {
    return {
      action: 'create',
      reason: 'ConfigMap missing',
      desired: {
        metadata: { name: spec.name, namespace: input.namespaceName, labels: { ...REQUIRED_LABELS } },
        data: { [spec.key]: content, ...input.extraData },
      },
    };
  }
  const reasons: string[] = [];
  const current = cm.data?.[spec.key];
  if (current === undefined) reasons.push(`${spec.key} missing`);
  else if (current !== content) reasons.push(`${spec.key} differs from ${spec.what}`);
  for (const [key, value] of Object.entries(input.extraData ?? {})) if (cm.data?.[key] !== value) reasons.push(`${key} missing or outdated`);
  const labels = cm.metadata?.labels ?? {};
  const wrongLabels = Object.entries(REQUIRED_LABELS).filter(([k, v]) => labels[k] !== v).map(([k]) => k);
  if (wrongLabels.length > 0) reasons.push(`label ${wrongLabels.join(', ')} missing or wrong`);
  if (reasons.length === 0) return { action: 'none', reason: 'up to date' };
  return {
    action: 'update',
    reason: reasons.join('; '),
    desired: {
      ...cm,
      metadata: { ...cm.metadata, name: spec.name, namespace: input.namespaceName, labels: { ...labels, ...REQUIRED_LABELS } },
      data: { ...cm.data, [spec.key]: content, ...input.extraData },
    },
  };
}
