/**
 * Builds the Envoy Secrets the agent serves, validating each one first so that Envoy is never handed something it
 * would NACK (a NACK during start-up ends warming without a certificate). Pure: `now` is passed in.
 */
import { parseCertificates, parsePrivateKeyPem, keyMatchesCertificate, type ParsedCertificate } from '../../pki/index.js';
import { CitadelError } from '../../errors.js';
import { SECRET_TYPE_URL, type SecretAny } from './xds-types.js';

/** Resource names Envoy asks for (Istio's). */
export const WORKLOAD_SECRET_NAME = 'default';
export const ROOT_SECRET_NAME = 'ROOTCA';

/**
 * `tls_certificate` Secret: chain leaf first (as the CA returned it), key inline.
 * @throws CitadelError PEM_INVALID / CERT_INVALID / DER_INVALID (unparsable chain or key), KEY_MISMATCH (the key is
 *   not the leaf's), CERT_EXPIRED (leaf expired at `now`). Intermediates are passed through unchecked.
 */
export function buildTlsCertificateSecret(name: string, chainPem: string, keyPem: string, now: number): SecretAny {
  const chain = parseCertificates(chainPem);
  const leaf = chain[0]!;
  const key = parsePrivateKeyPem(keyPem);
  if (!keyMatchesCertificate(key, leaf)) {
    throw new CitadelError('KEY_MISMATCH', `secret ${name}: the private key does not match the certificate`);
  }
  if (leaf.notAfter <= now) {
    throw new CitadelError('CERT_EXPIRED', `secret ${name}: the certificate expired at ${new Date(leaf.notAfter).toISOString()}`);
  }
  return {
    '@type': SECRET_TYPE_URL,
    name,
    tls_certificate: {
      certificate_chain: { inline_bytes: Buffer.from(normalise(chainPem)) },
      private_key: { inline_bytes: Buffer.from(keyPem) },
    },
  };
}

/**
 * `validation_context` Secret with `trusted_ca` = the bundle (Envoy rejects an empty one).
 * @throws CitadelError PEM_INVALID (no certificate), CERT_INVALID / DER_INVALID, CERT_EXPIRED (every certificate in
 *   the bundle expired: nothing could verify against it). Expired roots beside a valid one are kept (rotation).
 */
export function buildValidationContextSecret(name: string, bundlePem: string, now: number): SecretAny {
  const certs: ParsedCertificate[] = parseCertificates(bundlePem);
  if (!certs.some((c) => c.notAfter > now)) {
    throw new CitadelError('CERT_EXPIRED', `secret ${name}: every certificate in the trust bundle has expired`);
  }
  return {
    '@type': SECRET_TYPE_URL,
    name,
    validation_context: { trusted_ca: { inline_bytes: Buffer.from(normalise(bundlePem)) } },
  };
}

/** Ends the PEM text with exactly one newline (Envoy does not care, humans diffing config dumps do). */
function normalise(pem: string): string {
  return pem.trim() + '\n';
}

/** The PEM a built secret carries, for tests and debug endpoints (never includes the key). */
export function describeSecret(secret: SecretAny): { name: string; kind: 'tls_certificate' | 'validation_context'; pem: string } {
  if (secret.tls_certificate) {
    return { name: secret.name, kind: 'tls_certificate', pem: secret.tls_certificate.certificate_chain.inline_bytes.toString('utf8') };
  }
  return { name: secret.name, kind: 'validation_context', pem: secret.validation_context?.trusted_ca.inline_bytes.toString('utf8') ?? '' };
}
