/** Certificates for gRPC TLS tests, made in memory with src/pki (openssl cross-checks live in the pki tests). */
import { generateKeyPair, issueCaCertificate, issueWorkloadCertificate, privateKeyToPem, parseCertificate } from '../../../src/pki/index.js';

export interface TestCa {
  pem: string;
  issue(opts: { spiffeId: string; dnsNames?: string[]; ttlMs?: number; now?: number }): Promise<{ certPem: string; keyPem: string; serialHex: string }>;
}

export async function makeCa(organization = 'citadel-test'): Promise<TestCa> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const now = Date.now();
  const root = issueCaCertificate({ key: privateKey, organization, ttlMs: 24 * 3600_000, now: now - 6 * 3600_000 });
  const signer = { cert: parseCertificate(root.pem), key: privateKey };
  return {
    pem: root.pem,
    async issue({ spiffeId, dnsNames, ttlMs, now: at }) {
      const pair = await generateKeyPair('ecdsa-p256');
      const leaf = issueWorkloadCertificate({ signer, publicKey: pair.publicKey, spiffeId, dnsNames, ttlMs: ttlMs ?? 3600_000, now: at ?? Date.now() });
      return { certPem: leaf.pem, keyPem: privateKeyToPem(pair.privateKey), serialHex: leaf.serialHex };
    },
  };
}
