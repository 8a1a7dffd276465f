import { describe, expect, it } from 'vitest';
import {
  bitString,
  boolean,
  childrenOf,
  DER_LIMITS,
  DerCursor,
  explicit,
  integer,
  namedBits,
  oid,
  parseDer,
  readBitString,
  readBoolean,
  readNamedBits,
  readOid,
  readString,
  readTime,
  readUnsignedInteger,
  sequence,
  setOf,
  Tag,
  time,
  tlv,
  utf8String,
} from '../../../src/pki/der.js';
import { expectCode } from './helpers.js';

const hex = (b: Buffer) => b.toString('hex');
const buf = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

describe('DER writer', () => {
  it('encodes short and long lengths minimally', () => {
    expect(hex(tlv(0x04, Buffer.alloc(0)))).toBe('0400');
    expect(hex(tlv(0x04, Buffer.alloc(127)).subarray(0, 2))).toBe('047f');
    expect(hex(tlv(0x04, Buffer.alloc(128)).subarray(0, 3))).toBe('048180');
    expect(hex(tlv(0x04, Buffer.alloc(256)).subarray(0, 4))).toBe('04820100');
    expect(hex(tlv(0x04, Buffer.alloc(70000)).subarray(0, 5))).toBe('0483011170');
  });

  it('encodes INTEGERs with a sign byte only when needed', () => {
    expect(hex(integer(0))).toBe('020100');
    expect(hex(integer(2))).toBe('020102');
    expect(hex(integer(127))).toBe('02017f');
    expect(hex(integer(128))).toBe('02020080');
    expect(hex(integer(65537))).toBe('0203010001');
    expect(hex(integer(buf('00 00 7f ff')))).toBe('02027fff');
    expect(hex(integer(buf('ff 01')))).toBe('020300ff01');
  });

  it('encodes OIDs (known vectors)', () => {
    expect(hex(oid('1.2.840.113549.1.1.11'))).toBe('06092a864886f70d01010b');
    expect(hex(oid('2.5.29.17'))).toBe('0603551d11');
    expect(hex(oid('1.2.840.10045.4.3.2'))).toBe('06082a8648ce3d040302');
    expect(hex(oid('2.999.3'))).toBe('0603883703');
  });

  it('round-trips OIDs through the reader', () => {
    for (const o of ['1.2.840.113549.1.9.14', '2.5.4.3', '1.3.6.1.5.5.7.3.2', '0.9.2342.19200300.100.1.25', '2.999.1']) {
      expect(readOid(parseDer(oid(o)))).toBe(o);
    }
  });

  it('encodes KeyUsage named bits with trailing zero bits dropped', () => {
    expect(hex(namedBits([0]))).toBe('03020780'); // digitalSignature
    expect(hex(namedBits([0, 2]))).toBe('030205a0'); // + keyEncipherment
    expect(hex(namedBits([5, 6]))).toBe('03020106'); // keyCertSign + cRLSign
    expect(hex(namedBits([8]))).toBe('0303070080'); // decipherOnly
    expect([...readNamedBits(parseDer(namedBits([0, 2, 5])))]).toEqual([0, 2, 5]);
  });

  it('sorts SET OF elements as DER requires', () => {
    expect(hex(setOf(integer(5), integer(1)))).toBe('3106020101020105');
  });

  it('writes UTCTime through 2049 and GeneralizedTime from 2050', () => {
    expect(time(Date.UTC(2049, 11, 31, 23, 59, 59)).toString('latin1')).toBe('\x17\x0d491231235959Z');
    expect(time(Date.UTC(2050, 0, 1)).toString('latin1')).toBe('\x18\x0f20500101000000Z');
    expect(time(Date.UTC(1950, 0, 1)).toString('latin1')).toBe('\x17\x0d500101000000Z');
    expect(time(Date.UTC(1949, 11, 31)).toString('latin1')).toBe('\x18\x0f19491231000000Z');
    expect(time(Date.UTC(2026, 0, 2, 3, 4, 5, 999)).toString('latin1')).toBe('\x17\x0d260102030405Z');
  });

  it('round-trips times', () => {
    for (const t of [Date.UTC(1999, 1, 28, 1, 2, 3), Date.UTC(2049, 11, 31, 23, 59, 59), Date.UTC(2050, 0, 1), Date.UTC(2200, 6, 4, 12)]) {
      expect(readTime(parseDer(time(t)))).toBe(t);
    }
  });
});

describe('DER reader rejects what is not strict DER', () => {
  it('truncated input', () => {
    expectCode(() => parseDer(buf('30')), 'DER_INVALID');
    expectCode(() => parseDer(buf('3003 0201')), 'DER_INVALID');
    expectCode(() => parseDer(buf('3082 01')), 'DER_INVALID');
    expectCode(() => parseDer(Buffer.alloc(0)), 'DER_INVALID');
  });

  it('trailing bytes after the outer element', () => {
    expectCode(() => parseDer(buf('3000 00')), 'DER_INVALID', /trailing/);
  });

  it('a child that runs past its parent', () => {
    expect(childrenOf(parseDer(buf('3005 0403 000000')))).toHaveLength(1);
    // The outer length is right for the buffer, but the inner OCTET STRING claims 5 bytes of 3.
    expectCode(() => childrenOf(parseDer(buf('3005 0405 000000'))), 'DER_INVALID', /past its container/);
  });

  it('indefinite, non-minimal and huge lengths', () => {
    expectCode(() => parseDer(buf('3080 0000')), 'DER_INVALID', /indefinite/);
    expectCode(() => parseDer(buf('3081 05 0403000000')), 'DER_INVALID', /non-minimal/);
    expectCode(() => parseDer(buf('3082 0005 0403000000')), 'DER_INVALID', /non-minimal/);
    expectCode(() => parseDer(buf('3085 0000000001 00')), 'DER_INVALID', /too large/);
  });

  it('high tag numbers', () => {
    expectCode(() => parseDer(buf('1f2200')), 'DER_INVALID', /high tag/);
  });

  it('non-minimal and negative INTEGERs', () => {
    expectCode(() => readUnsignedInteger(parseDer(buf('0202 007f'))), 'DER_INVALID', /non-minimal/);
    expectCode(() => readUnsignedInteger(parseDer(buf('0202 ff80'))), 'DER_INVALID', /non-minimal/);
    expectCode(() => readUnsignedInteger(parseDer(buf('0201 80'))), 'DER_INVALID', /negative/);
    expectCode(() => readUnsignedInteger(parseDer(buf('0200'))), 'DER_INVALID', /empty/);
    expect(hex(readUnsignedInteger(parseDer(buf('0202 0080'))))).toBe('80');
  });

  it('BOOLEANs other than 00 and ff', () => {
    expect(readBoolean(parseDer(boolean(true)))).toBe(true);
    expect(readBoolean(parseDer(boolean(false)))).toBe(false);
    expectCode(() => readBoolean(parseDer(buf('0101 01'))), 'DER_INVALID');
    expectCode(() => readBoolean(parseDer(buf('0102 ffff'))), 'DER_INVALID');
  });

  it('BIT STRINGs with bad unused-bit counts or set padding bits', () => {
    expect(readBitString(parseDer(bitString(buf('ab')))).bytes).toEqual(buf('ab'));
    expectCode(() => readBitString(parseDer(buf('0302 08 00'))), 'DER_INVALID');
    expectCode(() => readBitString(parseDer(buf('0301 01'))), 'DER_INVALID');
    expectCode(() => readBitString(parseDer(buf('0302 07 81'))), 'DER_INVALID', /unused bits/);
    expectCode(() => readBitString(parseDer(buf('0300'))), 'DER_INVALID');
  });

  it('OIDs with truncated or padded arcs', () => {
    expectCode(() => readOid(parseDer(buf('0602 2a86'))), 'DER_INVALID');
    expectCode(() => readOid(parseDer(buf('0603 2a8001'))), 'DER_INVALID', /non-minimal/);
    expectCode(() => readOid(parseDer(buf('0600'))), 'DER_INVALID');
  });

  it('OIDs up to DER_LIMITS.oidBytes, 128-bit UUID arcs included; longer ones are refused before any arithmetic', () => {
    const uuidOid = '2.25.329800735698586629295641978511506172918';
    expect(readOid(parseDer(oid(uuidOid)))).toBe(uuidOid);
    const longest = tlv(Tag.OID, Buffer.concat([Buffer.of(0x2b), Buffer.alloc(DER_LIMITS.oidBytes - 1, 0x01)]));
    expect(readOid(parseDer(longest))).toBe(`1.3${'.1'.repeat(DER_LIMITS.oidBytes - 1)}`);
    const over = tlv(Tag.OID, Buffer.concat([Buffer.alloc(DER_LIMITS.oidBytes, 0x81), Buffer.of(0x01)]));
    expectCode(() => readOid(parseDer(over), 'extension id'), 'DER_INVALID', /^malformed DER: extension id is longer than 64 bytes$/);
  });

  it('counts and sizes are capped: children, INTEGERs, BIT STRINGs', () => {
    const three = parseDer(sequence(integer(1), integer(2), integer(3)));
    expect(childrenOf(three, 'list', 3)).toHaveLength(3);
    expectCode(() => childrenOf(three, 'list', 2), 'DER_INVALID', /list has more than 2 elements/);
    expect(readUnsignedInteger(parseDer(integer(Buffer.alloc(20, 0xff))), 'serial', 20)).toHaveLength(20);
    expectCode(() => readUnsignedInteger(parseDer(integer(Buffer.alloc(21, 0xff))), 'serial', 20), 'DER_INVALID', /serial is longer than 20 bytes/);
    expectCode(() => readBitString(parseDer(bitString(Buffer.alloc(9))), 'signature', 8), 'DER_INVALID', /signature is longer than 8 bytes/);
  });

  it('times that are not in the RFC 5280 profile or not real dates', () => {
    const t = (tag: number, s: string) => parseDer(tlv(tag, Buffer.from(s, 'latin1')));
    expectCode(() => readTime(t(Tag.UTC_TIME, '2601020304Z')), 'DER_INVALID');
    expectCode(() => readTime(t(Tag.UTC_TIME, '260102030405+0100')), 'DER_INVALID');
    expectCode(() => readTime(t(Tag.GENERALIZED_TIME, '20260102030405.5Z')), 'DER_INVALID');
    expectCode(() => readTime(t(Tag.UTC_TIME, '260230000000Z')), 'DER_INVALID', /real date/);
    expectCode(() => readTime(t(Tag.UTC_TIME, '260101240000Z')), 'DER_INVALID', /real date/);
    expectCode(() => readTime(t(Tag.OCTET_STRING, '260101000000Z')), 'DER_INVALID');
    expect(readTime(t(Tag.UTC_TIME, '500101000000Z'))).toBe(Date.UTC(1950, 0, 1));
    expect(readTime(t(Tag.UTC_TIME, '491231235959Z'))).toBe(Date.UTC(2049, 11, 31, 23, 59, 59));
  });

  it('strings: UTF-8 must be valid, Printable/IA5 ASCII', () => {
    expect(readString(parseDer(utf8String('Grüße')))).toBe('Grüße');
    expect(readString(parseDer(tlv(Tag.BMP_STRING, buf('0041 00e9'))))).toBe('Aé');
    expectCode(() => readString(parseDer(tlv(Tag.UTF8_STRING, buf('c3')))), 'DER_INVALID');
    expectCode(() => readString(parseDer(tlv(Tag.PRINTABLE_STRING, buf('e9')))), 'DER_INVALID');
    expectCode(() => readString(parseDer(tlv(Tag.OCTET_STRING, buf('41')))), 'DER_INVALID');
    expectCode(() => readString(parseDer(utf8String('x'.repeat(DER_LIMITS.stringBytes + 1)))), 'DER_INVALID', /longer than/);
  });

  it('UniversalStrings: any character up to U+10FFFF; beyond it, or a surrogate, is DER_INVALID (not a RangeError)', () => {
    expect(readString(parseDer(tlv(Tag.UNIVERSAL_STRING, buf('00000041 0001f600 0010ffff'))))).toBe('A\u{1f600}\u{10ffff}');
    expectCode(() => readString(parseDer(tlv(Tag.UNIVERSAL_STRING, buf('00110000'))), 'CN'), 'DER_INVALID', /CN: UniversalString holds U\+110000, which is not a character/);
    expectCode(() => readString(parseDer(tlv(Tag.UNIVERSAL_STRING, buf('0000dc00')))), 'DER_INVALID', /U\+DC00/);
  });

  it('a cursor insists on the expected tags and on reading every child', () => {
    const t = parseDer(sequence(integer(1), explicit(0, integer(2))));
    const c = new DerCursor(t);
    expect(c.optional(Tag.BOOLEAN)).toBeUndefined();
    c.next(Tag.INTEGER);
    expectCode(() => c.end(), 'DER_INVALID', /extra data/);
    expectCode(() => c.next(Tag.INTEGER), 'DER_INVALID', /expected tag/);
    expectCode(() => new DerCursor(parseDer(integer(1))), 'DER_INVALID', /not constructed/);
  });
});
