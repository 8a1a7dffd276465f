/**
 * Self-signed key material in the `istio-ca-secret` Secret (type istio.io/ca-root; Istio's keys ca-cert.pem,
 * ca-key.pem, cert-chain.pem, key.pem, root-cert.pem), so istiod and citadel can take over each other's root.
 *
 * - Load or create: read the Secret; if absent, generate a root and create it; on a create conflict (another
 *   replica won the race) re-read and use theirs. Every replica therefore ends with the same single root.
 * - Follow: every replica watches the Secret and installs what it holds (invalid content is refused and counted).
 * - Rotate (only where `canWrite()` says so, i.e. on the leader): in the last `gracePercent` of the root's life,
 *   issue a new root with the SAME key and organisation, and write it as ca-cert.pem with root-cert.pem holding the
 *   new root followed by the old one. Both roots share subject and key, so a leaf signed by either verifies under
 *   either: workloads that only know the old root accept leaves from the new one, and the new root is in the
 *   published bundle from the moment it signs (the "next" root is published no later than it is used).
 */
import type { KeyObject } from 'node:crypto';
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SecretData, SecretStore } from '../kube/secrets.js';
import { describeKey, generateKeyPair, issueCaCertificate, type KeyType, type ParsedCertificate } from '../pki/index.js';
import type { Keyring } from './keyring.js';
import { loadSelfSignedMaterial, type CaMaterial } from './material.js';
import type { CaMetrics } from './metrics.js';

export const CA_SECRET_NAME = 'istio-ca-secret';
export const CA_SECRET_TYPE = 'istio.io/ca-root';

export interface SelfSignedOptions {
  readonly trustDomain: string;
  readonly keyType: KeyType;
  /** Lifetime of a new root (Istio: 3650 days). */
  readonly rootTtlMs: number;
  /** How often the rotator looks; 0 disables rotation. */
  readonly checkIntervalMs: number;
  /** Rotate when less than this percentage of the root's lifetime remains (Istio: 20). */
  readonly gracePercent: number;
}

export interface SelfSignedDeps {
  readonly keyring: Keyring;
  readonly secrets: SecretStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: CaMetrics;
  /** Whether this replica may write the Secret (leader election); default: always. */
  readonly canWrite?: () => boolean;
  /** Random number in [0, 1) for the rotator's first-delay jitter; default Math.random. */
  readonly random?: () => number;
}

/** Istio's private key encoding for the Secret: PKCS#1 for RSA, SEC1 for EC. */
function keyPem(key: KeyObject): string {
  const info = describeKey(key);
  return key.export({ type: info.algorithm === 'rsa' ? 'pkcs1' : 'sec1', format: 'pem' }).toString();
}

function secretData(root: ParsedCertificate | { pem: string }, key: KeyObject, roots: readonly { pem: string }[]): Record<string, string> {
  return {
    'ca-cert.pem': root.pem,
    'ca-key.pem': keyPem(key),
    'cert-chain.pem': '',
    'key.pem': '',
    'root-cert.pem': roots.map((r) => r.pem).join(''),
  };
}

const sourceOf = (ns: string) => `secret ${ns}/${CA_SECRET_NAME}`;

/** The running self-signed source. */
export interface SelfSignedSource {
  readonly description: string;
  /** Feed from a watch on istio-ca-secret. */
  onSecret(secret: SecretData | undefined): void;
  /** Runs one rotation check now (the timer calls this too). Resolves true when it rotated. */
  checkRotation(): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * Loads or creates istio-ca-secret and installs it; starts the rotator.
 * @throws CitadelError CA_MATERIAL_INVALID when the existing Secret holds unusable material (never replaced
 *   silently: that would change every workload's root), or the API error when the Secret cannot be read/created.
 */
export async function startSelfSigned(deps: SelfSignedDeps & { namespace: string; options: SelfSignedOptions }): Promise<SelfSignedSource> {
  const { keyring, secrets, clock, log, options, namespace } = deps;
  const source = sourceOf(namespace);
  const canWrite = deps.canWrite ?? (() => true);

  const load = (s: SecretData): CaMaterial => {
    if (s.type && s.type !== CA_SECRET_TYPE) log.warn({ source, type: s.type }, `Secret type is not ${CA_SECRET_TYPE}; using its keys anyway`);
    return loadSelfSignedMaterial(s.data, source, clock.now());
  };

  let lastVersion: string | undefined;
  let existing = await secrets.read(CA_SECRET_NAME);
  if (!existing) {
    const { privateKey } = await generateKeyPair(options.keyType);
    const root = issueCaCertificate({ key: privateKey, organization: options.trustDomain, ttlMs: options.rootTtlMs, now: clock.now() });
    const res = await secrets.create({ name: CA_SECRET_NAME, type: CA_SECRET_TYPE, data: secretData(root, privateKey, [root]) });
    if (res.created) {
      log.info({ source, keyType: options.keyType, serial: root.serialHex, notAfter: new Date(root.notAfter).toISOString() }, 'created a self-signed root');
      existing = res.secret;
    } else {
      log.info({ source }, 'another replica created the self-signed root first; using it');
      existing = await secrets.read(CA_SECRET_NAME);
      if (!existing) throw new CitadelError('UPSTREAM_UNAVAILABLE', `${source}: created by another replica but gone when re-read; restart to retry`);
    }
  }
  keyring.install(load(existing));
  lastVersion = existing.resourceVersion;

  let stopped = false;
  let timer: Timer | undefined;
  let rotating: Promise<boolean> | undefined;

  const rotate = async (): Promise<boolean> => {
    const material = keyring.current();
    if (!material || material.mode !== 'self-signed' || !canWrite()) return false;
    const now = clock.now();
    const root = material.signer.cert;
    const life = root.notAfter - root.notBefore;
    const left = root.notAfter - now;
    if (left > (life * options.gracePercent) / 100) return false;
    const current = await secrets.read(CA_SECRET_NAME);
    if (!current || !current.resourceVersion) return false;
    // Rotate what the Secret holds now (another replica may already have rotated it).
    const fresh = load(current);
    if (fresh.fingerprint !== material.fingerprint) {
      keyring.install(fresh);
      lastVersion = current.resourceVersion;
      if (fresh.signer.cert.notAfter - now > ((fresh.signer.cert.notAfter - fresh.signer.cert.notBefore) * options.gracePercent) / 100) return false;
    }
    const next = issueCaCertificate({ key: fresh.signer.key, organization: options.trustDomain, ttlMs: options.rootTtlMs, now });
    const keptRoots = fresh.roots.filter((r) => r.notAfter > now);
    const res = await secrets.update(CA_SECRET_NAME, current.resourceVersion, secretData(next, fresh.signer.key, [next, ...keptRoots]));
    if (!res.updated) {
      log.info({ source, reason: res.reason }, 'self-signed root rotation lost a race; will re-read');
      return false;
    }
    log.info({ source, oldSerial: fresh.signer.cert.serialHex, newSerial: next.serialHex, notAfter: new Date(next.notAfter).toISOString() }, 'rotated the self-signed root (same key)');
    keyring.install(load(res.secret));
    lastVersion = res.secret.resourceVersion;
    return true;
  };

  const checkRotation = async (): Promise<boolean> => {
    rotating ??= rotate()
      .catch((err: unknown) => {
        log.error({ source, err: err instanceof Error ? err.message : String(err) }, 'self-signed root rotation failed; will retry');
        return false;
      })
      .finally(() => {
        rotating = undefined;
      });
    return rotating;
  };

  const schedule = (delay: number) => {
    if (stopped || options.checkIntervalMs <= 0) return;
    timer = clock.setTimer(() => {
      void checkRotation().finally(() => schedule(options.checkIntervalMs));
    }, delay);
  };
  schedule(Math.floor((deps.random ?? Math.random)() * options.checkIntervalMs));

  return {
    description: source,
    onSecret(secret) {
      if (stopped) return;
      if (!secret) {
        const material = keyring.current();
        if (!canWrite() || !material || material.mode !== 'self-signed') {
          log.warn({ source }, 'istio-ca-secret deleted; still signing with the loaded root');
          return;
        }
        // Put the root back as it was, so a restart does not mint a different one.
        void secrets
          .create({ name: CA_SECRET_NAME, type: CA_SECRET_TYPE, data: secretData(material.signer.cert, material.signer.key, material.roots) })
          .then((r) => log.warn({ source, recreated: r.created }, 'istio-ca-secret was deleted; wrote the loaded root back'))
          .catch((err: unknown) => log.error({ source, err: (err as Error).message }, 'cannot recreate istio-ca-secret'));
        return;
      }
      if (secret.resourceVersion && secret.resourceVersion === lastVersion) return;
      lastVersion = secret.resourceVersion;
      try {
        keyring.install(load(secret));
      } catch (err) {
        deps.metrics?.keyMaterialReloadErrors.inc();
        log.error({ source, reason: (err as Error).message }, 'istio-ca-secret changed to unusable material; still signing with the previous root');
      }
    },
    checkRotation,
    async stop() {
      stopped = true;
      timer?.cancel();
      await rotating;
    },
  };
}
