/**
 * The root-certificate ConfigMap decision: given what the caches hold for one namespace and the CA's current
 * trust bundle, what single write (if any) makes `istio-ca-root-cert` right. Pure: no I/O, no clock.
 */
import { namespaceSkipReason, type NamespaceFilter } from './namespaces.js';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, type ConfigMapObject, type NamespaceObject } from './objects.js';

export { DEFAULT_EXCLUDED_NAMESPACES, namespaceSkipReason, type NamespaceFilter } from './namespaces.js';

/** Istio's names: pods mount this ConfigMap and read this key. */
export const ROOT_CONFIGMAP_NAME = 'istio-ca-root-cert';
export const ROOT_CERT_KEY = 'root-cert.pem';
export const ISTIO_CONFIG_LABEL = 'istio.io/config';

export interface RootConfigMapInput {
  readonly namespaceName: string;
  readonly namespace: NamespaceObject | undefined;
  readonly configMap: ConfigMapObject | undefined;
  /** The CA's whole trust bundle (every root, PEM). Empty means the CA has nothing to publish yet. */
  readonly bundlePem: string;
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
  const skip = namespaceSkipReason(input.namespaceName, input.namespace, input.filter);
  if (skip) return { action: 'none', reason: skip };
  if (input.bundlePem.trim() === '') return { action: 'none', reason: 'no trust bundle loaded yet' };
  const cm = input.configMap;
  if (!cm) {
    return {
      action: 'create',
      reason: 'ConfigMap missing',
      desired: {
        metadata: { name: ROOT_CONFIGMAP_NAME, namespace: input.namespaceName, labels: { ...REQUIRED_LABELS } },
        data: { [ROOT_CERT_KEY]: input.bundlePem },
      },
    };
  }
  const reasons: string[] = [];
  const current = cm.data?.[ROOT_CERT_KEY];
  if (current === undefined) reasons.push(`${ROOT_CERT_KEY} missing`);
  else if (current !== input.bundlePem) reasons.push(`${ROOT_CERT_KEY} differs from the trust bundle`);
  const labels = cm.metadata?.labels ?? {};
  const wrongLabels = Object.entries(REQUIRED_LABELS).filter(([k, v]) => labels[k] !== v).map(([k]) => k);
  if (wrongLabels.length > 0) reasons.push(`label ${wrongLabels.join(', ')} missing or wrong`);
  if (reasons.length === 0) return { action: 'none', reason: 'up to date' };
  return {
    action: 'update',
    reason: reasons.join('; '),
    desired: {
      ...cm,
      metadata: { ...cm.metadata, name: ROOT_CONFIGMAP_NAME, namespace: input.namespaceName, labels: { ...labels, ...REQUIRED_LABELS } },
      data: { ...cm.data, [ROOT_CERT_KEY]: input.bundlePem },
    },
  };
}
