/**
 * The signer-linked ClusterTrustBundle decision: given the cached bundle object and the CA's trust bundle, the one
 * write (if any) that makes it right. Pure. Pods project it with a `clusterTrustBundle` volume source (by
 * signerName, or by name); it carries the same roots as the `istio-ca-root-cert` ConfigMaps.
 */
import { CitadelError } from '../errors.js';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, type ObjectMeta } from './objects.js';

export interface ClusterTrustBundleObject {
  readonly metadata?: ObjectMeta;
  readonly spec: { readonly signerName?: string; readonly trustBundle: string };
}

/** Istio names its bundle `<signer>:root-cert` (istio.io:istiod-ca:root-cert); we use the same suffix. */
const NAME_SUFFIX = 'root-cert';

// domain/path: a DNS name, then one path segment; kubernetes.io signers belong to Kubernetes.
const SIGNER_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+\/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/**
 * Checks a signer name for --pod-certificate-signer: `<domain>/<name>`, not under kubernetes.io.
 * @throws CitadelError CONFIG_INVALID saying what is wrong.
 */
export function validateSignerName(name: string): string {
  if (!SIGNER_NAME.test(name) || name.length > 200) throw new CitadelError('CONFIG_INVALID', `"${name.slice(0, 80)}" is not a signer name of the form <domain>/<name> (e.g. citadel.io/workload)`);
  const domain = name.split('/')[0]!;
  if (domain === 'kubernetes.io' || domain.endsWith('.kubernetes.io')) throw new CitadelError('CONFIG_INVALID', 'signer names under kubernetes.io are reserved for Kubernetes');
  return name;
}

/** The signer-linked bundle name: the signer name with "/" as ":", then ":root-cert" (the API's naming rule). */
export function clusterTrustBundleName(signerName: string): string {
  return `${signerName.replace('/', ':')}:${NAME_SUFFIX}`;
}

export type ClusterTrustBundleDecision =
  | { readonly action: 'none'; readonly reason: string }
  | { readonly action: 'create' | 'update'; readonly reason: string; readonly desired: ClusterTrustBundleObject };

const REQUIRED_LABELS: Readonly<Record<string, string>> = { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };

/** Decides the one write. Updates keep other labels and annotations and carry the resourceVersion read. */
export function decideClusterTrustBundle(input: { signerName: string; bundle: ClusterTrustBundleObject | undefined; bundlePem: string }): ClusterTrustBundleDecision {
  if (input.bundlePem.trim() === '') return { action: 'none', reason: 'no trust bundle loaded yet' };
  const name = clusterTrustBundleName(input.signerName);
  const current = input.bundle;
  if (!current) {
    return {
      action: 'create',
      reason: 'ClusterTrustBundle missing',
      desired: { metadata: { name, labels: { ...REQUIRED_LABELS } }, spec: { signerName: input.signerName, trustBundle: input.bundlePem } },
    };
  }
  const reasons: string[] = [];
  if (current.spec.trustBundle !== input.bundlePem) reasons.push('trustBundle differs from the CA trust bundle');
  const labels = current.metadata?.labels ?? {};
  if (Object.entries(REQUIRED_LABELS).some(([k, v]) => labels[k] !== v)) reasons.push(`label ${MANAGED_BY_LABEL} missing or wrong`);
  if (reasons.length === 0) return { action: 'none', reason: 'up to date' };
  return {
    action: 'update',
    reason: reasons.join('; '),
    desired: { ...current, metadata: { ...current.metadata, name, labels: { ...labels, ...REQUIRED_LABELS } }, spec: { ...current.spec, trustBundle: input.bundlePem } },
  };
}
