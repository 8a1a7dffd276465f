/**
 * The CPU-heavy part of answering a CSR, as one pure function: parse the CSR and check its signature, check that
 * it asks for nothing but the caller's identity, and sign the leaf. No clock, no I/O, no state beyond the signer
 * passed in, so the very same code runs on the main thread (`--signing-workers 0`) and in a signing worker
 * (src/ca/signing-worker.ts, speaking src/ca/signing-messages.ts). Everything else (authentication, rate limits, TTL resolution, the keyring's
 * bookkeeping and chain, metrics, the audit line) stays on the main thread.
 */
import type { KeyObject } from 'node:crypto';
import { CitadelError, isCitadelError } from '../errors.js';
import { issueWorkloadCertificate, parseCsr, type KeyType, type Signer } from '../pki/index.js';

/** The SANs a CSR asks for (a ParsedCsr has them). */
export interface RequestedNames {
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly emails: readonly string[];
  /** Kinds of the SANs of other types (otherName, directoryName, registeredID...). */
  readonly otherNames?: readonly string[];
}

/**
 * The identity and SANs a CSR asks for must be exactly the caller's identity (or nothing: then the leaf gets the
 * caller's identity, as in Istio). SANs of any other kind are refused like extra SANs: we never issue them.
 * @throws CitadelError PERMISSION_DENIED naming (up to three of) the names asked for.
 */
export function checkRequestedIdentity(caller: { readonly identity: string }, requested: RequestedNames): void {
  const others = [
    ...requested.uris.filter((u) => u !== caller.identity),
    ...requested.dnsNames.map((d) => `DNS:${d}`),
    ...requested.ipAddresses.map((ip) => `IP:${ip}`),
    ...requested.emails.map((e) => `email:${e}`),
    ...(requested.otherNames ?? []).map((kind) => `a SAN of type ${kind}`),
  ];
  if (others.length === 0) return;
  const shown = others.slice(0, 3).map((s) => (s.length > 120 ? `${s.slice(0, 120)}...` : s)).join(', ');
  throw new CitadelError('PERMISSION_DENIED', `the CSR asks for ${shown}${others.length > 3 ? ` and ${others.length - 3} more` : ''}, but the caller is ${caller.identity}`);
}

export interface LeafRequest {
  readonly publicKey: KeyObject;
  readonly spiffeId: string;
  readonly dnsNames?: readonly string[];
  readonly ttlMs: number;
}

/** A signed leaf as plain data (it crosses the worker boundary as is). */
export interface SignedLeaf {
  readonly pem: string;
  readonly serialHex: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * Signs a leaf with `signer`, translating signer-side failures into what a CSR caller may see.
 * @throws CitadelError CA_NOT_READY (signer expired), TTL_INVALID, SPIFFE_ID_INVALID, CSR_INVALID, KEY_UNSUPPORTED,
 *   KEY_TOO_WEAK; CERT_GEN_ERROR for anything else (a signer that is not a CA or does not fit its key, a bug).
 */
export function issueLeaf(signer: Signer, req: LeafRequest, now: number): SignedLeaf {
  try {
    const leaf = issueWorkloadCertificate({ signer, publicKey: req.publicKey, spiffeId: req.spiffeId, dnsNames: req.dnsNames, ttlMs: req.ttlMs, now });
    return { pem: leaf.pem, serialHex: leaf.serialHex, notBefore: leaf.notBefore, notAfter: leaf.notAfter };
  } catch (err) {
    if (isCitadelError(err, 'CERT_EXPIRED')) throw new CitadelError('CA_NOT_READY', 'the CA signing certificate has expired', err.detail);
    if (isCitadelError(err) && err.code !== 'NOT_A_CA' && err.code !== 'KEY_MISMATCH' && err.code !== 'INTERNAL') throw err;
    throw new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', err instanceof Error ? err.message : String(err), { cause: err });
  }
}

/** One CSR to check and sign; plain data. */
export interface SignCsrJob {
  readonly csrPem: string;
  /** The authenticated caller's SPIFFE ID: the only identity the CSR may ask for, and the leaf's URI SAN. */
  readonly identity: string;
  readonly dnsNames?: readonly string[];
  /** Already resolved against the policy (default, maximum). */
  readonly ttlMs: number;
  /** Issuance time, ms since the epoch (read by the main thread's clock). */
  readonly now: number;
}

export interface SignCsrResult extends SignedLeaf {
  /** The workload key's type, for the audit line. */
  readonly keyType: KeyType;
}

/**
 * parseCsr (signature included) -> checkRequestedIdentity -> issueLeaf.
 * @throws CitadelError PEM_*, DER_INVALID, CSR_INVALID, SIGNATURE_INVALID, KEY_UNSUPPORTED, KEY_TOO_WEAK,
 *   INPUT_TOO_LARGE, PERMISSION_DENIED, and what issueLeaf throws.
 */
export function signCsr(signer: Signer, job: SignCsrJob): SignCsrResult {
  const csr = parseCsr(job.csrPem);
  checkRequestedIdentity({ identity: job.identity }, csr);
  const leaf = issueLeaf(signer, { publicKey: csr.publicKey, spiffeId: job.identity, dnsNames: job.dnsNames, ttlMs: job.ttlMs }, job.now);
  return { ...leaf, keyType: csr.key.type };
}
