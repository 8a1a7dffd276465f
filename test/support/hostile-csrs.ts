/**
 * The most expensive refused CSRs we know how to build within the CA's request limit (64 KiB of PEM by default):
 * one element made as large, as many or as deep as the limit allows. Shared by the unit test that bounds their
 * CPU cost (test/unit/pki/hostile.test.ts) and the bench row that reports it (bench/pki.ts).
 *
 * Each CSR is signed by a real key when the element sits behind the signature check, so the parser must reach it.
 */
import type { KeyObject } from 'node:crypto';
import type { ErrorCode } from '../../src/errors.js';
import { bitString, contextTag, implicit, integer, oid, sequence, setOf, Tag, tlv, utf8String } from '../../src/pki/der.js';
import { describeKey, signatureAlgorithmFor, signWith, spkiOf } from '../../src/pki/keys.js';
import { OID } from '../../src/pki/oids.js';
import { encodePem } from '../../src/pki/pem.js';
import { extension } from '../../src/pki/x509.js';

/** DER bytes that fit in 64 KiB of PEM (base64 is 4/3, plus line breaks and the BEGIN/END lines). */
export const DER_BUDGET = 47_000;

export interface HostileCsr {
  readonly name: string;
  readonly pem: string;
  /** How it must be refused. */
  readonly code: ErrorCode;
  readonly message: RegExp;
}

const IDENTITY = 'spiffe://cluster.local/ns/a/sa/b';

/** An OID TLV whose content is `content` as is (no validation). */
const rawOid = (content: Buffer) => tlv(Tag.OID, content);
/** One arc of `n` base-128 digits: 0x81 0x81 ... 0x01. */
const longArc = (n: number) => Buffer.concat([Buffer.alloc(n - 1, 0x81), Buffer.of(0x01)]);
/** A distinct 24-byte OID per i (1.3.6.1.4.1.<many arcs>.<i>). */
const distinctOid = (i: number) => rawOid(Buffer.concat([Buffer.of(0x2b, 6, 1, 4, 1), Buffer.alloc(16, 0x7f), Buffer.of(0x81, 0x80 | ((i >> 7) & 0x7f), i & 0x7f)]));

/** `depth` SEQUENCEs, each holding the next, around a NULL (built in one pass: wrapping one by one is quadratic). */
function nestedSequences(depth: number): Buffer {
  const headers: Buffer[] = [];
  let len = 2;
  for (let i = 0; i < depth; i++) {
    const header = len < 0x80 ? Buffer.of(0x30, len) : len < 0x100 ? Buffer.of(0x30, 0x81, len) : len < 0x10000 ? Buffer.of(0x30, 0x82, len >> 8, len & 0xff) : Buffer.of(0x30, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff);
    headers.push(header);
    len += header.length;
  }
  return Buffer.concat([...headers.reverse(), Buffer.of(Tag.NULL, 0)]);
}

export interface CsrParts {
  subject?: Buffer;
  spki?: Buffer;
  attributes?: Buffer[];
  extensions?: Buffer[];
  version?: Buffer;
  signature?: Buffer;
}

/** A CSR's DER from raw parts (no validation), signed with `key` unless `signature` is given. */
export function csrDer(key: KeyObject, opts: CsrParts): Buffer {
  const info = describeKey(key);
  const attrs = [...(opts.attributes ?? [])];
  if (opts.extensions) attrs.push(sequence(oid(OID.extensionRequest), setOf(sequence(...opts.extensions))));
  const cri = sequence(opts.version ?? integer(0), opts.subject ?? sequence(), opts.spki ?? spkiOf(key), implicit(0, Buffer.concat(attrs), true));
  const alg = signatureAlgorithmFor(info);
  return sequence(cri, alg.identifier, bitString(opts.signature ?? signWith(key, info, cri)));
}

const pem = (der: Buffer) => encodePem('CERTIFICATE REQUEST', der);
/** A Name of one attribute per RDN. */
export const subjectOf = (...atvs: Buffer[]): Buffer => sequence(...atvs.map((atv) => setOf(atv)));
/** A subjectAltName extension of the given GeneralName TLVs. */
export const san = (...names: Buffer[]): Buffer => extension(OID.subjectAltName, false, sequence(...names));
/** A PEM CSR from raw parts. */
export const csrPem = (key: KeyObject, opts: CsrParts): string => pem(csrDer(key, opts));
/** How many copies of an element of `size` bytes fit in the budget next to `overhead` bytes. */
const fit = (size: number, overhead = 400) => Math.floor((DER_BUDGET - overhead) / size);

/** Every hostile CSR, signed with `key` (a P-256 workload key). */
export function hostileCsrs(key: KeyObject): HostileCsr[] {
  const out: HostileCsr[] = [];
  const add = (name: string, der: Buffer, code: ErrorCode, message: RegExp) => {
    if (der.length > DER_BUDGET + 600) throw new Error(`${name}: ${der.length} bytes is over the budget`);
    out.push({ name, pem: pem(der), code, message });
  };

  // OIDs: one huge arc (BigInt shifts are quadratic), very many arcs, very many distinct OIDs (the name cache).
  add('one OID arc of 46 KB', csrDer(key, { subject: subjectOf(sequence(rawOid(longArc(DER_BUDGET - 400)), utf8String('x'))) }), 'DER_INVALID', /OID.*longer than/);
  add('one OID of 46,000 arcs', csrDer(key, { subject: subjectOf(sequence(rawOid(Buffer.alloc(DER_BUDGET - 400, 0x01)), utf8String('x'))) }), 'DER_INVALID', /OID.*longer than/);
  const manyOids = Array.from({ length: fit(36) }, (_, i) => sequence(distinctOid(i), utf8String('x')));
  add('1,300 distinct OIDs in the subject', csrDer(key, { subject: subjectOf(...manyOids) }), 'DER_INVALID', /subject.*more than/);
  add('1,300 distinct extension OIDs', csrDer(key, { extensions: Array.from({ length: fit(34) }, (_, i) => sequence(distinctOid(i), tlv(Tag.OCTET_STRING, Buffer.of(5, 0)))) }), 'DER_INVALID', /extensions.*more than/);
  add('1,400 attributes with distinct OIDs', csrDer(key, { attributes: Array.from({ length: fit(33) }, (_, i) => sequence(distinctOid(i), setOf())) }), 'DER_INVALID', /attributes.*more than/);

  // Names and strings.
  add('9,000 one-letter RDNs', csrDer(key, { subject: subjectOf(...Array.from({ length: fit(12) }, () => sequence(oid(OID.organizationalUnit), utf8String('x')))) }), 'DER_INVALID', /subject.*more than/);
  add('a 46 KB UTF8String', csrDer(key, { subject: subjectOf(sequence(oid(OID.commonName), utf8String('é'.repeat((DER_BUDGET - 400) / 2)))) }), 'DER_INVALID', /longer than/);
  add('a 46 KB UniversalString', csrDer(key, { subject: subjectOf(sequence(oid(OID.commonName), tlv(Tag.UNIVERSAL_STRING, Buffer.alloc(DER_BUDGET - 400, 0x41).fill(0, 0, 2)))) }), 'DER_INVALID', /longer than/);

  // Integers and keys.
  add('a 46 KB version INTEGER', csrDer(key, { version: tlv(Tag.INTEGER, Buffer.alloc(DER_BUDGET - 400, 0x11)) }), 'DER_INVALID', /too large|longer than/);
  const rsaSpki = (n: Buffer, e: Buffer) => sequence(sequence(oid(OID.rsaEncryption), tlv(Tag.NULL)), bitString(sequence(integer(n), integer(e))));
  add('an RSA modulus of 370,000 bits', csrDer(key, { spki: rsaSpki(Buffer.alloc(DER_BUDGET - 500, 0xc3), Buffer.of(1, 0, 1)) }), 'KEY_UNSUPPORTED', /larger than any supported key/);
  add('an RSA exponent of 46 KB', csrDer(key, { spki: rsaSpki(Buffer.alloc(256, 0xc3), Buffer.alloc(DER_BUDGET - 800, 0x03)) }), 'KEY_UNSUPPORTED', /larger than any supported key/);
  add('SPKI parameters nested 11,000 deep', csrDer(key, { spki: sequence(sequence(oid(OID.ecPublicKey), nestedSequences(11_000)), bitString(Buffer.alloc(65, 4))) }), 'KEY_UNSUPPORTED', /larger than any supported key/);
  add('a 46 KB signature', csrDer(key, { signature: Buffer.alloc(DER_BUDGET - 600, 0x30) }), 'DER_INVALID', /signature.*longer than/);

  // SANs: many, long, and of kinds we do not issue.
  add('2,900 DNS SANs', csrDer(key, { extensions: [san(...Array.from({ length: fit(16) }, (_, i) => implicit(2, Buffer.from(`a${i}.example`))))] }), 'DER_INVALID', /subjectAltName.*more than/);
  add('a 46 KB URI SAN', csrDer(key, { extensions: [san(implicit(6, Buffer.from(IDENTITY + '/'.repeat(DER_BUDGET - 600))))] }), 'DER_INVALID', /subjectAltName.*longer than/);
  add('a 46 KB otherName SAN', csrDer(key, { extensions: [san(implicit(0, Buffer.concat([oid('1.3.6.1.4.1.311.20.2.3'), tlv(contextTag(0, true), utf8String('u'.repeat(DER_BUDGET - 700)))]), true))] }), 'DER_INVALID', /subjectAltName.*longer than/);

  // Extension values nested deep (the reader must not recurse on what it does not understand).
  add('basicConstraints nested 11,000 deep', csrDer(key, { extensions: [extension(OID.basicConstraints, true, sequence(nestedSequences(11_000)))] }), 'DER_INVALID', /basicConstraints/);
  return out;
}

/** PEM text that is refused before any DER is read. */
export function hostilePemTexts(): HostileCsr[] {
  // What fits in a 64 KiB gRPC request beside the protobuf framing and the other fields.
  const budget = 65_000;
  const begin = '-----BEGIN CERTIFICATE REQUEST-----\n';
  return [
    { name: '1,800 BEGIN lines without END', pem: begin.repeat(Math.floor(budget / begin.length)), code: 'PEM_INVALID', message: /END/ },
    { name: 'BEGIN then 65 KB of dashes', pem: begin + '-'.repeat(budget - begin.length - 1), code: 'PEM_INVALID', message: /END/ },
    { name: '65 KB of whitespace in base64', pem: `${begin}${' \t\r\n'.repeat((budget - 200) / 4)}AAAA\n-----END CERTIFICATE REQUEST-----\n`, code: 'DER_INVALID', message: /malformed DER/ },
  ];
}
