/**
 * X.509 pieces shared by certificates and CSRs: distinguished names, extensions (encode and decode) and
 * GeneralNames. Only what our certificates and those of common CA tools use.
 */
import { CitadelError } from '../errors.js';
import {
  boolean,
  checkCount,
  checkLength,
  childrenOf,
  DER_LIMITS,
  contentOf,
  DerCursor,
  ia5String,
  implicit,
  namedBits,
  octetString,
  oid,
  readBoolean,
  readNamedBits,
  readOctetString,
  readOid,
  readSmallInteger,
  readString,
  sequence,
  setOf,
  Tag,
  integer,
  utf8String,
  type Tlv,
} from './der.js';
import { KeyUsageBit, OID, type KeyUsageName } from './oids.js';

// ---- Names ----

const ATTRIBUTE_NAMES: Record<string, string> = {
  [OID.commonName]: 'CN',
  [OID.serialNumber]: 'serialNumber',
  [OID.country]: 'C',
  [OID.locality]: 'L',
  [OID.stateOrProvince]: 'ST',
  [OID.organization]: 'O',
  [OID.organizationalUnit]: 'OU',
  [OID.emailAddress]: 'emailAddress',
  [OID.domainComponent]: 'DC',
};

/** The empty Name (an empty SEQUENCE). */
export const EMPTY_NAME = sequence();

/** A Name of UTF8String attributes in the given order, one attribute per RDN. */
export function encodeName(attributes: ReadonlyArray<readonly [oidDotted: string, value: string]>): Buffer {
  return sequence(...attributes.map(([type, value]) => setOf(sequence(oid(type), utf8String(value)))));
}

export interface DecodedName {
  /** One-line form "O=example, CN=name" in encoded order ("" for an empty Name). */
  text: string;
  commonName?: string;
}

const escapeValue = (v: string) => v.replace(/([,+"\\<>;=])/g, '\\$1');

/** Reads a Name of at most DER_LIMITS.nameAttributes attributes. Throws DER_INVALID. */
export function decodeName(t: Tlv, what = 'name'): DecodedName {
  const parts: string[] = [];
  let commonName: string | undefined;
  let attributes = 0;
  for (const rdn of childrenOf(t, what, DER_LIMITS.nameAttributes)) {
    if (rdn.tag !== Tag.SET) throw new CitadelError('DER_INVALID', `malformed DER: ${what}: RDN is not a SET`);
    const atvs: string[] = [];
    for (const atv of childrenOf(rdn, what, DER_LIMITS.nameAttributes)) {
      checkCount(++attributes, DER_LIMITS.nameAttributes, what);
      const c = new DerCursor(atv, what);
      const type = readOid(c.next(Tag.OID, `${what} attribute type`));
      const value = readString(c.next(undefined, `${what} attribute value`), `${what} attribute value`);
      c.end(what);
      if (type === OID.commonName && commonName === undefined) commonName = value;
      atvs.push(`${ATTRIBUTE_NAMES[type] ?? type}=${escapeValue(value)}`);
    }
    parts.push(atvs.join('+'));
  }
  return commonName === undefined ? { text: parts.join(', ') } : { text: parts.join(', '), commonName };
}

// ---- GeneralNames (SubjectAltName) ----

export interface AltNames {
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  emails: string[];
  /**
   * The kinds of the other names present (`otherName`, `x400Address`, `directoryName`, `ediPartyName`,
   * `registeredID`), one entry per name: kept so that a policy can refuse what it does not issue.
   */
  otherNames: string[];
}

const GN = { rfc822Name: 0x81, dNSName: 0x82, uniformResourceIdentifier: 0x86, iPAddress: 0x87 } as const;

/** GeneralName kinds we read but never issue, by tag (RFC 5280 4.2.1.6; IMPLICIT tags, so constructed ones are 0xa_). */
const OTHER_GENERAL_NAMES: Record<number, string> = { 0xa0: 'otherName', 0xa3: 'x400Address', 0xa4: 'directoryName', 0xa5: 'ediPartyName', 0x88: 'registeredID' };

function ipToString(bytes: Buffer): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new CitadelError('DER_INVALID', 'malformed DER: iPAddress must have 4 or 16 bytes');
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  // Compress the longest run of two or more zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best === -1) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function ipToBytes(ip: string): Buffer | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    return parts.every((p) => p <= 255) ? Buffer.from(parts) : undefined;
  }
  if (!/^[0-9a-fA-F:]+$/.test(ip)) return undefined;
  const halves = ip.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (groups.some((g) => g.length === 0 || g.length > 4)) return undefined;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/**
 * Reads a GeneralNames SEQUENCE (at most DER_LIMITS.generalNames names of DER_LIMITS.generalNameBytes each). Names
 * other than URI, DNS, IP and email are listed by kind in `otherNames`. Throws DER_INVALID (also for a tag that is
 * no GeneralName at all).
 */
export function decodeAltNames(t: Tlv): AltNames {
  const out: AltNames = { uris: [], dnsNames: [], ipAddresses: [], emails: [], otherNames: [] };
  for (const gn of childrenOf(t, 'subjectAltName', DER_LIMITS.generalNames)) {
    checkLength(gn.end - gn.contentStart, DER_LIMITS.generalNameBytes, 'subjectAltName entry');
    const ascii = () => {
      const c = contentOf(gn);
      for (const b of c) if (b > 0x7f) throw new CitadelError('DER_INVALID', 'malformed DER: non-ASCII byte in subjectAltName');
      return c.toString('latin1');
    };
    switch (gn.tag) {
      case GN.uniformResourceIdentifier:
        out.uris.push(ascii());
        break;
      case GN.dNSName:
        out.dnsNames.push(ascii());
        break;
      case GN.rfc822Name:
        out.emails.push(ascii());
        break;
      case GN.iPAddress:
        out.ipAddresses.push(ipToString(contentOf(gn)));
        break;
      default: {
        const kind = OTHER_GENERAL_NAMES[gn.tag];
        if (!kind) throw new CitadelError('DER_INVALID', `malformed DER: subjectAltName: tag 0x${gn.tag.toString(16)} is not a GeneralName`);
        out.otherNames.push(kind);
      }
    }
  }
  return out;
}

/** GeneralNames DER. Throws CSR_INVALID for an IP address that is not IPv4/IPv6 text. */
export function encodeAltNames(names: Partial<AltNames>): Buffer {
  const parts: Buffer[] = [];
  for (const uri of names.uris ?? []) parts.push(ia5String(uri).fill(GN.uniformResourceIdentifier, 0, 1));
  for (const dns of names.dnsNames ?? []) parts.push(ia5String(dns).fill(GN.dNSName, 0, 1));
  for (const ip of names.ipAddresses ?? []) {
    const bytes = ipToBytes(ip);
    if (!bytes) throw new CitadelError('CSR_INVALID', `not an IP address: ${ip}`);
    parts.push(implicit(7, bytes));
  }
  for (const email of names.emails ?? []) parts.push(ia5String(email).fill(GN.rfc822Name, 0, 1));
  return sequence(...parts);
}

// ---- Extensions ----

/** One Extension: critical is written only when true (DER omits DEFAULT FALSE). */
export function extension(oidDotted: string, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(oid(oidDotted), boolean(true), octetString(value)) : sequence(oid(oidDotted), octetString(value));
}

export function basicConstraintsValue(ca: boolean, pathLen?: number): Buffer {
  if (!ca) return sequence();
  return pathLen === undefined ? sequence(boolean(true)) : sequence(boolean(true), integer(pathLen));
}

export function keyUsageValue(usages: readonly KeyUsageName[]): Buffer {
  return namedBits(usages.map((u) => KeyUsageBit[u]));
}

export const extKeyUsageValue = (oids: readonly string[]): Buffer => sequence(...oids.map((o) => oid(o)));
export const subjectKeyIdValue = (ski: Buffer): Buffer => octetString(ski);
export const authorityKeyIdValue = (ski: Buffer): Buffer => sequence(implicit(0, ski));

/** What we understand of a certificate's (or CSR's) extensions. */
export interface DecodedExtensions {
  basicConstraints?: { ca: boolean; pathLen?: number; critical: boolean };
  keyUsage?: { usages: Set<KeyUsageName>; critical: boolean };
  extKeyUsage?: { oids: string[]; critical: boolean };
  subjectAltName?: AltNames & { critical: boolean };
  subjectKeyId?: Buffer;
  authorityKeyId?: Buffer;
  /** Critical extensions we do not process (path validation must reject these). */
  unhandledCritical: string[];
  /** Every extension OID in order. */
  all: Array<{ oid: string; critical: boolean }>;
}

const KEY_USAGE_NAMES = Object.entries(KeyUsageBit) as Array<[KeyUsageName, number]>;

/** Reads a SEQUENCE OF Extension. Throws DER_INVALID, CERT_INVALID (duplicates). */
export function decodeExtensions(t: Tlv): DecodedExtensions {
  const out: DecodedExtensions = { unhandledCritical: [], all: [] };
  const seen = new Set<string>();
  for (const ext of childrenOf(t, 'extensions', DER_LIMITS.extensions)) {
    const c = new DerCursor(ext, 'extension');
    const id = readOid(c.next(Tag.OID, 'extension id'));
    const critTlv = c.optional(Tag.BOOLEAN);
    const critical = critTlv ? readBoolean(critTlv, 'extension critical flag') : false;
    const value = readOctetString(c.next(Tag.OCTET_STRING, 'extension value'), 'extension value');
    c.end('extension');
    if (seen.has(id)) throw new CitadelError('CERT_INVALID', `extension ${id} appears twice`);
    seen.add(id);
    out.all.push({ oid: id, critical });
    const inner = () => {
      const v = readTlvExact(value, `extension ${id}`);
      return v;
    };
    switch (id) {
      case OID.basicConstraints: {
        const bc = new DerCursor(expect(inner(), Tag.SEQUENCE, 'basicConstraints'), 'basicConstraints');
        const caTlv = bc.optional(Tag.BOOLEAN);
        const ca = caTlv ? readBoolean(caTlv, 'basicConstraints cA') : false;
        const plTlv = bc.optional(Tag.INTEGER);
        bc.end('basicConstraints');
        out.basicConstraints = plTlv ? { ca, pathLen: readSmallInteger(plTlv, 'pathLenConstraint'), critical } : { ca, critical };
        break;
      }
      case OID.keyUsage: {
        const bits = readNamedBits(inner(), 'keyUsage');
        out.keyUsage = { usages: new Set(KEY_USAGE_NAMES.filter(([, bit]) => bits.has(bit)).map(([name]) => name)), critical };
        break;
      }
      case OID.extKeyUsage:
        out.extKeyUsage = { oids: childrenOf(expect(inner(), Tag.SEQUENCE, 'extKeyUsage'), 'extKeyUsage', DER_LIMITS.extKeyUsages).map((o) => readOid(o, 'extKeyUsage')), critical };
        break;
      case OID.subjectAltName:
        out.subjectAltName = { ...decodeAltNames(expect(inner(), Tag.SEQUENCE, 'subjectAltName')), critical };
        break;
      case OID.subjectKeyIdentifier:
        out.subjectKeyId = Buffer.from(readOctetString(inner(), 'subjectKeyIdentifier'));
        break;
      case OID.authorityKeyIdentifier: {
        const aki = new DerCursor(expect(inner(), Tag.SEQUENCE, 'authorityKeyIdentifier'), 'authorityKeyIdentifier');
        const keyId = aki.optional(0x80);
        if (keyId) out.authorityKeyId = Buffer.from(contentOf(keyId));
        break;
      }
      default:
        if (critical) out.unhandledCritical.push(id);
    }
  }
  return out;
}

function readTlvExact(buf: Buffer, what: string): Tlv {
  const c = new DerCursor({ buf, tag: Tag.SEQUENCE, start: 0, contentStart: 0, end: buf.length }, what);
  const t = c.next(undefined, what);
  c.end(what);
  return t;
}

function expect(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) throw new CitadelError('DER_INVALID', `malformed DER: ${what}: unexpected tag 0x${t.tag.toString(16)}`);
  return t;
}

