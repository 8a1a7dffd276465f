/**
 * Certificate parsing with our own DER reader: the fields the CA, agent and chain checks need, plus the raw
 * pieces (TBS, subject/issuer DER, SPKI) that signing and path building compare byte for byte.
 */
import type { KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { contextTag, DER_LIMITS, DerCursor, parseDer, rawOf, readBitString, readSmallInteger, readTime, readUnsignedInteger, Tag } from './der.js';
import { publicKeyFromSpki, readSignatureAlgorithm, spkiOf, verifyWith, type KeyInfo, type SignatureAlgorithm } from './keys.js';
import type { KeyUsageName } from './oids.js';
import { checkInputSize, decodePemBlocks, decodeSinglePem, encodePem } from './pem.js';
import { decodeExtensions, decodeName, type DecodedExtensions } from './x509.js';

export interface ParsedCertificate {
  /** Normalised PEM of this one certificate. */
  pem: string;
  der: Buffer;
  /** Serial number, lowercase hex without a sign byte. */
  serialHex: string;
  /** One-line subject, e.g. "O=cluster.local, CN=Root CA"; "" when empty. */
  subject: string;
  issuer: string;
  /** Milliseconds since the epoch. */
  notBefore: number;
  notAfter: number;
  /** basicConstraints cA (false when the extension is absent). */
  isCa: boolean;
  uris: string[];
  dnsNames: string[];
  publicKey: KeyObject;
  key: KeyInfo;
  /** Issuer equals subject and the certificate's own key verifies its signature. */
  selfSigned: boolean;

  // ---- Extras for signing, path building and inspection ----
  /** X.509 version (1 or 3; 2 is read but unusual). */
  version: number;
  subjectCommonName?: string;
  ipAddresses: string[];
  emails: string[];
  /** pathLenConstraint, when set. */
  pathLen?: number;
  /** KeyUsage bits, or undefined when the extension is absent. */
  keyUsage?: ReadonlySet<KeyUsageName>;
  /** ExtendedKeyUsage OIDs, or undefined when absent. */
  extKeyUsage?: readonly string[];
  subjectKeyId?: Buffer;
  authorityKeyId?: Buffer;
  extensions: DecodedExtensions;
  tbs: Buffer;
  signatureAlgorithm: Omit<SignatureAlgorithm, 'identifier'>;
  signature: Buffer;
  subjectDer: Buffer;
  issuerDer: Buffer;
  /** SubjectPublicKeyInfo DER. */
  spki: Buffer;
}

function certError(message: string): CitadelError {
  return new CitadelError('CERT_INVALID', `invalid certificate: ${message}`);
}

/**
 * Parses one certificate from PEM (exactly one CERTIFICATE block) or DER. Throws INPUT_TOO_LARGE,
 * PEM_INVALID, PEM_MULTIPLE, DER_INVALID, CERT_INVALID, SIGNATURE_INVALID (unsupported signature algorithm),
 * KEY_UNSUPPORTED, KEY_TOO_WEAK.
 */
export function parseCertificate(pemOrDer: string | Buffer): ParsedCertificate {
  if (typeof pemOrDer === 'string') {
    checkInputSize(pemOrDer, 'certificate');
    return parseCertificateDer(decodeSinglePem(pemOrDer, ['CERTIFICATE'], 'certificate').der);
  }
  checkInputSize(pemOrDer, 'certificate');
  return parseCertificateDer(Buffer.from(pemOrDer));
}

/**
 * Parses every CERTIFICATE block of a bundle (at least one; other block types are an error).
 * Throws as parseCertificate, and PEM_INVALID when there is no certificate.
 */
export function parseCertificates(pemBundle: string): ParsedCertificate[] {
  const blocks = decodePemBlocks(pemBundle);
  if (blocks.length === 0) throw new CitadelError('PEM_INVALID', 'no PEM certificate found');
  return blocks.map((b) => {
    if (b.label !== 'CERTIFICATE') throw new CitadelError('PEM_INVALID', `expected PEM certificates, found "${b.label}"`);
    return parseCertificateDer(b.der);
  });
}

function parseCertificateDer(der: Buffer): ParsedCertificate {
  const root = parseDer(der);
  if (root.tag !== Tag.SEQUENCE) throw new CitadelError('DER_INVALID', 'malformed DER: certificate is not a SEQUENCE');
  const outer = new DerCursor(root, 'certificate');
  const tbsTlv = outer.next(Tag.SEQUENCE, 'tbsCertificate');
  const outerAlgTlv = outer.next(Tag.SEQUENCE, 'signatureAlgorithm');
  const sig = readBitString(outer.next(Tag.BIT_STRING, 'signature'), 'signature', DER_LIMITS.signatureBytes);
  outer.end('certificate');
  if (sig.unusedBits !== 0) throw certError('signature has unused bits');

  const tbs = new DerCursor(tbsTlv, 'tbsCertificate');
  const versionTlv = tbs.optional(contextTag(0, true));
  let version = 1;
  if (versionTlv) {
    const vc = new DerCursor(versionTlv, 'version');
    version = readSmallInteger(vc.next(Tag.INTEGER, 'version'), 'version') + 1;
    vc.end('version');
    if (version < 2 || version > 3) throw certError(`unsupported version ${version}`);
  }
  const serial = readUnsignedInteger(tbs.next(Tag.INTEGER, 'serialNumber'), 'serialNumber', DER_LIMITS.serialBytes);
  const innerAlgTlv = tbs.next(Tag.SEQUENCE, 'signature');
  const issuerTlv = tbs.next(Tag.SEQUENCE, 'issuer');
  const validity = new DerCursor(tbs.next(Tag.SEQUENCE, 'validity'), 'validity');
  const notBefore = readTime(validity.next(undefined, 'notBefore'), 'notBefore');
  const notAfter = readTime(validity.next(undefined, 'notAfter'), 'notAfter');
  validity.end('validity');
  const subjectTlv = tbs.next(Tag.SEQUENCE, 'subject');
  const spkiTlv = tbs.next(Tag.SEQUENCE, 'subjectPublicKeyInfo');
  tbs.optional(contextTag(1, false)); // issuerUniqueID
  tbs.optional(contextTag(2, false)); // subjectUniqueID
  const extsTlv = tbs.optional(contextTag(3, true));
  tbs.end('tbsCertificate');
  if (extsTlv && version !== 3) throw certError('extensions in a certificate older than v3');

  let extensions: DecodedExtensions = { unhandledCritical: [], all: [] };
  if (extsTlv) {
    const ec = new DerCursor(extsTlv, 'extensions');
    extensions = decodeExtensions(ec.next(Tag.SEQUENCE, 'extensions'));
    ec.end('extensions');
  }

  const subject = decodeName(subjectTlv, 'subject');
  const issuer = decodeName(issuerTlv, 'issuer');
  const spki = Buffer.from(rawOf(spkiTlv));
  // The key first: an unsupported key (Ed25519, P-521...) is reported as such, not as its signature algorithm.
  const { publicKey, key } = publicKeyFromSpki(spki);
  const outerAlg = readSignatureAlgorithm(outerAlgTlv);
  if (!rawOf(innerAlgTlv).equals(rawOf(outerAlgTlv))) throw certError('the two signature algorithm fields differ');
  const subjectDer = rawOf(subjectTlv);
  const issuerDer = rawOf(issuerTlv);
  const tbsBytes = rawOf(tbsTlv);
  const signature = sig.bytes;
  const selfSigned = subjectDer.equals(issuerDer) && verifyWith(publicKey, key, outerAlg, tbsBytes, signature);
  const san = extensions.subjectAltName;

  const cert: ParsedCertificate = {
    pem: encodePem('CERTIFICATE', der),
    der,
    serialHex: serial.toString('hex'),
    subject: subject.text,
    issuer: issuer.text,
    notBefore,
    notAfter,
    isCa: extensions.basicConstraints?.ca ?? false,
    uris: san?.uris ?? [],
    dnsNames: san?.dnsNames ?? [],
    publicKey,
    key,
    selfSigned,
    version,
    ipAddresses: san?.ipAddresses ?? [],
    emails: san?.emails ?? [],
    extensions,
    tbs: tbsBytes,
    signatureAlgorithm: outerAlg,
    signature,
    subjectDer,
    issuerDer,
    spki,
  };
  if (subject.commonName !== undefined) cert.subjectCommonName = subject.commonName;
  if (extensions.basicConstraints?.pathLen !== undefined) cert.pathLen = extensions.basicConstraints.pathLen;
  if (extensions.keyUsage) cert.keyUsage = extensions.keyUsage.usages;
  if (extensions.extKeyUsage) cert.extKeyUsage = extensions.extKeyUsage.oids;
  if (extensions.subjectKeyId) cert.subjectKeyId = extensions.subjectKeyId;
  if (extensions.authorityKeyId) cert.authorityKeyId = extensions.authorityKeyId;
  return cert;
}

/** True when `key` (private or public) is the key pair of `cert`'s public key. */
export function keyMatchesCertificate(key: KeyObject, cert: ParsedCertificate): boolean {
  return spkiOf(key).equals(spkiOf(cert.publicKey));
}

/** True when `issuer`'s key made `cert`'s signature (names are not compared). */
export function isSignedBy(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  return verifyWith(issuer.publicKey, issuer.key, cert.signatureAlgorithm, cert.tbs, cert.signature);
}
