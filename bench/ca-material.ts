/**
 * The signing material both CAs under test get, written once per key type in Istio's "plug in CA
 * certificates" layout: a self-signed root and an intermediate of the same key type, the intermediate
 * signing the workload certificates (ca-cert.pem, ca-key.pem, cert-chain.pem = intermediate + root,
 * root-cert.pem). Handing the very same files to `citadel ca` and to the Istio anchor keeps their work per
 * certificate identical (same signature algorithm, same chain in every response).
 */
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPair, issueCaCertificate, parseCertificate, privateKeyToPem } from '../src/pki/index.js';
import type { BenchKeyType } from './crypto-bound.js';

export interface CaMaterial {
  readonly dir: string;
  readonly keyType: BenchKeyType;
  readonly caCert: string;
  readonly caKey: string;
  readonly certChain: string;
  readonly rootCert: string;
}

const DAY_MS = 24 * 3600 * 1000;

/** Creates `<parent>/<keyType>/` with the four cacerts files. Throws on any PKI or file error. */
export async function writeCaMaterial(parent: string, keyType: BenchKeyType, trustDomain: string): Promise<CaMaterial> {
  const dir = path.join(parent, keyType);
  fs.mkdirSync(dir, { recursive: true });
  const now = Date.now();
  const rootKey = await generateKeyPair(keyType);
  const rootPem = issueCaCertificate({ key: rootKey.privateKey, organization: trustDomain, commonName: `bench root ${keyType}`, ttlMs: 3650 * DAY_MS, now }).pem;
  const intKey = await generateKeyPair(keyType);
  const intPem = issueCaCertificate({
    key: intKey.privateKey,
    signer: { cert: parseCertificate(rootPem), key: rootKey.privateKey },
    organization: trustDomain,
    commonName: `bench intermediate ${keyType}`,
    trustDomain,
    ttlMs: 365 * DAY_MS,
    now,
    pathLen: 0,
  }).pem;
  const files = {
    caCert: path.join(dir, 'ca-cert.pem'),
    caKey: path.join(dir, 'ca-key.pem'),
    certChain: path.join(dir, 'cert-chain.pem'),
    rootCert: path.join(dir, 'root-cert.pem'),
  };
  fs.writeFileSync(files.caCert, intPem);
  fs.writeFileSync(files.caKey, privateKeyToPem(intKey.privateKey), { mode: 0o600 });
  fs.writeFileSync(files.certChain, intPem + rootPem);
  fs.writeFileSync(files.rootCert, rootPem);
  return { dir, keyType, ...files };
}
