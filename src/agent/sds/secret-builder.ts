/**
 * Builds the Envoy Secrets the agent serves, validating each one first so that Envoy is never handed something it
 * would NACK (a NACK during start-up ends warming without a certificate). Pure: `now` is passed in.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { CitadelError } from '../../errors.js';
import { parseCrls } from '../../pki/index.js';
import { SECRET_TYPE_URL, type SecretAny } from './xds-types.js';

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * `tls_certificate` Secret: chain leaf first (as the CA returned it), key inline. Checked with node:crypto (the same
 * OpenSSL-family view Envoy's BoringSSL takes), so file-mounted certificates from other CAs are judged as Envoy would.
 * @throws CitadelError PEM_INVALID (no certificate, or a key that cannot be read, e.g. encrypted), CERT_INVALID (a
 *   certificate that does not parse), KEY_MISMATCH (the key is not the leaf's), CERT_EXPIRED (leaf expired at `now`).
 *   Intermediates only need to parse.
 */
export function buildTlsCertificateSecret(name: string, chainPem: string, keyPem: string, now: number): SecretAny {
  const certs = parseBlocks(name, chainPem, 'certificate chain');
  const leaf = certs[0]!;
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new CitadelError('PEM_INVALID', `secret ${name}: the private key cannot be read`, (err as Error).message);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new CitadelError('KEY_MISMATCH', `secret ${name}: the private key does not match the certificate`);
  }
  const notAfter = Date.parse(leaf.validTo);
  if (!(notAfter > now)) {
    throw new CitadelError('CERT_EXPIRED', `secret ${name}: the certificate expired at ${new Date(notAfter).toISOString()}`);
  }
  return tlsCertificateSecret(name, chainPem, keyPem);
}

/** `tls_certificate` Secret from a chain and key that were checked already (the agent's own material). */
export function tlsCertificateSecret(name: string, chainPem: string, keyPem: string): SecretAny {
  return {
    '@type': SECRET_TYPE_URL,
    name,
    tls_certificate: {
      certificate_chain: { inline_bytes: Buffer.from(normalise(chainPem)) },
      private_key: { inline_bytes: Buffer.from(keyPem) },
    },
  };
}

function parseBlocks(name: string, pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw new CitadelError('PEM_INVALID', `secret ${name}: the ${what} holds no certificate`);
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new CitadelError('CERT_INVALID', `secret ${name}: a certificate in the ${what} does not parse`, (err as Error).message);
    }
  });
}

/**
 * `validation_context` Secret with `trusted_ca` = the bundle (Envoy rejects an empty one) and, when given, `crl`.
 * Each certificate is checked with node:crypto rather than src/pki: trust anchors are taken as they are (the OS
 * bundle holds SHA-1 self-signed roots that our strict issuer-side parser refuses, and BoringSSL accepts). CRLs must
 * parse (Envoy NACKs a CRL it cannot read, and a non-empty `crl` that holds none fails every handshake).
 * @throws CitadelError PEM_INVALID (no certificate, or a CRL block that is not one), CERT_INVALID (a block that does
 *   not parse), DER_INVALID (a CRL that does not parse), CERT_EXPIRED (every certificate expired: nothing could verify
 *   against it). Expired roots beside a valid one are kept (rotation).
 */
export function buildValidationContextSecret(name: string, bundlePem: string, now: number, crlPem?: string): SecretAny {
  const anyValid = parseBlocks(name, bundlePem, 'trust bundle').some((cert) => Date.parse(cert.validTo) > now);
  if (!anyValid) throw new CitadelError('CERT_EXPIRED', `secret ${name}: every certificate in the trust bundle has expired`);
  if (crlPem !== undefined && crlPem.trim() !== '' && parseCrls(crlPem).length === 0) throw new CitadelError('PEM_INVALID', `secret ${name}: the CRL text holds no CRL`);
  return validationContextSecret(name, bundlePem, crlPem);
}

/** `validation_context` Secret from a bundle (and CRLs) that were checked already (the agent's own ROOTCA). */
export function validationContextSecret(name: string, bundlePem: string, crlPem?: string): SecretAny {
  const trusted_ca = { inline_bytes: Buffer.from(normalise(bundlePem)) };
  const withCrl = crlPem !== undefined && crlPem.trim() !== '';
  return {
    '@type': SECRET_TYPE_URL,
    name,
    validation_context: withCrl ? { trusted_ca, crl: { inline_bytes: Buffer.from(normalise(crlPem)) } } : { trusted_ca },
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
