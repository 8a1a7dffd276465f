/**
 * A small CertificateAuthority for tests of the CA's consumers (controllers, serving certificate): an in-memory
 * self-signed root made with the real src/pki functions, signing with it directly (no intermediate), plus
 * `rotateRoot()` to simulate a root change. Not the CA's keyring: no Kubernetes, no files.
 */
import type { KeyObject } from 'node:crypto';
import type { CertificateAuthority, IssuedWorkloadCert, WorkloadCertRequest } from '../../src/ca/authority.js';
import { systemClock, type Clock } from '../../src/clock.js';
import { CitadelError } from '../../src/errors.js';
import { buildResponseChain, generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, type Signer } from '../../src/pki/index.js';

export interface TestAuthority extends CertificateAuthority {
  /** The current signing root (PEM). */
  readonly rootPem: string;
  /**
   * Makes a new root and signs with it from now on. `keepOld` keeps the previous roots in the bundle (a safe
   * rotation); otherwise the bundle holds only the new root. Fires onChange.
   */
  rotateRoot(opts?: { keepOld?: boolean }): Promise<void>;
  /** Number of certificates issued so far. */
  readonly issued: number;
}

async function makeRoot(clock: Clock, trustDomain: string): Promise<{ signer: Signer; pem: string }> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const root = issueCaCertificate({ key: privateKey as KeyObject, organization: trustDomain, trustDomain, ttlMs: 365 * 24 * 3600_000, now: clock.now() });
  return { signer: { cert: parseCertificate(root.pem), key: privateKey }, pem: root.pem };
}

/** Creates a test CA with a fresh root. */
export async function createTestAuthority(opts: { clock?: Clock; trustDomain?: string } = {}): Promise<TestAuthority> {
  const clock = opts.clock ?? systemClock;
  const trustDomain = opts.trustDomain ?? 'cluster.local';
  let current = await makeRoot(clock, trustDomain);
  let bundle = [current.pem];
  let issued = 0;
  const listeners = new Set<() => void>();
  return {
    get rootPem() {
      return current.pem;
    },
    get issued() {
      return issued;
    },
    trustBundlePem: () => bundle.join(''),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    issueWorkload(req: WorkloadCertRequest): IssuedWorkloadCert {
      if (!(req.ttlMs > 0)) throw new CitadelError('TTL_INVALID', 'ttl must be positive');
      const leaf = issueWorkloadCertificate({
        signer: current.signer,
        publicKey: req.publicKey,
        spiffeId: req.spiffeId,
        dnsNames: req.dnsNames,
        ttlMs: req.ttlMs,
        now: clock.now(),
      });
      issued++;
      return { chain: buildResponseChain(leaf.pem, [], bundle.join('')), serialHex: leaf.serialHex, notBefore: leaf.notBefore, notAfter: leaf.notAfter };
    },
    async rotateRoot(rotateOpts = {}) {
      current = await makeRoot(clock, trustDomain);
      bundle = rotateOpts.keepOld ? [...bundle, current.pem] : [current.pem];
      for (const l of [...listeners]) l();
    },
  };
}
