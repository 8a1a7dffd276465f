/**
 * The CPU-heavy part of answering a CSR, as one pure function: parse the CSR and check its signature, check that
 * it asks for nothing but the caller's identity, and sign the leaf. No clock, no I/O, no state beyond the signer
 * passed in, so the very same code runs on the main thread (`--signing-workers 0`) and in a signing worker
 * (src/ca/signing-worker.ts). Everything else (authentication, rate limits, TTL resolution, the keyring's
 * bookkeeping and chain, metrics, the audit line) stays on the main thread.
 */
import type { KeyObject } from 'node:crypto';
import { CitadelError, ERROR_TABLE, isCitadelError, type ErrorCode } from '../errors.js';
import { issueWorkloadCertificate, parseCertificate, parseCsr, type KeyType, type Signer } from '../pki/index.js';

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

/** A CitadelError as plain data, to cross a thread boundary. */
export interface ErrorData {
  readonly code: ErrorCode;
  readonly message: string;
  readonly detail?: string;
}

/** Anything thrown -> ErrorData; what is not a CitadelError is a bug and becomes CERT_GEN_ERROR (message kept in detail). */
export function errorToData(err: unknown): ErrorData {
  if (err instanceof CitadelError) return { code: err.code, message: err.message, ...(err.detail !== undefined ? { detail: err.detail } : {}) };
  return { code: 'CERT_GEN_ERROR', message: 'certificate generation failed', detail: err instanceof Error ? err.message : String(err) };
}

/** ErrorData -> the CitadelError it came from (same code, so the same gRPC status and metric label). */
export function errorFromData(data: ErrorData): CitadelError {
  if (!Object.hasOwn(ERROR_TABLE, data.code)) return new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', `unknown error code ${String(data.code)}: ${data.message}`);
  return new CitadelError(data.code, data.message, data.detail);
}

/** Pool -> worker: the signer for the jobs that follow (certificate DER + private key; KeyObject clones). */
export interface SignerMessage {
  readonly kind: 'signer';
  readonly signerId: number;
  readonly certDer: Uint8Array;
  readonly key: KeyObject;
}
/** Pool -> worker: one job, naming the signer it must be signed with. */
export interface JobMessage {
  readonly kind: 'job';
  readonly id: number;
  readonly signerId: number;
  readonly job: SignCsrJob;
}
export type PoolRequest = SignerMessage | JobMessage;
/** Worker -> pool. */
export type PoolReply = { readonly id: number; readonly result: SignCsrResult } | { readonly id: number; readonly error: ErrorData };

/**
 * The signing worker's message handler: remembers the last signer and answers each job with signCsr, or with
 * CERT_GEN_ERROR when the job names a signer it does not hold (the pool always sends the signer first). Returns
 * the reply to post, or undefined for a signer message.
 */
export function createSignJobHandler(): (msg: PoolRequest) => PoolReply | undefined {
  let current: { id: number; signer: Signer } | undefined;
  return (msg) => {
    if (msg.kind === 'signer') {
      current = { id: msg.signerId, signer: { cert: parseCertificate(Buffer.from(msg.certDer)), key: msg.key } };
      return undefined;
    }
    try {
      if (current?.id !== msg.signerId) throw new Error(`signer ${msg.signerId} is not loaded in this worker`);
      return { id: msg.id, result: signCsr(current.signer, msg.job) };
    } catch (err) {
      return { id: msg.id, error: errorToData(err) };
    }
  };
}
