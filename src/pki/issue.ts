/**
 * Certificate issuance: workload X.509-SVIDs and CA certificates, built as DER directly and signed with
 * node:crypto. What depends only on the signer (its subject DER, key id, algorithm, checks that its key
 * fits its certificate) is computed once per signer certificate and cached, so each issuance only encodes
 * the leaf TBS and signs it.
 */
import { createHash, randomFillSync, type KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { bitString, DerCursor, explicit, integer, parseDer, readBitString, sequence, Tag, time } from './der.js';
import { keyMatchesCertificate, type ParsedCertificate } from './certificate.js';
import { describeKey, signatureAlgorithmFor, signWith, spkiOf, type KeyInfo, type SignatureAlgorithm } from './keys.js';
import { OID } from './oids.js';
import { encodePem } from './pem.js';
import { parseSpiffeId, trustDomainId } from './spiffe.js';
import {
  authorityKeyIdValue,
  basicConstraintsValue,
  EMPTY_NAME,
  encodeAltNames,
  encodeName,
  extension,
  extKeyUsageValue,
  keyUsageValue,
  subjectKeyIdValue,
} from './x509.js';

/** A CA certificate and its private key. */
export interface Signer {
  cert: ParsedCertificate;
  key: KeyObject;
}

export interface IssuedCertificate {
  pem: string;
  der: Buffer;
  serialHex: string;
  /** Milliseconds since the epoch, whole seconds (as encoded). */
  notBefore: number;
  notAfter: number;
}

/** Leaf notBefore is this far in the past, for clocks that run behind (Istio uses the same 2 minutes). */
export const BACKDATE_MS = 2 * 60 * 1000;
/** X.520 upper bound for a common name. */
export const MAX_COMMON_NAME = 64;

const V3 = explicit(0, integer(2));
const LEAF_BASIC_CONSTRAINTS = extension(OID.basicConstraints, true, basicConstraintsValue(false));
const LEAF_KEY_USAGE_EC = extension(OID.keyUsage, true, keyUsageValue(['digitalSignature']));
const LEAF_KEY_USAGE_RSA = extension(OID.keyUsage, true, keyUsageValue(['digitalSignature', 'keyEncipherment']));
const LEAF_EXT_KEY_USAGE = extension(OID.extKeyUsage, false, extKeyUsageValue([OID.serverAuth, OID.clientAuth]));
const CA_KEY_USAGE = extension(OID.keyUsage, true, keyUsageValue(['keyCertSign', 'cRLSign']));

/** Key identifier per RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING bytes. */
export function keyIdentifier(spki: Buffer): Buffer {
  const c = new DerCursor(parseDer(spki), 'subjectPublicKeyInfo');
  c.next(Tag.SEQUENCE, 'algorithm');
  const { bytes } = readBitString(c.next(Tag.BIT_STRING, 'subjectPublicKey'));
  return createHash('sha1').update(bytes).digest();
}

interface SignerState {
  subjectDer: Buffer;
  authorityKeyId: Buffer;
  notAfter: number;
  keyInfo: KeyInfo;
  algorithm: SignatureAlgorithm;
  /** Keys already checked against this certificate. */
  checkedKeys: WeakSet<KeyObject>;
}

const signerStates = new WeakMap<ParsedCertificate, SignerState>();

/** Checks (once per certificate and key) that the signer is a CA whose key fits; throws NOT_A_CA, KEY_MISMATCH. */
function signerState(signer: Signer): SignerState {
  let state = signerStates.get(signer.cert);
  if (!state) {
    const { cert } = signer;
    if (!cert.isCa) throw new CitadelError('NOT_A_CA', 'the signing certificate is not a CA (basicConstraints cA is not set)', cert.subject);
    if (cert.keyUsage && !cert.keyUsage.has('keyCertSign')) throw new CitadelError('NOT_A_CA', 'the signing certificate may not sign certificates (no keyCertSign)', cert.subject);
    const keyInfo = cert.key;
    state = {
      subjectDer: Buffer.from(cert.subjectDer),
      authorityKeyId: cert.subjectKeyId ?? keyIdentifier(spkiOf(cert.publicKey)),
      notAfter: cert.notAfter,
      keyInfo,
      algorithm: signatureAlgorithmFor(keyInfo),
      checkedKeys: new WeakSet(),
    };
    signerStates.set(cert, state);
  }
  if (!state.checkedKeys.has(signer.key)) {
    if (signer.key.type !== 'private') throw new CitadelError('KEY_MISMATCH', 'the signer key is not a private key');
    if (!keyMatchesCertificate(signer.key, signer.cert)) throw new CitadelError('KEY_MISMATCH', 'the signer key does not match the signing certificate');
    state.checkedKeys.add(signer.key);
  }
  return state;
}

// Serial randomness comes from a pool refilled from the CSPRNG: one randomBytes() call per certificate
// costs about as much as a P-256 signature, one refill per 256 certificates costs almost nothing.
const SERIAL_POOL = Buffer.alloc(16 * 256);
let serialPoolAt = SERIAL_POOL.length;

/** 16 random bytes, top bit cleared (positive) and first byte non-zero (exactly 16 content bytes). */
function randomSerial(): Buffer {
  if (serialPoolAt === SERIAL_POOL.length) {
    randomFillSync(SERIAL_POOL);
    serialPoolAt = 0;
  }
  const serial = Buffer.from(SERIAL_POOL.subarray(serialPoolAt, serialPoolAt + 16));
  SERIAL_POOL.fill(0, serialPoolAt, serialPoolAt + 16);
  serialPoolAt += 16;
  serial[0] = serial[0]! & 0x7f || 0x01;
  return serial;
}

const toSeconds = (ms: number) => Math.floor(ms / 1000) * 1000;

function checkTime(now: number, ttlMs: number): void {
  if (!Number.isFinite(now) || now <= 0) throw new CitadelError('TTL_INVALID', 'issuance time must be a positive number of milliseconds');
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new CitadelError('TTL_INVALID', `certificate lifetime must be positive (got ${ttlMs} ms)`);
}

function assemble(tbs: Buffer, state: { algorithm: SignatureAlgorithm; keyInfo: KeyInfo }, key: KeyObject, serial: Buffer, notBefore: number, notAfter: number): IssuedCertificate {
  const signature = signWith(key, state.keyInfo, tbs);
  const der = sequence(tbs, state.algorithm.identifier, bitString(signature));
  return { pem: encodePem('CERTIFICATE', der), der, serialHex: serial.toString('hex'), notBefore, notAfter };
}

export interface IssueWorkloadOptions {
  signer: Signer;
  /** The workload's public key (from its CSR). */
  publicKey: KeyObject;
  /** The one URI SAN; must be a SPIFFE ID with a non-root path. */
  spiffeId: string;
  dnsNames?: readonly string[];
  /** Subject CN, only when asked for (Istio: the CSR had a CN); at most 64 characters. */
  commonName?: string;
  ttlMs: number;
  /** Issuance time, ms since the epoch (src/pki never reads the clock). */
  now: number;
}

/**
 * Issues a workload X.509-SVID: empty subject (unless commonName), one critical URI SAN, CA:false,
 * critical keyUsage digitalSignature (+keyEncipherment for RSA keys), EKU serverAuth+clientAuth, SKI/AKI,
 * 128-bit random serial, notBefore = now - 2 min, notAfter = min(now + ttl, signer notAfter).
 * Throws TTL_INVALID, CERT_EXPIRED (signer expired), SPIFFE_ID_INVALID, CSR_INVALID (bad DNS name or CN),
 * KEY_UNSUPPORTED / KEY_TOO_WEAK (workload key), NOT_A_CA / KEY_MISMATCH (signer).
 */
export function issueWorkloadCertificate(opts: IssueWorkloadOptions): IssuedCertificate {
  const { signer, publicKey, spiffeId, now, ttlMs } = opts;
  checkTime(now, ttlMs);
  const state = signerState(signer);
  if (now >= state.notAfter) throw new CitadelError('CERT_EXPIRED', 'the signing certificate has expired', new Date(state.notAfter).toISOString());
  const id = parseSpiffeId(spiffeId);
  if (id.path === '') throw new CitadelError('SPIFFE_ID_INVALID', 'invalid SPIFFE ID: a workload ID needs a path', spiffeId);
  const dnsNames = opts.dnsNames ?? [];
  for (const name of dnsNames) {
    if (!/^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$/.test(name) || name.length > 253) {
      throw new CitadelError('CSR_INVALID', `not a DNS name: ${JSON.stringify(name).slice(0, 80)}`);
    }
  }
  let subject = EMPTY_NAME;
  if (opts.commonName !== undefined) {
    if (opts.commonName.length === 0 || opts.commonName.length > MAX_COMMON_NAME) throw new CitadelError('CSR_INVALID', `common name must be 1 to ${MAX_COMMON_NAME} characters`);
    subject = encodeName([[OID.commonName, opts.commonName]]);
  }
  const subjectKey = describeKey(publicKey);
  const spki = spkiOf(publicKey);

  const serial = randomSerial();
  const notBefore = toSeconds(now - BACKDATE_MS);
  const notAfter = toSeconds(Math.min(now + ttlMs, state.notAfter));
  const san = encodeAltNames({ uris: [spiffeId], dnsNames: [...dnsNames] });
  const tbs = sequence(
    V3,
    integer(serial),
    state.algorithm.identifier,
    state.subjectDer,
    sequence(time(notBefore), time(notAfter)),
    subject,
    spki,
    explicit(
      3,
      sequence(
        subjectKey.algorithm === 'rsa' ? LEAF_KEY_USAGE_RSA : LEAF_KEY_USAGE_EC,
        LEAF_EXT_KEY_USAGE,
        LEAF_BASIC_CONSTRAINTS,
        extension(OID.subjectKeyIdentifier, false, subjectKeyIdValue(keyIdentifier(spki))),
        extension(OID.authorityKeyIdentifier, false, authorityKeyIdValue(state.authorityKeyId)),
        // SPIFFE X509-SVID 3.1: with an empty subject the SAN must be critical; Istio always marks it so.
        extension(OID.subjectAltName, true, san),
      ),
    ),
  );
  return assemble(tbs, state, signer.key, serial, notBefore, notAfter);
}

export interface IssueCaOptions {
  /** The new CA's private key (it signs the certificate when there is no signer). */
  key: KeyObject;
  /** The new CA's public key; defaults to the public half of `key`. */
  publicKey?: KeyObject;
  /** Absent: self-signed root. */
  signer?: Signer;
  organization: string;
  commonName?: string;
  /** Adds the URI SAN spiffe://<trustDomain> (no path, as SPIFFE asks of signing certificates). */
  trustDomain?: string;
  ttlMs: number;
  now: number;
  pathLen?: number;
}

/**
 * Issues a CA certificate (self-signed root, or intermediate under `signer`): subject O=<organization>[, CN],
 * critical basicConstraints CA:true [pathLen], critical keyUsage keyCertSign+cRLSign, SKI/AKI, optional
 * spiffe://<td> URI SAN; notBefore = now - 2 min, notAfter = min(now + ttl, signer notAfter).
 * Throws TTL_INVALID, CERT_EXPIRED, SPIFFE_ID_INVALID, CERT_GEN_ERROR (empty organization, bad pathLen),
 * KEY_MISMATCH, NOT_A_CA, KEY_UNSUPPORTED, KEY_TOO_WEAK.
 */
export function issueCaCertificate(opts: IssueCaOptions): IssuedCertificate {
  const { now, ttlMs } = opts;
  checkTime(now, ttlMs);
  if (!opts.organization) throw new CitadelError('CERT_GEN_ERROR', 'a CA certificate needs an organization');
  if (opts.commonName !== undefined && (opts.commonName.length === 0 || opts.commonName.length > MAX_COMMON_NAME)) {
    throw new CitadelError('CERT_GEN_ERROR', `common name must be 1 to ${MAX_COMMON_NAME} characters`);
  }
  if (opts.pathLen !== undefined && (!Number.isInteger(opts.pathLen) || opts.pathLen < 0 || opts.pathLen > 255)) {
    throw new CitadelError('CERT_GEN_ERROR', 'pathLen must be a whole number from 0 to 255');
  }
  if (opts.key.type !== 'private') throw new CitadelError('KEY_MISMATCH', 'the CA key must be a private key');
  const ownInfo = describeKey(opts.key);
  const spki = spkiOf(opts.publicKey ?? opts.key);
  if (opts.publicKey) {
    describeKey(opts.publicKey);
    if (!spki.equals(spkiOf(opts.key))) throw new CitadelError('KEY_MISMATCH', 'publicKey is not the public half of key');
  }
  const san = opts.trustDomain === undefined ? undefined : encodeAltNames({ uris: [trustDomainId(opts.trustDomain)] });
  const subject = encodeName(opts.commonName === undefined ? [[OID.organization, opts.organization]] : [[OID.organization, opts.organization], [OID.commonName, opts.commonName]]);
  const ski = keyIdentifier(spki);

  let issuerDer: Buffer;
  let aki: Buffer;
  let limit = Infinity;
  let signing: { algorithm: SignatureAlgorithm; keyInfo: KeyInfo };
  let signingKey: KeyObject;
  if (opts.signer) {
    const state = signerState(opts.signer);
    if (now >= state.notAfter) throw new CitadelError('CERT_EXPIRED', 'the signing certificate has expired', new Date(state.notAfter).toISOString());
    const parentLen = opts.signer.cert.pathLen;
    if (parentLen !== undefined && parentLen < 1) throw new CitadelError('NOT_A_CA', 'the signing certificate has pathLen 0 and may not sign CA certificates');
    issuerDer = state.subjectDer;
    aki = state.authorityKeyId;
    limit = state.notAfter;
    signing = state;
    signingKey = opts.signer.key;
  } else {
    issuerDer = subject;
    aki = ski;
    signing = { algorithm: signatureAlgorithmFor(ownInfo), keyInfo: ownInfo };
    signingKey = opts.key;
  }

  const serial = randomSerial();
  const notBefore = toSeconds(now - BACKDATE_MS);
  const notAfter = toSeconds(Math.min(now + ttlMs, limit));
  const extensions = [
    CA_KEY_USAGE,
    extension(OID.basicConstraints, true, basicConstraintsValue(true, opts.pathLen)),
    extension(OID.subjectKeyIdentifier, false, subjectKeyIdValue(ski)),
    extension(OID.authorityKeyIdentifier, false, authorityKeyIdValue(aki)),
  ];
  if (san) extensions.push(extension(OID.subjectAltName, false, san));
  const tbs = sequence(
    V3,
    integer(serial),
    signing.algorithm.identifier,
    issuerDer,
    sequence(time(notBefore), time(notAfter)),
    subject,
    spki,
    explicit(3, sequence(...extensions)),
  );
  return assemble(tbs, signing, signingKey, serial, notBefore, notAfter);
}
