/**
 * What the agent serves: a workload certificate (chain + key) for `default` and a trust bundle for `ROOTCA`,
 * checked before anything is published so Envoy is never handed a secret it would NACK (a NACK during startup
 * ends Envoy's warming without a certificate).
 */
import type { KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { keyMatchesCertificate, parseCertificates, parseCrls, parsePrivateKeyPem, privateKeyToPem, type ParsedCertificate } from '../pki/index.js';

/** Resource names Envoy asks for (Istio's). */
export const WORKLOAD_CERT_RESOURCE = 'default';
export const ROOT_CA_RESOURCE = 'ROOTCA';

/**
 * How far ahead of our clock a certificate's notBefore may be (the CA's clock runs ahead): it is accepted and
 * served rather than refused for a minute. Applies to the whole chain the CA returns, not just the leaf.
 */
export const NOT_BEFORE_TOLERANCE_MS = 60_000;

export interface CertificateMaterial {
  /** PEM, leaf first, then intermediates (the root is not sent in the handshake; peers have it in ROOTCA). */
  readonly certificateChainPem: string;
  /** PKCS#8 PEM. Held in memory only. */
  readonly privateKeyPem: string;
  readonly serialHex: string;
  /** The leaf's URI SANs (the SPIFFE ID). */
  readonly uris: readonly string[];
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface TrustBundleMaterial {
  /** One or more CA certificates, PEM, deduplicated. */
  readonly trustedCaPem: string;
  readonly count: number;
  /** Earliest expiry in the bundle. */
  readonly notAfter: number;
  /** Latest expiry in the bundle: once past, nothing can verify against it. */
  readonly lastNotAfter: number;
}

export interface CrlMaterial {
  /** PEM CRLs, as the CA published them (istio-ca-crl). */
  readonly pem: string;
  readonly count: number;
  /** Revoked certificates listed, over all CRLs. */
  readonly entries: number;
}

/**
 * Reads the CRL file's text: undefined for an empty file (no CRL, so Envoy checks none).
 * @throws CitadelError PEM_INVALID / DER_INVALID / CERT_INVALID when it is not a set of CRLs.
 */
export function validateCrlMaterial(text: string): CrlMaterial | undefined {
  if (text.trim() === '') return undefined;
  const crls = parseCrls(text);
  if (crls.length === 0) throw new CitadelError('PEM_INVALID', 'the CRL file holds no "X509 CRL" block');
  return { pem: crls.map((c) => c.pem).join(''), count: crls.length, entries: crls.reduce((n, c) => n + c.entries.length, 0) };
}

/**
 * Checks a chain and its key and returns what to serve: the key must match the leaf, the leaf must be valid at
 * `now` (not expired, notBefore at most NOT_BEFORE_TOLERANCE_MS ahead) and must not be a CA.
 * @throws CitadelError PEM_INVALID / DER_INVALID (unparsable), CERT_INVALID (no certificate, leaf is a CA,
 *   not yet valid), KEY_MISMATCH, CERT_EXPIRED.
 */
export function validateCertificateMaterial(input: { chain: readonly ParsedCertificate[] | string; key: KeyObject | string; now: number }): CertificateMaterial {
  const chain = typeof input.chain === 'string' ? parseCertificates(input.chain) : input.chain;
  const leaf = chain[0];
  if (!leaf) throw new CitadelError('CERT_INVALID', 'the certificate chain holds no certificate');
  const key = typeof input.key === 'string' ? parsePrivateKeyPem(input.key) : input.key;
  if (leaf.isCa) throw new CitadelError('CERT_INVALID', 'the first certificate of the chain is a CA, not a workload certificate');
  if (!keyMatchesCertificate(key, leaf)) throw new CitadelError('KEY_MISMATCH', 'the private key does not match the certificate');
  if (input.now >= leaf.notAfter) {
    throw new CitadelError('CERT_EXPIRED', 'the workload certificate has expired', `serial ${leaf.serialHex} notAfter ${new Date(leaf.notAfter).toISOString()}`);
  }
  if (input.now + NOT_BEFORE_TOLERANCE_MS < leaf.notBefore) throw new CitadelError('CERT_INVALID', 'the workload certificate is not valid yet', `notBefore ${new Date(leaf.notBefore).toISOString()}`);
  return {
    certificateChainPem: chain.map((c) => c.pem).join(''),
    privateKeyPem: privateKeyToPem(key),
    serialHex: leaf.serialHex,
    uris: [...leaf.uris],
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
  };
}

/**
 * Merges PEM bundles into one trust bundle: every certificate once (by DER), in first-seen order. Expired
 * certificates are kept out when `now` is given and at least one unexpired one remains.
 * @throws CitadelError CERT_INVALID when the bundles hold no certificate; PEM_INVALID/DER_INVALID when unparsable.
 */
export function mergeTrustBundles(bundles: readonly (string | undefined)[], now?: number): TrustBundleMaterial {
  const seen = new Set<string>();
  let certs: ParsedCertificate[] = [];
  for (const bundle of bundles) {
    if (!bundle || bundle.trim() === '') continue;
    for (const cert of parseCertificates(bundle)) {
      const id = cert.der.toString('base64');
      if (seen.has(id)) continue;
      seen.add(id);
      certs.push(cert);
    }
  }
  if (now !== undefined) {
    const live = certs.filter((c) => c.notAfter > now);
    if (live.length > 0) certs = live;
  }
  if (certs.length === 0) throw new CitadelError('CERT_INVALID', 'the trust bundle holds no certificate');
  return {
    trustedCaPem: certs.map((c) => c.pem).join(''),
    count: certs.length,
    notAfter: Math.min(...certs.map((c) => c.notAfter)),
    lastNotAfter: Math.max(...certs.map((c) => c.notAfter)),
  };
}
