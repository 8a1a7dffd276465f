/**
 * A small DER (X.690 distinguished encoding) writer and reader: just what X.509 certificates, CSRs and
 * SubjectPublicKeyInfo need. We build TBS bytes directly instead of going through an ASN.1 library so that
 * issuing a certificate costs little more than the signature itself (issue 8).
 *
 * The reader is strict: definite, minimal lengths only; every length must fit its parent; high tag numbers,
 * non-minimal INTEGERs and non-DER BOOLEANs are rejected. Every failure is a CitadelError DER_INVALID.
 *
 * It is also bounded (issue 14): every variable-size element is capped at a size real certificates stay far below
 * (DER_LIMITS), and nothing is read recursively, so the worst input the CA accepts on the wire is refused after a
 * few linear scans instead of after seconds of BigInt arithmetic or string building.
 */
import { CitadelError } from '../errors.js';
import { OID } from './oids.js';

/**
 * Largest sizes and counts the readers accept. Each is several times what real certificates and CSRs use (the
 * figures in the comments), so no real input comes near, and each keeps its reader linear and cheap.
 */
export const DER_LIMITS = {
  /** Content bytes of one OBJECT IDENTIFIER (real ones: under 30; a 2.25.<UUID> OID: 20). */
  oidBytes: 64,
  /** Content bytes of one directory string (X.520 bounds most attributes at 64 to 200 characters). */
  stringBytes: 1024,
  /** Attributes in one Name, over all RDNs (real: under 10). */
  nameAttributes: 64,
  /** Extensions in a certificate or CSR (real: about 10). */
  extensions: 64,
  /** Entries in a GeneralNames (SAN) sequence (public CAs allow at most 100; ours has 1). */
  generalNames: 256,
  /** Content bytes of one GeneralName (a SPIFFE ID is at most 2048 bytes). */
  generalNameBytes: 2048,
  /** Attributes in a CSR (real: one, the extensionRequest). */
  csrAttributes: 16,
  /** Bytes of a serial number (RFC 5280: at most 20). */
  serialBytes: 32,
  /** Bytes of a signature (RSA-4096: 512; ECDSA P-384 in DER: 104). */
  signatureBytes: 1024,
  /** OIDs in an extendedKeyUsage (real: 1 to 3). */
  extKeyUsages: 32,
} as const;

/** DER_INVALID "<what> is longer than <limit> bytes" when `length` exceeds `limit`. */
export function checkLength(length: number, limit: number, what: string): void {
  if (length > limit) throw derError(`${what} is longer than ${limit} bytes`);
}

/** DER_INVALID "<what> has more than <limit> elements" when `count` exceeds `limit`. */
export function checkCount(count: number, limit: number, what: string): void {
  if (count > limit) throw derError(`${what} has more than ${limit} elements`);
}

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag number n: constructed (EXPLICIT, or IMPLICIT of a constructed type) or primitive. */
export const contextTag = (n: number, constructed: boolean): number => (constructed ? 0xa0 : 0x80) | n;

function derError(message: string): CitadelError {
  return new CitadelError('DER_INVALID', `malformed DER: ${message}`);
}

// ---------------------------------------------------------------------------------------------------------
// Writer

function lengthBytes(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x100) return 2;
  if (n < 0x10000) return 3;
  if (n < 0x1000000) return 4;
  return 5;
}

function writeLength(out: Buffer, at: number, n: number): number {
  const size = lengthBytes(n);
  if (size === 1) {
    out[at] = n;
    return at + 1;
  }
  out[at] = 0x80 | (size - 1);
  for (let i = size - 1; i >= 1; i--) {
    out[at + i] = n & 0xff;
    n = Math.floor(n / 256);
  }
  return at + size;
}

/** One TLV whose content is the concatenation of `parts` (allocates once). */
export function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(1 + lengthBytes(len) + len);
  out[0] = tag;
  let at = writeLength(out, 1, len);
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const sequence = (...parts: Uint8Array[]): Buffer => tlv(Tag.SEQUENCE, ...parts);

/** SET OF: DER requires the encoded elements in ascending byte order. */
export function setOf(...parts: Buffer[]): Buffer {
  const sorted = parts.length > 1 ? [...parts].sort(Buffer.compare) : parts;
  return tlv(Tag.SET, ...sorted);
}

/** INTEGER from a non-negative number or from unsigned big-endian bytes (a 0x00 is added when needed). */
export function integer(value: number | Uint8Array): Buffer {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError('integer(): non-negative safe integers only');
    const bytes: number[] = [];
    do {
      bytes.unshift(value & 0xff);
      value = Math.floor(value / 256);
    } while (value > 0);
    if (bytes[0]! & 0x80) bytes.unshift(0);
    return tlv(Tag.INTEGER, Uint8Array.from(bytes));
  }
  let start = 0;
  while (start < value.length - 1 && value[start] === 0) start++;
  const trimmed = value.subarray(start);
  if (trimmed.length === 0) return tlv(Tag.INTEGER, Uint8Array.of(0));
  return trimmed[0]! & 0x80 ? tlv(Tag.INTEGER, Uint8Array.of(0), trimmed) : tlv(Tag.INTEGER, trimmed);
}

const oidCache = new Map<string, Buffer>();

/** OBJECT IDENTIFIER from dotted form; encodings are cached since a handful of OIDs are used over and over. */
export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const arcs = dotted.split('.').map((s) => {
    if (!/^\d+$/.test(s)) throw new RangeError(`oid(): bad arc in ${dotted}`);
    return BigInt(s);
  });
  if (arcs.length < 2 || arcs[0]! > 2n || (arcs[0]! < 2n && arcs[1]! > 39n)) throw new RangeError(`oid(): bad OID ${dotted}`);
  const bytes: number[] = [];
  const push = (v: bigint) => {
    const group = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) group.unshift(Number(v & 0x7fn) | 0x80);
    bytes.push(...group);
  };
  push(arcs[0]! * 40n + arcs[1]!);
  for (const arc of arcs.slice(2)) push(arc);
  const enc = tlv(Tag.OID, Uint8Array.from(bytes));
  if (oidCache.size < 256) oidCache.set(dotted, enc);
  return enc;
}

export const octetString = (bytes: Uint8Array): Buffer => tlv(Tag.OCTET_STRING, bytes);
export const bitString = (bytes: Uint8Array, unusedBits = 0): Buffer => tlv(Tag.BIT_STRING, Uint8Array.of(unusedBits), bytes);
export const utf8String = (s: string): Buffer => tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));
export const printableString = (s: string): Buffer => tlv(Tag.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
export const ia5String = (s: string): Buffer => tlv(Tag.IA5_STRING, Buffer.from(s, 'latin1'));
export const boolean = (v: boolean): Buffer => tlv(Tag.BOOLEAN, Uint8Array.of(v ? 0xff : 0x00));
export const nullValue = (): Buffer => Buffer.from([Tag.NULL, 0]);
/** [n] EXPLICIT: the inner TLV wrapped in a constructed context tag. */
export const explicit = (n: number, inner: Uint8Array): Buffer => tlv(contextTag(n, true), inner);
/** [n] IMPLICIT: the content of the replaced type under a context tag. */
export const implicit = (n: number, content: Uint8Array, constructed = false): Buffer => tlv(contextTag(n, constructed), content);

/**
 * A BIT STRING for a NamedBitList (KeyUsage): bit 0 is the most significant bit of the first byte, and DER
 * drops trailing zero bits.
 */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return bitString(new Uint8Array(0));
  const highest = Math.max(...bits);
  const bytes = new Uint8Array((highest >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return bitString(bytes, 7 - (highest & 7));
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** Time as RFC 5280 wants it: UTCTime for 1950-2049, GeneralizedTime otherwise; whole seconds, Z. */
export function time(ms: number): Buffer {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError('time(): year out of range');
  const rest = pad(d.getUTCMonth() + 1, 2) + pad(d.getUTCDate(), 2) + pad(d.getUTCHours(), 2) + pad(d.getUTCMinutes(), 2) + pad(d.getUTCSeconds(), 2) + 'Z';
  if (year >= 1950 && year < 2050) return tlv(Tag.UTC_TIME, Buffer.from(pad(year % 100, 2) + rest, 'latin1'));
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(pad(year, 4) + rest, 'latin1'));
}

// ---------------------------------------------------------------------------------------------------------
// Reader

/** One decoded TLV: offsets into `buf` (no copies). */
export interface Tlv {
  readonly buf: Buffer;
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly start: number;
  readonly contentStart: number;
  /** Offset just past the content. */
  readonly end: number;
}

/** Reads one TLV at `offset` that must end at or before `limit`. Throws DER_INVALID. */
export function readTlv(buf: Buffer, offset: number, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw derError('truncated header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw derError('high tag numbers are not supported');
  let len = buf[offset + 1]!;
  let contentStart = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw derError('indefinite length');
    if (n > 4) throw derError('length too large');
    if (contentStart + n > limit) throw derError('truncated length');
    if (buf[contentStart] === 0) throw derError('non-minimal length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[contentStart + i]!;
    if (len < 0x80) throw derError('non-minimal length');
    contentStart += n;
  }
  const end = contentStart + len;
  if (end > limit) throw derError('content runs past its container');
  return { buf, tag, start: offset, contentStart, end };
}

/** Parses a buffer that must hold exactly one TLV (no trailing bytes). */
export function parseDer(buf: Buffer): Tlv {
  const t = readTlv(buf, 0, buf.length);
  if (t.end !== buf.length) throw derError('trailing bytes after the outer element');
  return t;
}

export const contentOf = (t: Tlv): Buffer => t.buf.subarray(t.contentStart, t.end);
export const rawOf = (t: Tlv): Buffer => t.buf.subarray(t.start, t.end);
export const isConstructed = (t: Tlv): boolean => (t.tag & 0x20) !== 0;

/** Sequential reader over the children of a constructed TLV. */
export class DerCursor {
  private at: number;
  constructor(private readonly parent: Tlv, what = 'element') {
    if (!isConstructed(parent)) throw derError(`${what} is not constructed`);
    this.at = parent.contentStart;
  }

  get done(): boolean {
    return this.at >= this.parent.end;
  }

  peekTag(): number | undefined {
    return this.done ? undefined : this.parent.buf[this.at];
  }

  /** The next child; with `tag`, it must carry that tag. */
  next(tag?: number, what = 'element'): Tlv {
    if (this.done) throw derError(`missing ${what}`);
    const t = readTlv(this.parent.buf, this.at, this.parent.end);
    if (tag !== undefined && t.tag !== tag) throw derError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
    this.at = t.end;
    return t;
  }

  /** The next child if it carries `tag`, else undefined (nothing consumed). */
  optional(tag: number): Tlv | undefined {
    return this.peekTag() === tag ? this.next(tag) : undefined;
  }

  /** Asserts that every child was read. */
  end(what = 'element'): void {
    if (!this.done) throw derError(`unexpected extra data in ${what}`);
  }
}

/** All children of a constructed TLV; with `max`, DER_INVALID as soon as there are more than `max`. */
export function childrenOf(t: Tlv, what = 'element', max = Infinity): Tlv[] {
  const c = new DerCursor(t, what);
  const out: Tlv[] = [];
  while (!c.done) {
    out.push(c.next(undefined, what));
    checkCount(out.length, max, what);
  }
  return out;
}

export function expectTag(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) throw derError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
  return t;
}

/**
 * INTEGER content as unsigned big-endian bytes (sign byte dropped); negative values are rejected, and so are
 * values of more than `maxBytes` bytes (sign byte not counted).
 */
export function readUnsignedInteger(t: Tlv, what = 'INTEGER', maxBytes = Infinity): Buffer {
  expectTag(t, Tag.INTEGER, what);
  const c = contentOf(t);
  if (c.length === 0) throw derError(`${what}: empty`);
  checkLength(c[0] === 0 ? c.length - 1 : c.length, maxBytes, what);
  if (c.length > 1 && ((c[0] === 0 && !(c[1]! & 0x80)) || (c[0] === 0xff && c[1]! & 0x80))) throw derError(`${what}: non-minimal`);
  if (c[0]! & 0x80) throw derError(`${what}: negative`);
  return c[0] === 0 && c.length > 1 ? c.subarray(1) : c;
}

/** A small non-negative INTEGER (versions, pathLen). */
export function readSmallInteger(t: Tlv, what = 'INTEGER'): number {
  const c = contentOf(t);
  if (c.length > 5) throw derError(`${what}: too large`);
  const bytes = readUnsignedInteger(t, what);
  if (bytes.length > 4) throw derError(`${what}: too large`);
  let n = 0;
  for (const b of bytes) n = n * 256 + b;
  return n;
}

export function readBoolean(t: Tlv, what = 'BOOLEAN'): boolean {
  expectTag(t, Tag.BOOLEAN, what);
  const c = contentOf(t);
  if (c.length !== 1 || (c[0] !== 0 && c[0] !== 0xff)) throw derError(`${what}: not a DER boolean`);
  return c[0] === 0xff;
}

/**
 * Dotted forms of the OIDs this code knows, by content bytes. Filled once and never grown: a cache that kept
 * whatever OIDs callers send would let them fill it (and push out the ones that matter).
 */
const knownOidNames = new Map<string, string>(Object.values(OID).map((dotted) => [contentOf(parseDer(oid(dotted))).toString('latin1'), dotted]));

/** OBJECT IDENTIFIER in dotted form; at most DER_LIMITS.oidBytes of content. */
export function readOid(t: Tlv, what = 'OID'): string {
  expectTag(t, Tag.OID, what);
  const c = contentOf(t);
  checkLength(c.length, DER_LIMITS.oidBytes, what);
  if (c.length === 0 || c[c.length - 1]! & 0x80) throw derError(`${what}: truncated`);
  const hit = knownOidNames.get(c.toString('latin1'));
  if (hit) return hit;
  const arcs: bigint[] = [];
  let v = 0n;
  let first = true;
  for (let i = 0; i < c.length; i++) {
    const b = c[i]!;
    if (first && b === 0x80) throw derError(`${what}: non-minimal arc`);
    first = false;
    v = (v << 7n) | BigInt(b & 0x7f);
    if (!(b & 0x80)) {
      arcs.push(v);
      v = 0n;
      first = true;
    }
  }
  const head = arcs[0]!;
  const parts = head < 80n ? [head / 40n, head % 40n] : [2n, head - 80n];
  return [...parts, ...arcs.slice(1)].join('.');
}

/** BIT STRING: the bytes and the count of unused bits in the last byte (at most `maxBytes` bytes). */
export function readBitString(t: Tlv, what = 'BIT STRING', maxBytes = Infinity): { bytes: Buffer; unusedBits: number } {
  expectTag(t, Tag.BIT_STRING, what);
  const c = contentOf(t);
  checkLength(c.length - 1, maxBytes, what);
  if (c.length === 0) throw derError(`${what}: empty`);
  const unusedBits = c[0]!;
  if (unusedBits > 7 || (c.length === 1 && unusedBits !== 0)) throw derError(`${what}: bad unused-bit count`);
  if (unusedBits && c[c.length - 1]! & ((1 << unusedBits) - 1)) throw derError(`${what}: unused bits are not zero`);
  return { bytes: c.subarray(1), unusedBits };
}

/** The set bit numbers of a NamedBitList BIT STRING (bit 0 = most significant bit of the first byte). */
export function readNamedBits(t: Tlv, what = 'BIT STRING'): Set<number> {
  const { bytes, unusedBits } = readBitString(t, what);
  const bits = new Set<number>();
  const total = bytes.length * 8 - unusedBits;
  for (let i = 0; i < total; i++) if (bytes[i >> 3]! & (0x80 >> (i & 7))) bits.add(i);
  return bits;
}

export function readOctetString(t: Tlv, what = 'OCTET STRING'): Buffer {
  return contentOf(expectTag(t, Tag.OCTET_STRING, what));
}

/** UTCTime or GeneralizedTime in the RFC 5280 profile (seconds, Z) -> milliseconds since the epoch. */
export function readTime(t: Tlv, what = 'time'): number {
  const s = contentOf(t).toString('latin1');
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === Tag.UTC_TIME) {
    m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
    if (!m) throw derError(`${what}: bad UTCTime`);
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (t.tag === Tag.GENERALIZED_TIME) {
    m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
    if (!m) throw derError(`${what}: bad GeneralizedTime`);
    year = Number(m[1]);
  } else {
    throw derError(`${what}: not a time`);
  }
  const [mon, day, hh, mm, ss] = [2, 3, 4, 5, 6].map((i) => Number(m![i]));
  const d = new Date(0);
  d.setUTCFullYear(year, mon! - 1, day!);
  d.setUTCHours(hh!, mm!, ss!, 0);
  if (d.getUTCMonth() !== mon! - 1 || d.getUTCDate() !== day! || d.getUTCHours() !== hh! || d.getUTCMinutes() !== mm! || d.getUTCSeconds() !== ss!) {
    throw derError(`${what}: not a real date`);
  }
  const ms = d.getTime();
  return ms;
}

/** The text of a directory or IA5 string of at most DER_LIMITS.stringBytes bytes. */
export function readString(t: Tlv, what = 'string'): string {
  const c = contentOf(t);
  checkLength(c.length, DER_LIMITS.stringBytes, what);
  switch (t.tag) {
    case Tag.UTF8_STRING: {
      const s = c.toString('utf8');
      if (!Buffer.from(s, 'utf8').equals(c)) throw derError(`${what}: invalid UTF-8`);
      return s;
    }
    case Tag.PRINTABLE_STRING:
    case Tag.IA5_STRING:
      for (const b of c) if (b > 0x7f) throw derError(`${what}: non-ASCII byte`);
      return c.toString('latin1');
    case Tag.TELETEX_STRING:
      return c.toString('latin1');
    case Tag.BMP_STRING: {
      if (c.length % 2) throw derError(`${what}: odd BMPString`);
      const swapped = Buffer.from(c);
      swapped.swap16();
      return swapped.toString('utf16le');
    }
    case Tag.UNIVERSAL_STRING: {
      if (c.length % 4) throw derError(`${what}: bad UniversalString`);
      let s = '';
      for (let i = 0; i < c.length; i += 4) {
        const cp = c.readUInt32BE(i);
        // Past U+10FFFF there is no character (String.fromCodePoint would throw a RangeError); surrogates are
        // UTF-16 halves, never characters of their own.
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw derError(`${what}: UniversalString holds U+${cp.toString(16).toUpperCase()}, which is not a character`);
        s += String.fromCodePoint(cp);
      }
      return s;
    }
    default:
      throw derError(`${what}: unsupported string type 0x${t.tag.toString(16)}`);
  }
}
