/**
 * Self-signed key material in the `istio-ca-secret` Secret (type istio.io/ca-root; Istio's keys ca-cert.pem,
 * ca-key.pem, cert-chain.pem, key.pem, root-cert.pem), so istiod and citadel can take over each other's root.
 *
 * - Load or create: read the Secret; if absent, generate a root and create it; on a create conflict (another
 *   replica won the race) re-read and use theirs. Every replica therefore ends with the same single root.
 * - Follow: every replica watches the Secret and installs what it holds (invalid content is refused and counted).
 * - Rotate (only where `canWrite()` says so, i.e. on the leader), in two writes with current/next slots: in the
 *   last `gracePercent` of the root's life, issue a new root with the SAME key and organisation and add it to
 *   root-cert.pem (published: every replica's bundle and the root ConfigMaps get it) while ca-cert.pem still
 *   signs; once it has been published for `publishDelayMs`, make it ca-cert.pem. The old root stays in
 *   root-cert.pem until it expires. Both roots share subject and key, so a leaf signed by either verifies under
 *   either.
 */
import type { KeyObject } from 'node:crypto';
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SecretData, NamespaceSecrets } from '../kube/secrets.js';
import { BACKDATE_MS, describeKey, generateKeyPair, issueCaCertificate, keyMatchesCertificate, type KeyType, type ParsedCertificate, type Signer } from '../pki/index.js';
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
  /**
   * How long a new root sits in the published bundle (the "next" slot) before it signs, so every namespace's
   * ConfigMap and every mounted copy has it first; 0 switches in the same write.
   */
  readonly publishDelayMs: number;
}

export interface SelfSignedDeps {
  readonly keyring: Keyring;
  readonly secrets: NamespaceSecrets;
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

  const due = (root: ParsedCertificate, now: number) => root.notAfter - now <= ((root.notAfter - root.notBefore) * options.gracePercent) / 100;
  /** A root in the bundle with the signer's key that outlives the signer: the published "next" root. */
  const nextSlot = (m: CaMaterial) =>
    m.roots.find((r) => !r.der.equals(m.signer.cert.der) && r.notAfter > m.signer.cert.notAfter && keyMatchesCertificate(m.signer.key, r));

  const write = async (current: SecretData, signing: { pem: string }, key: KeyObject, roots: readonly { pem: string }[]) => {
    const res = await secrets.update(CA_SECRET_NAME, current.resourceVersion!, secretData(signing, key, roots));
    if (!res.updated) {
      log.info({ source, reason: res.reason }, 'self-signed root rotation lost a race; will re-read');
      return false;
    }
    keyring.install(load(res.secret));
    lastVersion = res.secret.resourceVersion;
    return true;
  };

  /** The write that makes `root` (same key as `signer`) the signing certificate, publishing `roots`. */
  const switchTo = async (current: SecretData, signer: Signer, root: { pem: string; serialHex: string; notAfter: number }, roots: readonly { pem: string }[]) => {
    const ok = await write(current, root, signer.key, roots);
    if (ok) log.info({ source, oldSerial: signer.cert.serialHex, newSerial: root.serialHex, notAfter: new Date(root.notAfter).toISOString() }, 'rotated the self-signed root (same key)');
    return ok;
  };

  const rotate = async (): Promise<boolean> => {
    const material = keyring.current();
    if (!material || material.mode !== 'self-signed' || !canWrite()) return false;
    const now = clock.now();
    if (!due(material.signer.cert, now) && !nextSlot(material)) return false;
    const current = await secrets.read(CA_SECRET_NAME);
    if (!current || !current.resourceVersion) return false;
    // Work from what the Secret holds now (another replica may already have moved it on).
    const fresh = load(current);
    if (fresh.fingerprint !== material.fingerprint) {
      keyring.install(fresh);
      lastVersion = current.resourceVersion;
    }
    const signer = fresh.signer;
    const valid = fresh.roots.filter((r) => r.notAfter > now);
    const next = nextSlot(fresh);
    if (next) {
      // Phase 2: the next root has been in the published bundle long enough; sign with it.
      const publishedAt = next.notBefore + BACKDATE_MS;
      if (now - publishedAt < options.publishDelayMs) return false;
      return switchTo(current, signer, next, [next, ...valid.filter((r) => !r.der.equals(next.der))]);
    }
    if (!due(signer.cert, now)) return false;
    // Phase 1: a new root with the same key and organisation goes into the bundle (the "next" slot) while the
    // current one keeps signing. With no publish delay both phases happen in this one write.
    const issued = issueCaCertificate({ key: signer.key, organization: options.trustDomain, ttlMs: options.rootTtlMs, now });
    if (options.publishDelayMs <= 0) return switchTo(current, signer, issued, [issued, ...valid]);
    const ok = await write(current, signer.cert, signer.key, [signer.cert, issued, ...valid.filter((r) => !r.der.equals(signer.cert.der))]);
    if (ok) log.info({ source, serial: issued.serialHex, signsAfterMs: options.publishDelayMs }, 'published the next self-signed root; it signs once the publish delay has passed');
    return ok;
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
