import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  checkWorkloadSvid,
  generateKeyPair,
  issueCaCertificate,
  issueWorkloadCertificate,
  keyIdentifier,
  parseCertificate,
  spkiOf,
  type KeyType,
  type Signer,
} from '../../../src/pki/index.js';
import { childrenOf, DerCursor, parseDer, Tag } from '../../../src/pki/der.js';
import { DAY, HOUR, NOW, expectCode, makeCa } from './helpers.js';
import { opensslVerify, scratch, x509Text } from './openssl.js';

const tmp = scratch();
const ID = 'spiffe://cluster.local/ns/default/sa/web';

/** The raw TBS fields of a DER certificate, for checks below the parser. */
function tbsFields(der: Buffer) {
  const [tbs] = childrenOf(parseDer(der));
  const c = new DerCursor(tbs!);
  const version = c.next();
  const serial = c.next(Tag.INTEGER);
  c.next(); // signature
  c.next(); // issuer
  const validity = childrenOf(c.next(Tag.SEQUENCE));
  return { version, serial, notBefore: validity[0]!, notAfter: validity[1]! };
}

describe('issueWorkloadCertificate', () => {
  const signers = new Map<KeyType, { root: Signer; intermediate: Signer }>();
  beforeAll(async () => {
    for (const t of ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048'] as const) signers.set(t, await makeCa(t));
  });

  it.each([
    ['ecdsa-p256', 'ecdsa-p256', 'ecdsa-with-SHA256'],
    ['ecdsa-p384', 'ecdsa-p256', 'ecdsa-with-SHA384'],
    ['rsa-2048', 'ecdsa-p256', 'sha256WithRSAEncryption'],
    ['ecdsa-p256', 'rsa-2048', 'ecdsa-with-SHA256'],
    ['rsa-2048', 'rsa-3072', 'sha256WithRSAEncryption'],
  ] as const)('CA %s signing a %s key: an X.509-SVID openssl accepts, signed with %s', async (caType, leafType, sigAlg) => {
    const { root, intermediate } = signers.get(caType)!;
    const { publicKey } = await generateKeyPair(leafType);
    const now = Date.now(); // openssl verify checks against the real clock
    const issued = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now });

    const rootPath = tmp.file(`root-${caType}.pem`, root.cert.pem);
    const interPath = tmp.file(`inter-${caType}.pem`, intermediate.cert.pem);
    const leafPath = tmp.file(`leaf-${caType}-${leafType}.pem`, issued.pem);
    const v = opensslVerify({ root: rootPath, untrusted: interPath, cert: leafPath, extra: ['-purpose', 'sslclient'] });
    expect(v.out).toContain(': OK');
    expect(opensslVerify({ root: rootPath, untrusted: interPath, cert: leafPath, extra: ['-purpose', 'sslserver'] }).ok).toBe(true);

    const text = x509Text(issued.pem);
    expect(text).toMatch(new RegExp(`Signature Algorithm: ${sigAlg}`));
    expect(text).toMatch(/Subject:\s*\n/);
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical\s*\n\s*URI:spiffe:\/\/cluster.local\/ns\/default\/sa\/web\s*\n/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s*\n\s*CA:FALSE/);
    const usage = leafType.startsWith('rsa') ? 'Digital Signature, Key Encipherment' : 'Digital Signature';
    expect(text).toMatch(new RegExp(`X509v3 Key Usage: critical\\s*\\n\\s*${usage}\\s*\\n`));
    expect(text).toMatch(/X509v3 Extended Key Usage: \s*\n\s*TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/X509v3 Subject Key Identifier/);
    expect(text).toMatch(/X509v3 Authority Key Identifier/);

    // Node's own X.509 (OpenSSL underneath) agrees on the issuer and the signature.
    const x = new X509Certificate(issued.pem);
    expect(x.checkIssued(new X509Certificate(intermediate.cert.pem))).toBe(true);
    expect(x.verify(intermediate.cert.publicKey)).toBe(true);
    expect(x.subjectAltName).toBe(`URI:${ID}`);
    expect(x.ca).toBe(false);

    const parsed = parseCertificate(issued.pem);
    expect(checkWorkloadSvid(parsed)).toBe(ID);
    expect(parsed.authorityKeyId).toEqual(intermediate.cert.subjectKeyId);
    expect(parsed.subjectKeyId).toEqual(keyIdentifier(spkiOf(publicKey)));
    expect(parsed.serialHex).toBe(issued.serialHex);
    expect(x.serialNumber.toLowerCase()).toBe(issued.serialHex);
  });

  it('sets notBefore two minutes back and notAfter at now + ttl (whole seconds)', async () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const now = NOW + 999; // sub-second part is dropped
    const issued = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: 24 * HOUR, now });
    expect(issued.notBefore).toBe(NOW - 120_000);
    expect(issued.notAfter).toBe(NOW + 24 * HOUR);
    const parsed = parseCertificate(issued.der);
    expect([parsed.notBefore, parsed.notAfter]).toEqual([issued.notBefore, issued.notAfter]);
    const x = new X509Certificate(issued.der);
    expect(new Date(x.validFrom).getTime()).toBe(NOW - 120_000);
  });

  it('never lets notAfter pass the signer notAfter', async () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const issued = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: 1000 * DAY, now: NOW });
    expect(issued.notAfter).toBe(intermediate.cert.notAfter);
    const late = intermediate.cert.notAfter - HOUR;
    expect(issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: 24 * HOUR, now: late }).notAfter).toBe(intermediate.cert.notAfter);
  });

  it('refuses to sign with an expired signer (CERT_EXPIRED) and rejects bad lifetimes (TTL_INVALID)', async () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now: intermediate.cert.notAfter }), 'CERT_EXPIRED');
    for (const ttlMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs, now: NOW }), 'TTL_INVALID');
    }
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now: Number.NaN }), 'TTL_INVALID');
  });

  it('uses 128-bit positive serials of exactly 16 bytes, all different', async () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const serials = new Set<string>();
    let highBitsSeen = 0;
    for (let i = 0; i < 600; i++) {
      const issued = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW });
      const { serial } = tbsFields(issued.der);
      const bytes = serial.buf.subarray(serial.contentStart, serial.end);
      expect(bytes.length).toBe(16);
      expect(bytes[0]! & 0x80).toBe(0);
      expect(bytes[0]).toBeGreaterThan(0);
      if (bytes[0]! & 0x40) highBitsSeen++;
      serials.add(issued.serialHex);
    }
    expect(serials.size).toBe(600);
    // The bits below the sign bit are random, not fixed.
    expect(highBitsSeen).toBeGreaterThan(200);
    expect(highBitsSeen).toBeLessThan(400);
  });

  it('writes UTCTime before 2050 and GeneralizedTime from 2050 (openssl reads both)', async () => {
    const now = Date.UTC(2049, 11, 31, 12);
    const rootKeys = await generateKeyPair('ecdsa-p256');
    const root = parseCertificate(issueCaCertificate({ key: rootKeys.privateKey, organization: 'y2050', ttlMs: 30 * DAY, now }).pem);
    const { notBefore, notAfter } = tbsFields(root.der);
    expect(notBefore.tag).toBe(Tag.UTC_TIME);
    expect(notAfter.tag).toBe(Tag.GENERALIZED_TIME);
    expect(root.notAfter).toBe(now + 30 * DAY);
    expect(x509Text(root.pem)).toMatch(/Not After : Jan 30 12:00:00 2050 GMT/);
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const leaf = issueWorkloadCertificate({ signer: { cert: root, key: rootKeys.privateKey }, publicKey, spiffeId: ID, ttlMs: DAY, now });
    expect(tbsFields(leaf.der).notAfter.tag).toBe(Tag.GENERALIZED_TIME);
    expect(parseCertificate(leaf.pem).notAfter).toBe(now + DAY);
  });

  it('adds a CN only when asked, and DNS SANs beside the one URI SAN', async () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const issued = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, dnsNames: ['web.default.svc', '*.example.com'], commonName: ID, ttlMs: HOUR, now: Date.now() });
    const parsed = parseCertificate(issued.pem);
    expect(parsed.subject).toBe(`CN=${ID.replace(/=/g, '\\=')}`);
    expect(parsed.subjectCommonName).toBe(ID);
    expect(parsed.uris).toEqual([ID]);
    expect(parsed.dnsNames).toEqual(['web.default.svc', '*.example.com']);
    expect(x509Text(issued.pem)).toMatch(/URI:spiffe:\/\/cluster.local\/ns\/default\/sa\/web, DNS:web.default.svc, DNS:\*.example.com/);
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, commonName: 'x'.repeat(65), ttlMs: HOUR, now: NOW }), 'CSR_INVALID', /64/);
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, dnsNames: ['bad name'], ttlMs: HOUR, now: NOW }), 'CSR_INVALID');
  });

  it('rejects a SPIFFE ID without a path or an invalid one', async () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: 'spiffe://cluster.local', ttlMs: HOUR, now: NOW }), 'SPIFFE_ID_INVALID', /path/);
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: 'spiffe://cluster.local:80/x', ttlMs: HOUR, now: NOW }), 'SPIFFE_ID_INVALID');
  });

  it('rejects weak and unsupported workload keys', () => {
    const { intermediate } = signers.get('ecdsa-p256')!;
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey: generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }), 'KEY_TOO_WEAK');
    expectCode(() => issueWorkloadCertificate({ signer: intermediate, publicKey: generateKeyPairSync('ed25519').publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }), 'KEY_UNSUPPORTED');
  });

  it('refuses a signer that is not a CA or whose key does not match', async () => {
    const { intermediate, root } = signers.get('ecdsa-p256')!;
    const { publicKey, privateKey } = await generateKeyPair('ecdsa-p256');
    const leaf = parseCertificate(issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }).pem);
    expectCode(() => issueWorkloadCertificate({ signer: { cert: leaf, key: privateKey }, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }), 'NOT_A_CA');
    expectCode(() => issueWorkloadCertificate({ signer: { cert: intermediate.cert, key: root.key }, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }), 'KEY_MISMATCH');
    expectCode(() => issueWorkloadCertificate({ signer: { cert: intermediate.cert, key: intermediate.cert.publicKey }, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }), 'KEY_MISMATCH');
    // The right key still works after the failures (nothing was cached wrongly).
    expect(issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }).pem).toMatch(/BEGIN CERTIFICATE/);
  });
});

describe('issueCaCertificate', () => {
  it.each(['ecdsa-p256', 'ecdsa-p384', 'rsa-2048'] as const)('makes a %s root and intermediate that openssl accepts as CAs', async (type) => {
    const now = Date.now();
    const rootKeys = await generateKeyPair(type);
    const rootIssued = issueCaCertificate({ key: rootKeys.privateKey, organization: 'Example Org', commonName: 'Root CA', trustDomain: 'example.org', ttlMs: 10 * 365 * DAY, now });
    const root = parseCertificate(rootIssued.pem);
    expect(root).toMatchObject({ isCa: true, selfSigned: true, subject: 'O=Example Org, CN=Root CA', issuer: 'O=Example Org, CN=Root CA', uris: ['spiffe://example.org'] });
    expect(root.pathLen).toBeUndefined();
    expect(root.subjectKeyId).toEqual(keyIdentifier(spkiOf(rootKeys.publicKey)));
    expect(root.authorityKeyId).toEqual(root.subjectKeyId);
    expect([...root.keyUsage!].sort()).toEqual(['cRLSign', 'keyCertSign']);
    const rootText = x509Text(rootIssued.pem);
    expect(rootText).toMatch(/X509v3 Basic Constraints: critical\s*\n\s*CA:TRUE\s*\n/);
    expect(rootText).toMatch(/X509v3 Key Usage: critical\s*\n\s*Certificate Sign, CRL Sign\s*\n/);
    expect(rootText).toMatch(/X509v3 Subject Alternative Name: \s*\n\s*URI:spiffe:\/\/example.org\s*\n/);
    expect(rootText).toMatch(/Issuer: O = Example Org, CN = Root CA/);

    const interKeys = await generateKeyPair(type);
    const inter = issueCaCertificate({ key: interKeys.privateKey, signer: { cert: root, key: rootKeys.privateKey }, organization: 'Example Org', commonName: 'Intermediate', trustDomain: 'example.org', ttlMs: 365 * DAY, now, pathLen: 0 });
    const interParsed = parseCertificate(inter.pem);
    expect(interParsed).toMatchObject({ isCa: true, selfSigned: false, pathLen: 0, issuer: 'O=Example Org, CN=Root CA' });
    expect(interParsed.authorityKeyId).toEqual(root.subjectKeyId);
    expect(x509Text(inter.pem)).toMatch(/CA:TRUE, pathlen:0/);
    const rootPath = tmp.file(`ca-root-${type}.pem`, rootIssued.pem);
    expect(opensslVerify({ root: rootPath, cert: tmp.file(`ca-inter-${type}.pem`, inter.pem) }).out).toContain(': OK');
    expect(opensslVerify({ root: rootPath, cert: rootPath }).out).toContain(': OK');
    expect(new X509Certificate(inter.pem).checkIssued(new X509Certificate(rootIssued.pem))).toBe(true);
  });

  it('leaves out the URI SAN and CN when not asked, and accepts an explicit publicKey', async () => {
    const keys = await generateKeyPair('ecdsa-p256');
    const cert = parseCertificate(issueCaCertificate({ key: keys.privateKey, publicKey: keys.publicKey, organization: 'acme', ttlMs: DAY, now: NOW }).pem);
    expect(cert.subject).toBe('O=acme');
    expect(cert.uris).toEqual([]);
    expect(cert.extensions.subjectAltName).toBeUndefined();
  });

  it('caps an intermediate at its signer notAfter and rejects expired signers and pathLen 0 signers', async () => {
    const { root, intermediate } = await makeCa('ecdsa-p256');
    const keys = await generateKeyPair('ecdsa-p256');
    const capped = issueCaCertificate({ key: keys.privateKey, signer: root, organization: 'o', ttlMs: 100 * 365 * DAY, now: NOW });
    expect(capped.notAfter).toBe(root.cert.notAfter);
    expectCode(() => issueCaCertificate({ key: keys.privateKey, signer: root, organization: 'o', ttlMs: DAY, now: root.cert.notAfter + 1 }), 'CERT_EXPIRED');
    expectCode(() => issueCaCertificate({ key: keys.privateKey, signer: intermediate, organization: 'o', ttlMs: DAY, now: NOW }), 'NOT_A_CA', /pathLen 0/);
  });

  it('rejects bad input', async () => {
    const keys = await generateKeyPair('ecdsa-p256');
    const other = await generateKeyPair('ecdsa-p256');
    const base = { key: keys.privateKey, organization: 'o', ttlMs: DAY, now: NOW };
    expectCode(() => issueCaCertificate({ ...base, organization: '' }), 'CERT_GEN_ERROR');
    expectCode(() => issueCaCertificate({ ...base, commonName: 'x'.repeat(65) }), 'CERT_GEN_ERROR');
    expectCode(() => issueCaCertificate({ ...base, pathLen: -1 }), 'CERT_GEN_ERROR');
    expectCode(() => issueCaCertificate({ ...base, ttlMs: 0 }), 'TTL_INVALID');
    expectCode(() => issueCaCertificate({ ...base, trustDomain: 'Bad.Domain' }), 'SPIFFE_ID_INVALID');
    expectCode(() => issueCaCertificate({ ...base, publicKey: other.publicKey }), 'KEY_MISMATCH');
    expectCode(() => issueCaCertificate({ ...base, key: keys.publicKey }), 'KEY_MISMATCH');
    expectCode(() => issueCaCertificate({ ...base, key: generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey }), 'KEY_TOO_WEAK');
    expectCode(() => issueCaCertificate({ ...base, key: generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey }), 'KEY_UNSUPPORTED');
  });
});
