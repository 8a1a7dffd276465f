/**
 * What the rest of citadel needs from the CA: the trust bundle, change events, and workload signing.
 * Implemented by the CA's keyring + issuer (src/ca); consumed by the CSR service, the controllers
 * (root ConfigMaps, ServiceAccount secrets) and the serving-certificate manager.
 */
import type { KeyObject } from 'node:crypto';
import type { KeyType } from '../pki/index.js';

export interface IssuedWorkloadCert {
  /** Istio's response layout: [leaf, each intermediate, the whole root bundle as the last element]. */
  readonly chain: readonly string[];
  readonly serialHex: string;
  /** Milliseconds since the epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface WorkloadCertRequest {
  readonly publicKey: KeyObject;
  /** Exactly one URI SAN: the caller's SPIFFE ID (already authorised by the caller of issueWorkload). */
  readonly spiffeId: string;
  /** Extra DNS SANs (the CA's own serving certificate); workloads get none. */
  readonly dnsNames?: readonly string[];
  /** Requested lifetime; clamped to the signing certificate's own expiry. */
  readonly ttlMs: number;
}

/** A workload's CSR, already authenticated and rate-limited; the TTL already resolved against the policy. */
export interface CsrCertRequest {
  readonly csrPem: string;
  /** The caller's SPIFFE ID: the only identity the CSR may ask for. */
  readonly identity: string;
  readonly ttlMs: number;
  /** When the caller needs its answer (ms since the epoch; the gRPC deadline), so a busy CA can refuse in time. */
  readonly deadline?: number;
}

export interface IssuedFromCsr extends IssuedWorkloadCert {
  /** The workload key's type (for the audit line). */
  readonly keyType: KeyType;
}

/** The CA as its consumers see it; the Keyring (src/ca/keyring.ts) implements it. */
export interface CertificateAuthority {
  /** Every trusted root (old and new during a rotation), PEM, concatenated. */
  trustBundlePem(): string;
  /** Called after key material changes (new roots, new signing certificate). Returns an unsubscribe function. */
  onChange(listener: () => void): () => void;
  /**
   * Signs a leaf for the request with the current signing key.
   * @throws CitadelError CA_NOT_READY when no key material is loaded, TTL_INVALID, CERT_GEN_ERROR.
   */
  issueWorkload(req: WorkloadCertRequest): IssuedWorkloadCert;
}

/** What the CSR service needs: signing straight from a workload's CSR. The Keyring implements it. */
export interface CsrAuthority {
  /**
   * Parses and verifies a CSR, checks it asks for `identity` only, and signs a leaf for it with the current signing
   * key (on a signing worker when the CA has them).
   * @throws CitadelError CA_NOT_READY; PEM_*, DER_INVALID, CSR_INVALID, SIGNATURE_INVALID, KEY_UNSUPPORTED,
   *   KEY_TOO_WEAK, INPUT_TOO_LARGE; PERMISSION_DENIED; TTL_INVALID; RATE_LIMITED (signing queue full); CERT_GEN_ERROR.
   */
  issueFromCsr(req: CsrCertRequest): Promise<IssuedFromCsr>;
}
