/**
 * The PodCertificateRequest policy (KEP-4317): given one request and what we know about its pod, decide whether
 * to issue (and what), deny, or fail, with a condition reason a user can act on. Pure: no Kubernetes, no clock
 * (time is passed in). The controller in src/controllers/pod-certificate-controller.ts gathers, calls this, signs
 * through the CA's one signing path (CertificateAuthority.issueWorkload) and writes the status.
 *
 * What the apiserver already guarantees (NodeRestriction, validation): the node asked for its own pod, the
 * pod/ServiceAccount names and UIDs matched when the request was made, maxExpirationSeconds is 3600..7862400,
 * and the key proof verified. We check the key and its proof again (never sign an unproven key) and that the pod
 * still exists, since a request can wait in the queue after its pod is gone.
 */
import type { KeyObject } from 'node:crypto';
import { CitadelError, isCitadelError } from '../errors.js';
import { BACKDATE_MS, podCertificatePublicKey, workloadSpiffeId } from '../pki/index.js';

/** Condition types the API allows, and the reasons we set. */
export const PCR_ISSUED = 'Issued';
export const PCR_DENIED = 'Denied';
export const PCR_FAILED = 'Failed';
export const PCR_REASONS = {
  issued: 'Issued',
  /** Kubernetes' own reason for a key the signer does not take. */
  unsupportedKey: 'UnsupportedKeyType',
  invalidKey: 'InvalidProofOfPossession',
  podGone: 'PodNotFound',
  podMismatch: 'PodMismatch',
  lifetime: 'LifetimeNotAllowed',
  caExpiring: 'SignerExpiresTooSoon',
} as const;

/** The API's lifetime floor: an issued certificate must live at least an hour. */
export const MIN_POD_CERT_LIFETIME_MS = 3600_000;
/** beginRefreshAt must be at least this far from both ends of the certificate's life. */
export const REFRESH_MARGIN_MS = 10 * 60_000;
/** Supported projection keyType values, named in the message of an UnsupportedKeyType denial. */
export const SUPPORTED_KEY_TYPES = 'ECDSAP256, ECDSAP384, RSA3072 or RSA4096';

export interface PodCertificateSpec {
  readonly signerName: string;
  readonly podName: string;
  readonly podUID: string;
  readonly serviceAccountName: string;
  readonly serviceAccountUID?: string;
  readonly maxExpirationSeconds?: number;
  /** base64, as the API returns bytes fields. */
  readonly stubPKCS10Request?: string;
  readonly pkixPublicKey?: string;
  readonly proofOfPossession?: string;
}

/** The pod as read now (undefined: it no longer exists). */
export interface PodFacts {
  readonly uid?: string;
  readonly serviceAccountName?: string;
}

export interface PodCertificatePolicy {
  readonly trustDomain: string;
  /** The CA's longest workload certificate (--max-workload-cert-ttl): a ceiling below the request's own. */
  readonly maxTtlMs: number;
}

/** A request that gets no certificate: Denied or Failed, with the condition's reason and message. */
export interface PodCertificateRefusal {
  readonly action: 'deny' | 'fail';
  readonly reason: string;
  readonly message: string;
}

export type PodCertificateDecision =
  | { readonly action: 'issue'; readonly spiffeId: string; readonly publicKey: KeyObject; readonly keyType: string; readonly ttlMs: number }
  | PodCertificateRefusal;

const deny = (reason: string, message: string): PodCertificateDecision => ({ action: 'deny', reason, message });

/** The API default for maxExpirationSeconds when a request leaves it out. */
const DEFAULT_MAX_EXPIRATION_SECONDS = 86_400;

/** Decides one request. Never throws for bad input: every refusal is a decision. */
export function decidePodCertificate(namespace: string, spec: PodCertificateSpec, pod: PodFacts | undefined, policy: PodCertificatePolicy): PodCertificateDecision {
  const podRef = `${spec.podName} (uid ${spec.podUID})`;
  if (!pod || pod.uid !== spec.podUID) {
    return deny(PCR_REASONS.podGone, `pod ${podRef} no longer exists; a new pod asks again for its own certificate`);
  }
  if (pod.serviceAccountName !== spec.serviceAccountName) {
    return deny(PCR_REASONS.podMismatch, `the request names ServiceAccount ${spec.serviceAccountName}, but pod ${podRef} runs as ${pod.serviceAccountName ?? '(none)'}`);
  }
  let key;
  try {
    key = podCertificatePublicKey({
      stubPKCS10Request: fromBase64(spec.stubPKCS10Request),
      pkixPublicKey: fromBase64(spec.pkixPublicKey),
      proofOfPossession: fromBase64(spec.proofOfPossession),
      podUid: spec.podUID,
    });
  } catch (err) {
    if (isCitadelError(err, 'KEY_UNSUPPORTED') || isCitadelError(err, 'KEY_TOO_WEAK')) {
      return deny(PCR_REASONS.unsupportedKey, `${err.message}; set the podCertificate projection's keyType to ${SUPPORTED_KEY_TYPES}`);
    }
    const message = err instanceof CitadelError ? err.message : 'the public key could not be read';
    return deny(PCR_REASONS.invalidKey, `${message}; the key was not proven to belong to the requester`);
  }
  const requestedMs = (spec.maxExpirationSeconds ?? DEFAULT_MAX_EXPIRATION_SECONDS) * 1000;
  const lifetimeMs = Math.min(requestedMs, policy.maxTtlMs);
  if (lifetimeMs < MIN_POD_CERT_LIFETIME_MS) {
    return deny(PCR_REASONS.lifetime, `this CA issues certificates of at most ${Math.floor(policy.maxTtlMs / 1000)}s (--max-workload-cert-ttl), below the 3600s minimum of pod certificates`);
  }
  let spiffeId;
  try {
    spiffeId = workloadSpiffeId(policy.trustDomain, namespace, spec.serviceAccountName);
  } catch (err) {
    return deny(PCR_REASONS.podMismatch, `no SPIFFE ID can be made for ${namespace}/${spec.serviceAccountName}: ${(err as Error).message}`);
  }
  // The leaf is backdated (clock skew); its whole life, backdate included, must fit maxExpirationSeconds.
  return { action: 'issue', spiffeId, publicKey: key.publicKey, keyType: key.key.type, ttlMs: lifetimeMs - BACKDATE_MS };
}

/**
 * When the kubelet should start refreshing: halfway through the certificate's life (as the agent renews), kept
 * within the API's window [notBefore + 10 min, notAfter - 10 min]. Whole seconds, as the API stores times.
 */
export function beginRefreshAt(notBefore: number, notAfter: number): number {
  const half = notBefore + (notAfter - notBefore) / 2;
  const clamped = Math.min(Math.max(half, notBefore + REFRESH_MARGIN_MS), notAfter - REFRESH_MARGIN_MS);
  return Math.floor(clamped / 1000) * 1000;
}

/**
 * Why an issued certificate cannot go out (the API refuses leaves shorter than an hour; the signing certificate
 * may cut one short), or undefined when it may.
 */
export function issuedLifetimeProblem(notBefore: number, notAfter: number): PodCertificateRefusal | undefined {
  if (notAfter - notBefore >= MIN_POD_CERT_LIFETIME_MS) return undefined;
  return {
    action: 'fail',
    reason: PCR_REASONS.caExpiring,
    message: `the CA's signing certificate expires at ${new Date(notAfter).toISOString()}, too soon for a certificate of at least an hour; rotate the CA key material`,
  };
}

function fromBase64(value: string | undefined): Buffer | undefined {
  return value ? Buffer.from(value, 'base64') : undefined;
}
