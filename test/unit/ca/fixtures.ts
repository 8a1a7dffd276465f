/** Small CA fixtures for the src/ca unit tests, made with src/pki. */
import type { KeyObject } from 'node:crypto';
import { generateKeyPair, issueCaCertificate, parseCertificate, privateKeyToPem, type ParsedCertificate } from '../../../src/pki/index.js';

export const TD = 'cluster.local';
export const DAY = 24 * 3600_000;

export interface TestCa {
  cert: ParsedCertificate;
  key: KeyObject;
  pem: string;
  keyPem: string;
}

export async function makeRoot(name: string, now: number, ttlMs = 365 * DAY): Promise<TestCa> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const issued = issueCaCertificate({ key: privateKey, organization: TD, commonName: name, ttlMs, now });
  return { cert: parseCertificate(issued.pem), key: privateKey, pem: issued.pem, keyPem: privateKeyToPem(privateKey) };
}

export async function makeIntermediate(root: TestCa, name: string, now: number, ttlMs = 180 * DAY): Promise<TestCa> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const issued = issueCaCertificate({ key: privateKey, signer: { cert: root.cert, key: root.key }, organization: TD, commonName: name, ttlMs, now });
  return { cert: parseCertificate(issued.pem), key: privateKey, pem: issued.pem, keyPem: privateKeyToPem(privateKey) };
}

export function istioFiles(inter: TestCa, root: TestCa): Record<string, string> {
  return { 'ca-cert.pem': inter.pem, 'ca-key.pem': inter.keyPem, 'cert-chain.pem': inter.pem + root.pem, 'root-cert.pem': root.pem };
}
