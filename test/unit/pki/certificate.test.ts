import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  generateKeyPair,
  issueCaCertificate,
  keyMatchesCertificate,
  parseCertificate,
  parseCertificates,
  parsePrivateKeyPem,
} from '../../../src/pki/index.js';
import { childrenOf, DerCursor, explicit, parseDer, rawOf, sequence, Tag } from '../../../src/pki/der.js';
import { encodePem } from '../../../src/pki/pem.js';
import { DAY, NOW, expectCode } from './helpers.js';
import { opensslOk, scratch } from './openssl.js';

const tmp = scratch();

function opensslSelfSigned(name: string, keyPem: string, extra: string[] = []): string {
  const keyPath = tmp.file(`${name}.key`, keyPem);
  return opensslOk(['req', '-x509', '-new', '-key', keyPath, '-days', '10', ...extra]);
}

describe('parseCertificate', () => {
  it('reads an openssl certificate and agrees with node:crypto X509Certificate', () => {
    const keyPem = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const pem = opensslSelfSigned('full', keyPem, [
      '-subj', '/C=US/O=Acme, Inc./OU=Eng/CN=web.example',
      '-addext', 'subjectAltName=DNS:web.example,DNS:*.web.example,IP:192.0.2.1,IP:2001:db8::1,URI:spiffe://acme/x,email:ops@acme.test',
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:3',
    ]);
    const cert = parseCertificate(pem);
    const x = new X509Certificate(pem);
    expect(cert.serialHex).toBe(x.serialNumber.toLowerCase().replace(/^(00)+/, ''));
    expect(cert.notBefore).toBe(new Date(x.validFrom).getTime());
    expect(cert.notAfter).toBe(new Date(x.validTo).getTime());
    expect(cert.subject).toBe('C=US, O=Acme\\, Inc., OU=Eng, CN=web.example');
    expect(cert.subjectCommonName).toBe('web.example');
    expect(cert.dnsNames).toEqual(['web.example', '*.web.example']);
    expect(cert.ipAddresses).toEqual(['192.0.2.1', '2001:db8::1']);
    expect(cert.uris).toEqual(['spiffe://acme/x']);
    expect(cert.emails).toEqual(['ops@acme.test']);
    expect(cert).toMatchObject({ isCa: true, pathLen: 3, selfSigned: true, version: 3, key: { type: 'ecdsa-p384' } });
    expect(cert.der).toEqual(x.raw);
    expect(cert.pem).toBe(pem);
    expect(keyMatchesCertificate(parsePrivateKeyPem(keyPem), cert)).toBe(true);
    expect(keyMatchesCertificate(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey, cert)).toBe(false);
    expect(parseCertificate(cert.der).serialHex).toBe(cert.serialHex);
  });

  it('reads RSA certificates and PKCS#1 keys from other tools', () => {
    const keyPem = generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    const cert = parseCertificate(opensslSelfSigned('rsa', keyPem, ['-subj', '/O=istio/CN=Root CA']));
    expect(cert.key).toEqual({ type: 'rsa-4096', algorithm: 'rsa', bits: 4096 });
    expect(cert.signatureAlgorithm.name).toBe('sha256WithRSAEncryption');
    expect(keyMatchesCertificate(parsePrivateKeyPem(keyPem), cert)).toBe(true);
  });

  it('parses bundles with parseCertificates and refuses several blocks in parseCertificate', async () => {
    const a = await generateKeyPair('ecdsa-p256');
    const b = await generateKeyPair('rsa-2048');
    const ca = (key: typeof a.privateKey, o: string) => issueCaCertificate({ key, organization: o, ttlMs: DAY, now: NOW }).pem;
    const bundle = `# roots\n${ca(a.privateKey, 'a')}\n${ca(b.privateKey, 'b')}`;
    expect(parseCertificates(bundle).map((c) => c.subject)).toEqual(['O=a', 'O=b']);
    expectCode(() => parseCertificate(bundle), 'PEM_MULTIPLE');
    expectCode(() => parseCertificates('nothing here'), 'PEM_INVALID');
    expectCode(() => parseCertificates(bundle + encodePem('PRIVATE KEY', Buffer.from('00', 'hex'))), 'PEM_INVALID', /PRIVATE KEY/);
    expectCode(() => parseCertificate(a.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string), 'PEM_INVALID');
  });

  it('rejects truncated, padded and oversized DER', async () => {
    const a = await generateKeyPair('ecdsa-p256');
    const { der } = issueCaCertificate({ key: a.privateKey, organization: 'a', ttlMs: DAY, now: NOW });
    expectCode(() => parseCertificate(der.subarray(0, der.length - 1)), 'DER_INVALID');
    expectCode(() => parseCertificate(Buffer.concat([der, Buffer.from([0, 0])])), 'DER_INVALID', /trailing/);
    expectCode(() => parseCertificate(encodePem('CERTIFICATE', der.subarray(0, 40))), 'DER_INVALID');
    expectCode(() => parseCertificate(Buffer.alloc(70_000)), 'INPUT_TOO_LARGE');
  });

  it('rejects weak and unsupported keys and signature algorithms', () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expectCode(() => parseCertificate(opensslSelfSigned('weak', weak, ['-subj', '/CN=weak'])), 'KEY_TOO_WEAK');
    const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expectCode(() => parseCertificate(opensslSelfSigned('ed', ed, ['-subj', '/CN=ed'])), 'KEY_UNSUPPORTED');
    const p521 = generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expectCode(() => parseCertificate(opensslSelfSigned('p521', p521, ['-subj', '/CN=p521'])), 'KEY_UNSUPPORTED');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expectCode(() => parseCertificate(opensslSelfSigned('sha1', rsa, ['-subj', '/CN=sha1', '-sha1'])), 'SIGNATURE_INVALID', /unsupported signature algorithm/);
  });

  it('rejects a certificate with the same extension twice', async () => {
    const a = await generateKeyPair('ecdsa-p256');
    const { der } = issueCaCertificate({ key: a.privateKey, organization: 'a', ttlMs: DAY, now: NOW });
    const [tbs, alg, sig] = childrenOf(parseDer(der));
    const fields = childrenOf(tbs!);
    const extsWrapper = fields.at(-1)!;
    expect(extsWrapper.tag).toBe(0xa3);
    const exts = childrenOf(new DerCursor(extsWrapper).next(Tag.SEQUENCE)).map(rawOf);
    const dupTbs = sequence(...fields.slice(0, -1).map(rawOf), explicit(3, sequence(...exts, exts[0]!)));
    expectCode(() => parseCertificate(sequence(dupTbs, rawOf(alg!), rawOf(sig!))), 'CERT_INVALID', /twice/);
  });
});
