/**
 * The ServiceAccount secret decision (the legacy Citadel "secret mount" mode): for one ServiceAccount, should
 * Secret `istio.<sa>` be created, re-issued, deleted or left alone, and when to look again. Pure: parsing and
 * chain checks use src/pki; time comes in as `now`. Issuing (key generation, signing) happens in the act step.
 */
import {
  BACKDATE_MS,
  keyMatchesCertificate,
  parseCertificates,
  parsePrivateKeyPem,
  verifyChain,
  workloadSpiffeId,
} from '../pki/index.js';
import { isCitadelError } from '../errors.js';
import { namespaceSkipReason, type NamespaceFilter } from './namespaces.js';
import {
  isTerminating,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type NamespaceObject,
  type SecretObject,
  type ServiceAccountObject,
} from './objects.js';

export const SA_SECRET_TYPE = 'istio.io/key-and-cert';
export const SA_SECRET_PREFIX = 'istio.';
export const SA_SECRETS_NAMESPACE_LABEL = 'citadel.io/sa-secrets';
export const SA_SECRETS_NAMESPACE_VALUE = 'enabled';
export const KEY_PEM = 'key.pem';
export const CERT_CHAIN_PEM = 'cert-chain.pem';
export const ROOT_CERT_PEM = 'root-cert.pem';

/** `off`: no secrets; `labeled`: namespaces labelled citadel.io/sa-secrets=enabled; `all`: every namespace. */
export type SaSecretsMode = 'off' | 'labeled' | 'all';
export const SA_SECRETS_MODES: readonly SaSecretsMode[] = ['off', 'labeled', 'all'];

export function saSecretName(serviceAccount: string): string {
  return `${SA_SECRET_PREFIX}${serviceAccount}`;
}

/** The ServiceAccount a secret name belongs to, or undefined for other names. */
export function serviceAccountOfSecret(secretName: string): string | undefined {
  return secretName.startsWith(SA_SECRET_PREFIX) && secretName.length > SA_SECRET_PREFIX.length
    ? secretName.slice(SA_SECRET_PREFIX.length)
    : undefined;
}

/** Whether ServiceAccounts of this namespace get secrets under `mode`. */
export function namespaceWantsSaSecrets(mode: SaSecretsMode, ns: NamespaceObject | undefined): boolean {
  if (mode === 'off' || !ns || isTerminating(ns)) return false;
  return mode === 'all' || ns.metadata?.labels?.[SA_SECRETS_NAMESPACE_LABEL] === SA_SECRETS_NAMESPACE_VALUE;
}

/**
 * When to rotate: at `ratio` of the certificate's life, measured from when it was issued. Our CA backdates
 * notBefore by BACKDATE_MS for clock skew; counting that as life would rotate short-lived certificates too early.
 */
export function rotationTime(notBefore: number, notAfter: number, ratio: number, minIntervalMs = 0): number {
  const issuedAt = Math.min(notBefore + BACKDATE_MS, notAfter);
  const rotateAt = issuedAt + Math.floor((notAfter - issuedAt) * ratio);
  // A certificate cut short by the signer's own expiry would otherwise be re-issued ever faster as that
  // expiry nears (each one half as long as the last); never before `minIntervalMs` after issuance, nor after expiry.
  return Math.min(Math.max(rotateAt, issuedAt + minIntervalMs), notAfter);
}

export interface SaSecretInput {
  readonly namespaceName: string;
  /** The namespaces this CA manages at all (--namespace-selector, exclusions). */
  readonly filter: NamespaceFilter;
  readonly serviceAccountName: string;
  readonly namespace: NamespaceObject | undefined;
  readonly serviceAccount: ServiceAccountObject | undefined;
  readonly secret: SecretObject | undefined;
  readonly mode: SaSecretsMode;
  readonly trustDomain: string;
  readonly bundlePem: string;
  readonly now: number;
  /** Rotate at this fraction of the certificate's life (0 < ratio < 1). */
  readonly gracePeriodRatio: number;
  /** Rotation never comes sooner than this after issuance (default 0). */
  readonly minReissueIntervalMs?: number;
}

export type SaSecretDecision =
  | { readonly action: 'none'; readonly reason: string; /** look again at this time (rotation) */ readonly recheckAt?: number }
  | { readonly action: 'create' | 'update'; readonly reason: string }
  | { readonly action: 'delete'; readonly reason: string; readonly uid?: string; readonly resourceVersion?: string };

/** Secrets we may delete: ours by label or by owner reference to this ServiceAccount. */
function isOurs(secret: SecretObject, serviceAccount: string): boolean {
  if (secret.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE) return true;
  return (secret.metadata?.ownerReferences ?? []).some((o) => o.kind === 'ServiceAccount' && o.name === serviceAccount);
}

function decode(secret: SecretObject, key: string): string | undefined {
  const raw = secret.data?.[key];
  return raw === undefined ? undefined : Buffer.from(raw, 'base64').toString('utf8');
}

/**
 * Decides the one write for a ServiceAccount's secret. Only namespaces that pass the namespace filter are
 * looked at; within them, secrets exist for ServiceAccounts of namespaces selected by `mode`, and a secret of
 * ours whose ServiceAccount is gone is deleted whatever the mode selects.
 */
export function decideSaSecret(input: SaSecretInput): SaSecretDecision {
  const { secret, serviceAccount: sa } = input;
  // Outside our namespaces nothing is ours to touch, not even to delete (another CA may manage them).
  const skip = namespaceSkipReason(input.namespaceName, input.namespace, input.filter);
  if (skip) return { action: 'none', reason: skip };
  if (!sa) {
    if (secret && isOurs(secret, input.serviceAccountName)) {
      return { action: 'delete', reason: 'ServiceAccount deleted', uid: secret.metadata?.uid, resourceVersion: secret.metadata?.resourceVersion };
    }
    return { action: 'none', reason: 'ServiceAccount does not exist' };
  }
  if (!namespaceWantsSaSecrets(input.mode, input.namespace)) {
    return { action: 'none', reason: input.mode === 'off' ? 'ServiceAccount secrets are off' : 'namespace not selected for ServiceAccount secrets' };
  }
  if (input.bundlePem.trim() === '') return { action: 'none', reason: 'no trust bundle loaded yet' };
  if (!secret) return { action: 'create', reason: 'secret missing' };
  const problem = secretProblem(input, secret, sa);
  if (typeof problem === 'string') return { action: 'update', reason: problem };
  return { action: 'none', reason: 'up to date', recheckAt: problem.rotateAt };
}

function secretProblem(input: SaSecretInput, secret: SecretObject, sa: ServiceAccountObject): string | { rotateAt: number } {
  if (secret.type !== SA_SECRET_TYPE) return `type is ${secret.type ?? 'unset'}, not ${SA_SECRET_TYPE}`;
  const keyPem = decode(secret, KEY_PEM);
  const chainPem = decode(secret, CERT_CHAIN_PEM);
  const rootPem = decode(secret, ROOT_CERT_PEM);
  for (const [name, value] of [[KEY_PEM, keyPem], [CERT_CHAIN_PEM, chainPem], [ROOT_CERT_PEM, rootPem]] as const) {
    if (!value) return `${name} missing`;
  }
  let leaf;
  let intermediates;
  let key;
  try {
    key = parsePrivateKeyPem(keyPem!);
  } catch {
    return `${KEY_PEM} does not parse`;
  }
  try {
    [leaf, ...intermediates] = parseCertificates(chainPem!);
  } catch {
    return `${CERT_CHAIN_PEM} does not parse`;
  }
  if (!leaf) return `${CERT_CHAIN_PEM} holds no certificate`;
  if (!keyMatchesCertificate(key, leaf)) return 'key does not match the certificate';
  const expected = workloadSpiffeId(input.trustDomain, input.namespaceName, input.serviceAccountName);
  if (leaf.uris.length !== 1 || leaf.uris[0] !== expected) return `certificate identity is ${leaf.uris.join(',') || 'none'}, not ${expected}`;
  let roots;
  try {
    roots = parseCertificates(input.bundlePem);
  } catch {
    return 'trust bundle does not parse';
  }
  try {
    verifyChain({ leaf, intermediates, roots, now: input.now });
  } catch (err) {
    if (isCitadelError(err, 'CERT_EXPIRED')) return 'certificate expired';
    return 'certificate does not chain to the current trust bundle';
  }
  if (rootPem !== input.bundlePem) return `${ROOT_CERT_PEM} differs from the trust bundle`;
  const rotateAt = rotationTime(leaf.notBefore, leaf.notAfter, input.gracePeriodRatio, input.minReissueIntervalMs);
  if (input.now >= rotateAt) return 'rotation due';
  const saUid = sa.metadata?.uid;
  const owners = secret.metadata?.ownerReferences ?? [];
  if (!owners.some((o) => o.kind === 'ServiceAccount' && o.name === input.serviceAccountName && (!saUid || o.uid === saUid))) {
    return 'owner reference to the ServiceAccount missing';
  }
  if (secret.metadata?.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE) return `label ${MANAGED_BY_LABEL} missing`;
  return { rotateAt };
}
