/**
 * What the rest of citadel needs from the CA: the trust bundle, change events, and workload signing.
 * Implemented by the CA's keyring + issuer (src/ca); consumed by the CSR service, the controllers
 * (root ConfigMaps, ServiceAccount secrets) and the serving-certificate manager.
 */
import type { KeyObject } from 'node:crypto';

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
