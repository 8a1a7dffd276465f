/**
 * Certificate revocation lists (RFC 5280 section 5): issue and parse, with our DER writer and reader. What we
 * write is the profile Envoy (BoringSSL), OpenSSL and Go accept: v2, issuer = the CA's subject byte for byte,
 * nextUpdate always present, Authority Key Identifier and a non-critical CRL Number, revokedCertificates absent
 * (not empty) when nothing is revoked, no Issuing Distribution Point or delta indicator (they trigger BoringSSL's
 * "different CRL scope"). Pure: the caller passes every time.
 */
import { CitadelError } from '../errors.js';
import type { ParsedCertificate } from './certificate.js';
import { keyMatchesCertificate } from './certificate.js';
import {
  bitString,
  contentOf,
  contextTag,
  DerCursor,
  explicit,
  integer,
  parseDer,
  rawOf,
  readBitString,
  readOctetString,
  readOid,
  readBoolean,
  readSmallInteger,
  readTime,
  readUnsignedInteger,
  sequence,
  Tag,
  time,
  tlv,
  type Tlv,
} from './der.js';
import { keyIdentifier, type Signer } from './issue.js';
import { readSignatureAlgorithm, signatureAlgorithmFor, signWith, verifyWith, type SignatureAlgorithm } from './keys.js';
import { OID } from './oids.js';
import { checkInputSize, decodePemBlocks, encodePem } from './pem.js';
import { authorityKeyIdValue, decodeName, extension } from './x509.js';

const ENUMERATED = 0x0a;

/** CRLReason values (RFC 5280 5.3.1); 7 is unused. */
export const CRL_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;
export type CrlReason = keyof typeof CRL_REASONS;
const REASON_NAMES = new Map<number, CrlReason>(Object.entries(CRL_REASONS).map(([k, v]) => [v, k as CrlReason]));

/** One revoked certificate. */
export interface CrlEntry {
  /** Serial number, lowercase hex without a sign byte (as ParsedCertificate.serialHex). */
  readonly serialHex: string;
  /** Milliseconds since the epoch. */
  readonly revokedAt: number;
  readonly reason?: CrlReason;
}

export interface IssueCrlOptions {
  /** The CA whose certificates the list covers; it signs the list. */
  readonly signer: Signer;
  /** CRL Number: must grow with every list this CA issues (at most 20 octets; we use a safe integer). */
  readonly number: number;
  readonly thisUpdate: number;
  readonly nextUpdate: number;
  readonly entries: readonly CrlEntry[];
}

export interface IssuedCrl {
  readonly pem: string;
  readonly der: Buffer;
}

const crlError = (message: string, detail?: string) => new CitadelError('CERT_INVALID', `invalid CRL: ${message}`, detail);

/** Normalised serial hex: lowercase, no leading zero bytes. Throws CONFIG_INVALID for anything but hex digits. */
export function normaliseSerial(serial: string): string {
  const s = serial.trim().toLowerCase().replace(/^0x/, '').replace(/:/g, '');
  if (!/^[0-9a-f]+$/.test(s) || s.length > 40) throw new CitadelError('CONFIG_INVALID', `not a certificate serial number (hex, at most 20 bytes): ${JSON.stringify(serial).slice(0, 60)}`);
  const even = s.length % 2 ? `0${s}` : s;
  const trimmed = even.replace(/^(00)+/, '');
  return trimmed === '' ? '00' : trimmed;
}

/**
 * Why `cert` may not sign CRLs, or undefined when it may: it must be a CA and, when it has a keyUsage extension,
 * that must include cRLSign (BoringSSL: KEYUSAGE_NO_CRL_SIGN; Go: CheckSignatureFrom).
 */
export function crlSignProblem(cert: ParsedCertificate): string | undefined {
  if (!cert.isCa) return 'it is not a CA certificate';
  if (cert.keyUsage && !cert.keyUsage.has('cRLSign')) return 'its keyUsage lacks cRLSign, so Envoy and OpenSSL would reject every CRL it signs';
  return undefined;
}

/**
 * Signs a CRL. Entries are written in the order given (serial duplicates are dropped).
 * @throws CitadelError NOT_A_CA (signer lacks cRLSign or is no CA), KEY_MISMATCH, CONFIG_INVALID (bad serial,
 *   nextUpdate not after thisUpdate, bad number).
 */
export function issueCrl(opts: IssueCrlOptions): IssuedCrl {
  const { signer } = opts;
  const problem = crlSignProblem(signer.cert);
  if (problem) throw new CitadelError('NOT_A_CA', `"${signer.cert.subject}" may not sign CRLs: ${problem}`);
  if (!keyMatchesCertificate(signer.key, signer.cert)) throw new CitadelError('KEY_MISMATCH', 'the CRL signing key does not match the CA certificate');
  if (!Number.isSafeInteger(opts.number) || opts.number < 0) throw new CitadelError('CONFIG_INVALID', 'CRL number must be a non-negative safe integer');
  if (!(opts.nextUpdate > opts.thisUpdate)) throw new CitadelError('CONFIG_INVALID', 'nextUpdate must be after thisUpdate');
  const algorithm: SignatureAlgorithm = signatureAlgorithmFor(signer.cert.key);
  const aki = signer.cert.subjectKeyId ?? keyIdentifier(signer.cert.spki);
  const seen = new Set<string>();
  const revoked: Buffer[] = [];
  for (const e of opts.entries) {
    const serial = normaliseSerial(e.serialHex);
    if (seen.has(serial)) continue;
    seen.add(serial);
    const parts = [integer(Buffer.from(serial, 'hex')), time(e.revokedAt)];
    // RFC 5280 5.3.1: omit reasonCode rather than send unspecified.
    if (e.reason && e.reason !== 'unspecified') parts.push(sequence(extension(OID.crlReason, false, tlv(ENUMERATED, Uint8Array.of(CRL_REASONS[e.reason])))));
    revoked.push(sequence(...parts));
  }
  const tbs = sequence(
    integer(1),
    algorithm.identifier,
    Buffer.from(signer.cert.subjectDer),
    time(opts.thisUpdate),
    time(opts.nextUpdate),
    ...(revoked.length > 0 ? [sequence(...revoked)] : []),
    explicit(0, sequence(extension(OID.authorityKeyIdentifier, false, authorityKeyIdValue(aki)), extension(OID.crlNumber, false, integer(opts.number)))),
  );
  const der = sequence(tbs, algorithm.identifier, bitString(signWith(signer.key, signer.cert.key, tbs)));
  return { pem: encodePem('X509 CRL', der), der };
}

export interface ParsedCrl {
  readonly pem: string;
  readonly der: Buffer;
  /** One-line issuer, e.g. "O=cluster.local". */
  readonly issuer: string;
  readonly issuerDer: Buffer;
  readonly thisUpdate: number;
  /** Undefined when absent (RFC 5280 requires it; we refuse such lists where it matters). */
  readonly nextUpdate?: number;
  /** CRL Number as a decimal string (it may exceed 2^53). */
  readonly number?: string;
  readonly authorityKeyId?: Buffer;
  readonly entries: readonly CrlEntry[];
  readonly signatureAlgorithm: Omit<SignatureAlgorithm, 'identifier'>;
  readonly tbs: Buffer;
  readonly signature: Buffer;
  /** Critical extensions we do not process (a verifier must reject the list). */
  readonly unhandledCritical: readonly string[];
}

function readExtensions(t: Tlv, what: string, onExtension: (id: string, critical: boolean, value: Buffer) => void): void {
  const list = new DerCursor(t, what);
  while (!list.done) {
    const c = new DerCursor(list.next(Tag.SEQUENCE, what), what);
    const id = readOid(c.next(Tag.OID, `${what} id`));
    const critTlv = c.optional(Tag.BOOLEAN);
    const critical = critTlv ? readBoolean(critTlv) : false;
    const value = readOctetString(c.next(Tag.OCTET_STRING, `${what} value`));
    c.end(what);
    onExtension(id, critical, value);
  }
}

function readTimeTlv(c: DerCursor, what: string): number {
  return readTime(c.next(undefined, what), what);
}

function parseCrlDer(der: Buffer): ParsedCrl {
  const root = parseDer(der);
  if (root.tag !== Tag.SEQUENCE) throw crlError('not a SEQUENCE');
  const outer = new DerCursor(root, 'CRL');
  const tbsTlv = outer.next(Tag.SEQUENCE, 'tbsCertList');
  const algTlv = outer.next(Tag.SEQUENCE, 'signatureAlgorithm');
  const sig = readBitString(outer.next(Tag.BIT_STRING, 'signatureValue'));
  outer.end('CRL');
  const tbs = new DerCursor(tbsTlv, 'tbsCertList');
  const versionTlv = tbs.optional(Tag.INTEGER);
  if (versionTlv && readSmallInteger(versionTlv, 'CRL version') !== 1) throw crlError('unsupported version');
  const innerAlg = tbs.next(Tag.SEQUENCE, 'signature');
  if (!rawOf(innerAlg).equals(rawOf(algTlv))) throw crlError('the two signature algorithm fields differ');
  const issuerTlv = tbs.next(Tag.SEQUENCE, 'issuer');
  const thisUpdate = readTimeTlv(tbs, 'thisUpdate');
  const next = tbs.peekTag();
  const nextUpdate = next === Tag.UTC_TIME || next === Tag.GENERALIZED_TIME ? readTimeTlv(tbs, 'nextUpdate') : undefined;
  const entries: CrlEntry[] = [];
  const unhandledCritical: string[] = [];
  const revokedTlv = tbs.optional(Tag.SEQUENCE);
  if (revokedTlv) {
    const list = new DerCursor(revokedTlv, 'revokedCertificates');
    while (!list.done) {
      const e = new DerCursor(list.next(Tag.SEQUENCE, 'revoked certificate'), 'revoked certificate');
      const serialHex = readUnsignedInteger(e.next(Tag.INTEGER, 'userCertificate'), 'userCertificate').toString('hex');
      const revokedAt = readTimeTlv(e, 'revocationDate');
      let reason: CrlReason | undefined;
      const extsTlv = e.optional(Tag.SEQUENCE);
      if (extsTlv) {
        readExtensions(extsTlv, 'CRL entry extension', (id, critical, value) => {
          if (id === OID.crlReason) {
            const v = parseDer(value);
            if (v.tag !== ENUMERATED || v.end - v.contentStart !== 1) throw crlError('bad reasonCode');
            reason = REASON_NAMES.get(contentOf(v)[0]!) ?? 'unspecified';
          } else if (critical) unhandledCritical.push(id);
        });
      }
      e.end('revoked certificate');
      entries.push(reason ? { serialHex, revokedAt, reason } : { serialHex, revokedAt });
    }
  }
  let number: string | undefined;
  let authorityKeyId: Buffer | undefined;
  const extsTlv = tbs.optional(contextTag(0, true));
  if (extsTlv) {
    const ec = new DerCursor(extsTlv, 'crlExtensions');
    readExtensions(ec.next(Tag.SEQUENCE, 'crlExtensions'), 'CRL extension', (id, critical, value) => {
      if (id === OID.crlNumber) number = BigInt(`0x${readUnsignedInteger(parseDer(value), 'cRLNumber').toString('hex')}`).toString(10);
      else if (id === OID.authorityKeyIdentifier) {
        const aki = new DerCursor(parseDer(value), 'authorityKeyIdentifier');
        const keyId = aki.optional(0x80);
        if (keyId) authorityKeyId = Buffer.from(contentOf(keyId));
      } else if (critical) unhandledCritical.push(id);
    });
    ec.end('crlExtensions');
  }
  tbs.end('tbsCertList');
  if (sig.unusedBits !== 0) throw crlError('signature has unused bits');
  return {
    pem: encodePem('X509 CRL', der),
    der,
    issuer: decodeName(issuerTlv, 'issuer').text,
    issuerDer: Buffer.from(rawOf(issuerTlv)),
    thisUpdate,
    ...(nextUpdate !== undefined ? { nextUpdate } : {}),
    ...(number !== undefined ? { number } : {}),
    ...(authorityKeyId ? { authorityKeyId } : {}),
    entries,
    signatureAlgorithm: readSignatureAlgorithm(algTlv),
    tbs: Buffer.from(rawOf(tbsTlv)),
    signature: Buffer.from(sig.bytes),
    unhandledCritical,
  };
}

/**
 * Every CRL of a PEM text ("X509 CRL" blocks; the empty text is no CRL). Throws PEM_INVALID (another block type,
 * bad PEM), DER_INVALID, CERT_INVALID (a list we cannot read), SIGNATURE_INVALID (unsupported algorithm),
 * INPUT_TOO_LARGE.
 */
export function parseCrls(pem: string): ParsedCrl[] {
  checkInputSize(pem, 'CRL file');
  return decodePemBlocks(pem).map((b) => {
    if (b.label !== 'X509 CRL') throw new CitadelError('PEM_INVALID', `expected PEM CRLs ("X509 CRL"), found "${b.label}"`);
    return parseCrlDer(b.der);
  });
}

/** True when `ca` issued this CRL: names match, AKI (when both have one) matches, and its key made the signature. */
export function isCrlSignedBy(crl: ParsedCrl, ca: ParsedCertificate): boolean {
  if (!crl.issuerDer.equals(ca.subjectDer)) return false;
  if (crl.authorityKeyId && ca.subjectKeyId && !crl.authorityKeyId.equals(ca.subjectKeyId)) return false;
  return verifyWith(ca.publicKey, ca.key, crl.signatureAlgorithm, crl.tbs, crl.signature);
}

/**
 * Checks that a set of CRLs is one Envoy can enforce for chains through `cas`: every CRL is signed by one of `cas`
 * (which must be allowed to sign CRLs), every CA has a CRL (Envoy's CRL_CHECK_ALL fails every handshake through a
 * CA without one), none has expired or lacks nextUpdate, none carries a critical extension we do not know.
 * Returns, per CA (same order as `cas`), the CRL that covers it.
 * @throws CitadelError CERT_INVALID naming the problem.
 */
export function checkCrlSet(crls: readonly ParsedCrl[], cas: readonly ParsedCertificate[], now: number): ParsedCrl[] {
  const covered = new Map<ParsedCertificate, ParsedCrl>();
  for (const crl of crls) {
    const ca = cas.find((c) => isCrlSignedBy(crl, c));
    if (!ca) throw crlError(`the CRL issued by "${crl.issuer}" is not signed by any CA of the chain`);
    const problem = crlSignProblem(ca);
    if (problem) throw crlError(`"${ca.subject}" may not sign CRLs: ${problem}`);
    if (crl.nextUpdate === undefined) throw crlError(`the CRL of "${crl.issuer}" has no nextUpdate`);
    if (crl.nextUpdate <= now) throw crlError(`the CRL of "${crl.issuer}" expired at ${new Date(crl.nextUpdate).toISOString()}`);
    if (crl.unhandledCritical.length) throw crlError(`the CRL of "${crl.issuer}" has unsupported critical extension ${crl.unhandledCritical.join(', ')}`);
    const prev = covered.get(ca);
    if (!prev || crl.thisUpdate > prev.thisUpdate) covered.set(ca, crl);
  }
  const missing = cas.filter((c) => !covered.has(c));
  if (missing.length) throw crlError(`no CRL signed by ${missing.map((c) => `"${c.subject}"`).join(', ')} (Envoy would refuse every certificate under it)`);
  return cas.map((c) => covered.get(c)!);
}
