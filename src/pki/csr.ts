/**
 * PKCS#10 certification requests: the agent builds one for its SPIFFE ID; the CA parses one, checks its
 * signature and takes only the public key (the SANs it asks for are reported, never trusted).
 */
import type { KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { bitString, childrenOf, contextTag, DER_LIMITS, DerCursor, implicit, integer, oid, parseDer, rawOf, readBitString, readOid, readSmallInteger, sequence, setOf, Tag } from './der.js';
import { describeKey, publicKeyFromSpki, readSignatureAlgorithm, signatureAlgorithmFor, signWith, spkiOf, verifyWith, type KeyInfo } from './keys.js';
import { OID } from './oids.js';
import { checkInputSize, decodeSinglePem, encodePem } from './pem.js';
import { parseSpiffeId } from './spiffe.js';
import { decodeExtensions, decodeName, EMPTY_NAME, encodeAltNames, extension } from './x509.js';

export interface CreateCsrOptions {
  /** The workload's private key. */
  key: KeyObject;
  /** Requested URI SAN. */
  spiffeId: string;
}

/**
 * A PEM CSR with an empty subject and one (critical) URI SAN, signed with `key`.
 * Throws SPIFFE_ID_INVALID, KEY_UNSUPPORTED, KEY_TOO_WEAK.
 */
export function createCsr(opts: CreateCsrOptions): string {
  parseSpiffeId(opts.spiffeId);
  if (opts.key.type !== 'private') throw new CitadelError('KEY_UNSUPPORTED', 'a CSR must be signed with a private key');
  const info = describeKey(opts.key);
  const alg = signatureAlgorithmFor(info);
  const extensionRequest = sequence(oid(OID.extensionRequest), setOf(sequence(extension(OID.subjectAltName, true, encodeAltNames({ uris: [opts.spiffeId] })))));
  const cri = sequence(integer(0), EMPTY_NAME, spkiOf(opts.key), implicit(0, extensionRequest, true));
  const der = sequence(cri, alg.identifier, bitString(signWith(opts.key, info, cri)));
  return encodePem('CERTIFICATE REQUEST', der);
}

export interface ParsedCsr {
  publicKey: KeyObject;
  key: KeyInfo;
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  emails: string[];
  /** Kinds of the other SANs asked for (otherName, directoryName, registeredID...): never issued. */
  otherNames: string[];
  subjectCommonName?: string;
}

function csrError(message: string): CitadelError {
  return new CitadelError('CSR_INVALID', `invalid CSR: ${message}`);
}

/**
 * Parses one PEM CSR ("CERTIFICATE REQUEST", or the older "NEW CERTIFICATE REQUEST") and verifies its
 * signature with its own key. Throws INPUT_TOO_LARGE, PEM_INVALID, PEM_MULTIPLE, DER_INVALID, CSR_INVALID,
 * SIGNATURE_INVALID, KEY_UNSUPPORTED, KEY_TOO_WEAK.
 */
export function parseCsr(pem: string): ParsedCsr {
  checkInputSize(pem, 'CSR');
  const { der } = decodeSinglePem(pem, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'], 'certificate request');
  const root = parseDer(der);
  if (root.tag !== Tag.SEQUENCE) throw new CitadelError('DER_INVALID', 'malformed DER: CSR is not a SEQUENCE');
  const outer = new DerCursor(root, 'CSR');
  const criTlv = outer.next(Tag.SEQUENCE, 'certificationRequestInfo');
  const algTlv = outer.next(Tag.SEQUENCE, 'signatureAlgorithm');
  const sig = readBitString(outer.next(Tag.BIT_STRING, 'signature'), 'signature', DER_LIMITS.signatureBytes);
  outer.end('CSR');
  if (sig.unusedBits !== 0) throw csrError('signature has unused bits');

  const cri = new DerCursor(criTlv, 'certificationRequestInfo');
  const version = readSmallInteger(cri.next(Tag.INTEGER, 'version'), 'version');
  if (version !== 0) throw csrError(`unsupported version ${version}`);
  const subject = decodeName(cri.next(Tag.SEQUENCE, 'subject'), 'subject');
  const spkiTlv = cri.next(Tag.SEQUENCE, 'subjectPublicKeyInfo');
  const attrsTlv = cri.next(contextTag(0, true), 'attributes');
  cri.end('certificationRequestInfo');

  // The key first: an Ed25519 or P-521 CSR is reported as an unsupported key, not as its signature algorithm.
  const { publicKey, key } = publicKeyFromSpki(Buffer.from(rawOf(spkiTlv)));
  const alg = readSignatureAlgorithm(algTlv);
  if (alg.keyAlgorithm !== key.algorithm) throw new CitadelError('SIGNATURE_INVALID', `CSR signature algorithm ${alg.name} does not fit its ${key.algorithm} key`);
  const out: ParsedCsr = { publicKey, key, uris: [], dnsNames: [], ipAddresses: [], emails: [], otherNames: [] };
  if (subject.commonName !== undefined) out.subjectCommonName = subject.commonName;
  let sawExtensions = false;
  for (const attr of childrenOf(attrsTlv, 'attributes', DER_LIMITS.csrAttributes)) {
    const c = new DerCursor(attr, 'attribute');
    const type = readOid(c.next(Tag.OID, 'attribute type'));
    const values = c.next(Tag.SET, 'attribute values');
    c.end('attribute');
    if (type !== OID.extensionRequest) continue;
    if (sawExtensions) throw csrError('more than one extensionRequest attribute');
    sawExtensions = true;
    const vc = new DerCursor(values, 'extensionRequest');
    let exts;
    try {
      exts = decodeExtensions(vc.next(Tag.SEQUENCE, 'extensionRequest'));
    } catch (err) {
      if (err instanceof CitadelError && err.code === 'CERT_INVALID') throw csrError(err.message);
      throw err;
    }
    vc.end('extensionRequest');
    const san = exts.subjectAltName;
    if (san) {
      out.uris = san.uris;
      out.dnsNames = san.dnsNames;
      out.ipAddresses = san.ipAddresses;
      out.emails = san.emails;
      out.otherNames = san.otherNames;
    }
  }
  // Last: everything above is bounded and cheap, so a malformed or oversized CSR is refused without paying for a
  // signature check over up to 64 KiB (issue 14). Nothing read above is trusted until this passes.
  if (!verifyWith(publicKey, key, alg, rawOf(criTlv), sig.bytes)) throw new CitadelError('SIGNATURE_INVALID', 'CSR signature does not verify');

  return out;
}
