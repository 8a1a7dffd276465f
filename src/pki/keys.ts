/**
 * Keys: generation, PEM in/out, and the one policy on which keys we accept (ECDSA P-256/P-384, RSA
 * 2048/3072/4096). Signature algorithms follow the key: P-256 -> ecdsa-with-SHA256, P-384 ->
 * ecdsa-with-SHA384, RSA -> sha256WithRSAEncryption (PKCS#1 v1.5).
 */
import { createPrivateKey, createPublicKey, generateKeyPair as generateKeyPairCb, sign, verify, type KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { DerCursor, nullValue, oid, parseDer, rawOf, readBitString, readOid, readUnsignedInteger, sequence, Tag, type Tlv } from './der.js';
import { OID } from './oids.js';
import { checkInputSize, decodeSinglePem, encodePem } from './pem.js';

export type KeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096';
export const KEY_TYPES: readonly KeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'];

export interface KeyInfo {
  type: KeyType;
  algorithm: 'ecdsa' | 'rsa';
  bits: number;
  curve?: 'P-256' | 'P-384';
}

/** Generates a key pair of `type` with OpenSSL (RSA public exponent 65537). */
export function generateKeyPair(type: KeyType): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, publicKey: KeyObject, privateKey: KeyObject) => (err ? reject(err) : resolve({ privateKey, publicKey }));
    switch (type) {
      case 'ecdsa-p256':
        return generateKeyPairCb('ec', { namedCurve: 'prime256v1' }, done);
      case 'ecdsa-p384':
        return generateKeyPairCb('ec', { namedCurve: 'secp384r1' }, done);
      case 'rsa-2048':
      case 'rsa-3072':
      case 'rsa-4096':
        return generateKeyPairCb('rsa', { modulusLength: Number(type.slice(4)), publicExponent: 0x10001 }, done);
      default:
        return reject(new CitadelError('KEY_UNSUPPORTED', `unsupported key type ${String(type)}`));
    }
  });
}

const PRIVATE_KEY_LABELS = { 'PRIVATE KEY': 'pkcs8', 'RSA PRIVATE KEY': 'pkcs1', 'EC PRIVATE KEY': 'sec1' } as const;

/**
 * Reads one private key: PKCS#8 ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY") or SEC1 ("EC PRIVATE KEY", an
 * "EC PARAMETERS" block before it is ignored). Throws INPUT_TOO_LARGE, PEM_INVALID, PEM_MULTIPLE,
 * DER_INVALID, KEY_UNSUPPORTED (incl. encrypted keys), KEY_TOO_WEAK.
 */
export function parsePrivateKeyPem(pem: string): KeyObject {
  checkInputSize(pem, 'private key');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(pem)) throw new CitadelError('KEY_UNSUPPORTED', 'encrypted private keys are not supported');
  const block = decodeSinglePem(pem, Object.keys(PRIVATE_KEY_LABELS), 'private key', ['EC PARAMETERS']);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: block.der, format: 'der', type: PRIVATE_KEY_LABELS[block.label as keyof typeof PRIVATE_KEY_LABELS] });
  } catch (err) {
    throw new CitadelError('DER_INVALID', `"${block.label}" block is not a readable private key`, (err as Error).message);
  }
  describeKey(key);
  return key;
}

/** PKCS#8 PEM of a private key. */
export function privateKeyToPem(key: KeyObject): string {
  if (key.type !== 'private') throw new CitadelError('KEY_UNSUPPORTED', 'not a private key');
  return encodePem('PRIVATE KEY', key.export({ type: 'pkcs8', format: 'der' }));
}

/** PEM ("PUBLIC KEY", SubjectPublicKeyInfo) of a public key or of the public half of a private key. */
export function publicKeyToPem(key: KeyObject): string {
  return encodePem('PUBLIC KEY', spkiOf(key));
}

const keyInfoCache = new WeakMap<KeyObject, KeyInfo>();

/** What the key policy looks at: OpenSSL's names and details, or the same read from a SubjectPublicKeyInfo. */
interface KeyFacts {
  readonly kind: string | undefined;
  readonly namedCurve?: string;
  readonly modulusLength?: number;
  readonly publicExponent?: bigint;
}

/** The one policy on which keys we take. Throws KEY_UNSUPPORTED and KEY_TOO_WEAK. */
function keyInfoFrom(facts: KeyFacts): KeyInfo {
  if (facts.kind === 'ec') {
    const curve = facts.namedCurve;
    if (curve === 'prime256v1') return { type: 'ecdsa-p256', algorithm: 'ecdsa', bits: 256, curve: 'P-256' };
    if (curve === 'secp384r1') return { type: 'ecdsa-p384', algorithm: 'ecdsa', bits: 384, curve: 'P-384' };
    throw new CitadelError('KEY_UNSUPPORTED', `unsupported elliptic curve ${curve ?? '(unknown)'}; use P-256 or P-384`);
  }
  if (facts.kind === 'rsa') {
    const bits = facts.modulusLength ?? 0;
    if (bits < 2048) throw new CitadelError('KEY_TOO_WEAK', `RSA key of ${bits} bits is too weak; at least 2048 are required`);
    if (bits !== 2048 && bits !== 3072 && bits !== 4096) throw new CitadelError('KEY_UNSUPPORTED', `RSA keys of ${bits} bits are not supported; use 2048, 3072 or 4096`);
    // OpenSSL imports any exponent; with e = 1 (or any even e) "signatures" can be forged by anyone, so a
    // CSR would prove nothing and the certificate would be usable by whoever sees it.
    const e = facts.publicExponent ?? 0n;
    if (e < 3n || e % 2n === 0n || e >= 2n ** 32n) throw new CitadelError('KEY_UNSUPPORTED', `RSA public exponent ${e} is not supported; use 65537`);
    return { type: `rsa-${bits}` as KeyType, algorithm: 'rsa', bits };
  }
  throw new CitadelError('KEY_UNSUPPORTED', `unsupported key algorithm ${facts.kind ?? '(unknown)'}; use ECDSA or RSA`);
}

/**
 * What kind of key this is, if we support it (public or private). Throws KEY_UNSUPPORTED (Ed25519, DSA,
 * RSA-PSS, other curves, odd RSA sizes) and KEY_TOO_WEAK (RSA under 2048 bits).
 */
export function describeKey(key: KeyObject): KeyInfo {
  let info = keyInfoCache.get(key);
  if (!info) {
    const kind = key.asymmetricKeyType;
    // asymmetricKeyDetails asks OpenSSL (~20 us on a fresh key); only kinds we might take need it.
    info = keyInfoFrom(kind === 'ec' || kind === 'rsa' ? { kind, ...key.asymmetricKeyDetails } : { kind });
    keyInfoCache.set(key, info);
  }
  return info;
}

const spkiCache = new WeakMap<KeyObject, Buffer>();

/** SubjectPublicKeyInfo DER of a key (the public half for a private key); cached per KeyObject. */
export function spkiOf(key: KeyObject): Buffer {
  let spki = spkiCache.get(key);
  if (!spki) {
    const pub = key.type === 'private' ? createPublicKey(key) : key;
    spki = pub.export({ type: 'spki', format: 'der' });
    spkiCache.set(key, spki);
  }
  return spki;
}

/** The largest RSA modulus we take (4096 bits). */
const MAX_RSA_BYTES = 512;
/** Bounds on a SubjectPublicKeyInfo's parts, far above the keys we take. */
const MAX_SPKI_ALGORITHM_BYTES = 512;
const MAX_SPKI_KEY_BYTES = 1024;

// Canonical AlgorithmIdentifiers of the keys we take (what OpenSSL itself writes).
const RSA_KEY_ALG = sequence(oid(OID.rsaEncryption), nullValue());
const P256_KEY_ALG = sequence(oid(OID.ecPublicKey), oid('1.2.840.10045.3.1.7'));
const P384_KEY_ALG = sequence(oid(OID.ecPublicKey), oid('1.3.132.0.34'));

/**
 * Reads a SubjectPublicKeyInfo. Throws DER_INVALID, KEY_UNSUPPORTED, KEY_TOO_WEAK.
 *
 * The key reaches OpenSSL as a PEM string built from the checked bytes, not as `{ key, format: 'der' }` or a JWK:
 * Node 24 tells a KeyObject from an options object by catching an exception it throws for every plain object,
 * which doubles or triples the cost of an import (P-256: ~45 us as DER options, ~55 us as JWK, ~18 us as PEM;
 * bench/crypto-bound.ts). When the encoding is the canonical one OpenSSL would write, the input bytes are
 * remembered as the key's SPKI so issuance need not export it again.
 */
export function publicKeyFromSpki(spki: Buffer): { publicKey: KeyObject; key: KeyInfo } {
  const c = new DerCursor(parseDer(spki), 'subjectPublicKeyInfo');
  const alg = rawOf(c.next(Tag.SEQUENCE, 'subjectPublicKeyInfo algorithm'));
  const bits = readBitString(c.next(Tag.BIT_STRING, 'subjectPublicKey'), 'subjectPublicKey');
  c.end('subjectPublicKeyInfo');
  // Before OpenSSL decodes anything: the keys we take are at most 526 bytes with a 15-byte algorithm (explicit EC
  // parameters, which we do not take either, are about 300), and OpenSSL's decoders are not cheap on junk.
  if (alg.length > MAX_SPKI_ALGORITHM_BYTES || bits.bytes.length > MAX_SPKI_KEY_BYTES) {
    throw new CitadelError('KEY_UNSUPPORTED', 'public key is larger than any supported key');
  }
  // For the encodings OpenSSL itself writes, the facts the key policy needs are read here, which spares asking
  // OpenSSL for the key's details (~20 us), and the input bytes are the key's SPKI.
  let facts: KeyFacts | undefined;
  if (alg.equals(RSA_KEY_ALG) && bits.unusedBits === 0) {
    const rsa = new DerCursor(parseDer(bits.bytes), 'RSAPublicKey');
    // Bounded before OpenSSL sees them: a 40 KB exponent costs OpenSSL (and printing it) most of a second.
    const n = readUnsignedInteger(rsa.next(Tag.INTEGER, 'modulus'), 'modulus');
    const e = readUnsignedInteger(rsa.next(Tag.INTEGER, 'publicExponent'), 'publicExponent');
    if (n.length > MAX_RSA_BYTES) throw new CitadelError('KEY_UNSUPPORTED', `RSA keys of more than ${MAX_RSA_BYTES * 8} bits are not supported; use 2048, 3072 or 4096`);
    if (e.length > 4) throw new CitadelError('KEY_UNSUPPORTED', 'RSA public exponents above 32 bits are not supported; use 65537');
    rsa.end('RSAPublicKey');
    facts = { kind: 'rsa', modulusLength: bitLength(n), publicExponent: BigInt(`0x${e.toString('hex')}`) };
  } else if (bits.unusedBits === 0 && bits.bytes[0] === 0x04) {
    if (alg.equals(P256_KEY_ALG) && bits.bytes.length === 65) facts = { kind: 'ec', namedCurve: 'prime256v1' };
    else if (alg.equals(P384_KEY_ALG) && bits.bytes.length === 97) facts = { kind: 'ec', namedCurve: 'secp384r1' };
  }
  // The policy first: a key we would refuse never reaches OpenSSL's decoder.
  const known = facts && keyInfoFrom(facts);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(`-----BEGIN PUBLIC KEY-----\n${spki.toString('base64')}\n-----END PUBLIC KEY-----\n`);
  } catch (err) {
    throw new CitadelError('KEY_UNSUPPORTED', 'public key is not readable or of an unsupported type', (err as Error).message);
  }
  if (!known) return { publicKey, key: describeKey(publicKey) };
  keyInfoCache.set(publicKey, known);
  spkiCache.set(publicKey, Buffer.from(spki));
  return { publicKey, key: known };
}

/** Bits of an unsigned big-endian integer without leading zero bytes. */
function bitLength(n: Buffer): number {
  return n.length === 0 ? 0 : (n.length - 1) * 8 + (32 - Math.clz32(n[0]!));
}

/** True when `a` and `b` (public or private) have the same public key. */
export function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  return spkiOf(a).equals(spkiOf(b));
}

// ---- Signature algorithms ----

export interface SignatureAlgorithm {
  /** The AlgorithmIdentifier DER. */
  readonly identifier: Buffer;
  readonly hash: 'sha256' | 'sha384' | 'sha512';
  readonly keyAlgorithm: 'ecdsa' | 'rsa';
  readonly name: string;
}

const ALGS: Record<string, Omit<SignatureAlgorithm, 'identifier'>> = {
  [OID.ecdsaWithSha256]: { hash: 'sha256', keyAlgorithm: 'ecdsa', name: 'ecdsa-with-SHA256' },
  [OID.ecdsaWithSha384]: { hash: 'sha384', keyAlgorithm: 'ecdsa', name: 'ecdsa-with-SHA384' },
  [OID.ecdsaWithSha512]: { hash: 'sha512', keyAlgorithm: 'ecdsa', name: 'ecdsa-with-SHA512' },
  [OID.sha256WithRsa]: { hash: 'sha256', keyAlgorithm: 'rsa', name: 'sha256WithRSAEncryption' },
  [OID.sha384WithRsa]: { hash: 'sha384', keyAlgorithm: 'rsa', name: 'sha384WithRSAEncryption' },
  [OID.sha512WithRsa]: { hash: 'sha512', keyAlgorithm: 'rsa', name: 'sha512WithRSAEncryption' },
};

const identifierFor = (dotted: string, rsa: boolean) => (rsa ? sequence(oid(dotted), nullValue()) : sequence(oid(dotted)));

const SIGNING: Record<KeyType, SignatureAlgorithm> = {
  'ecdsa-p256': { ...ALGS[OID.ecdsaWithSha256]!, identifier: identifierFor(OID.ecdsaWithSha256, false) },
  'ecdsa-p384': { ...ALGS[OID.ecdsaWithSha384]!, identifier: identifierFor(OID.ecdsaWithSha384, false) },
  'rsa-2048': { ...ALGS[OID.sha256WithRsa]!, identifier: identifierFor(OID.sha256WithRsa, true) },
  'rsa-3072': { ...ALGS[OID.sha256WithRsa]!, identifier: identifierFor(OID.sha256WithRsa, true) },
  'rsa-4096': { ...ALGS[OID.sha256WithRsa]!, identifier: identifierFor(OID.sha256WithRsa, true) },
};

/** The algorithm we sign with for a key of this kind. */
export function signatureAlgorithmFor(key: KeyInfo): SignatureAlgorithm {
  return SIGNING[key.type];
}

/**
 * Reads an AlgorithmIdentifier of a signature. Throws SIGNATURE_INVALID for algorithms we do not verify
 * (SHA-1, MD5, RSA-PSS, EdDSA...) and DER_INVALID for malformed parameters.
 */
export function readSignatureAlgorithm(t: Tlv): Omit<SignatureAlgorithm, 'identifier'> {
  const c = new DerCursor(t, 'signature algorithm');
  const dotted = readOid(c.next(Tag.OID, 'signature algorithm'));
  const alg = ALGS[dotted];
  if (!alg) throw new CitadelError('SIGNATURE_INVALID', `unsupported signature algorithm ${dotted}`);
  // RSA: parameters NULL (or absent, as some encoders do); ECDSA: parameters absent (RFC 5758).
  if (alg.keyAlgorithm === 'rsa') c.optional(Tag.NULL);
  c.end('signature algorithm');
  return alg;
}

/** Signs `data` with `key` using the algorithm that fits the key (ECDSA signatures in DER form, OpenSSL's default). */
export function signWith(key: KeyObject, info: KeyInfo, data: Buffer): Buffer {
  const alg = SIGNING[info.type];
  // ECDSA signatures are DER by default. The key goes in bare: an options object costs ~20 us more on Node 24
  // (see publicKeyFromSpki).
  return sign(alg.hash, data, key);
}

/** Verifies a signature; false (never a throw) for a signature that does not fit the key or algorithm. */
export function verifyWith(publicKey: KeyObject, info: KeyInfo, alg: Omit<SignatureAlgorithm, 'identifier'>, data: Buffer, signature: Buffer): boolean {
  if (alg.keyAlgorithm !== info.algorithm) return false;
  try {
    return verify(alg.hash, data, publicKey, signature);
  } catch {
    return false;
  }
}
