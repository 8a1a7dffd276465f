import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KEY_TYPES, describeKey, generateKeyPair, parsePrivateKeyPem, privateKeyToPem, samePublicKey } from '../../../src/pki/index.js';
import { encodePem } from '../../../src/pki/pem.js';
import { expectCode } from './helpers.js';
import { opensslOk, scratch } from './openssl.js';

const tmp = scratch();

describe('keys', () => {
  it.each([
    ['ecdsa-p256', { algorithm: 'ecdsa', bits: 256, curve: 'P-256' }],
    ['ecdsa-p384', { algorithm: 'ecdsa', bits: 384, curve: 'P-384' }],
    ['rsa-2048', { algorithm: 'rsa', bits: 2048 }],
    ['rsa-3072', { algorithm: 'rsa', bits: 3072 }],
    ['rsa-4096', { algorithm: 'rsa', bits: 4096 }],
  ] as const)('generates %s keys and round-trips them through PKCS#8 PEM', async (type, info) => {
    const { privateKey, publicKey } = await generateKeyPair(type);
    expect(describeKey(privateKey)).toEqual({ type, ...info });
    expect(describeKey(publicKey)).toEqual({ type, ...info });
    const pem = privateKeyToPem(privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const back = parsePrivateKeyPem(pem);
    expect(samePublicKey(back, publicKey)).toBe(true);
    // openssl reads what we write.
    expect(opensslOk(['pkey', '-noout', '-text'], pem)).toMatch(type.startsWith('rsa') ? /Private-Key: \(\d+ bit/ : /(prime256v1|secp384r1)/);
  });

  it('lists every key type', () => {
    expect(KEY_TYPES).toEqual(['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']);
  });

  it('reads PKCS#1 and SEC1 keys written by node', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pkcs1 = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    expect(pkcs1).toMatch(/BEGIN RSA PRIVATE KEY/);
    expect(samePublicKey(parsePrivateKeyPem(pkcs1), rsa.publicKey)).toBe(true);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const sec1 = ec.privateKey.export({ type: 'sec1', format: 'pem' }) as string;
    expect(sec1).toMatch(/BEGIN EC PRIVATE KEY/);
    expect(samePublicKey(parsePrivateKeyPem(sec1), ec.publicKey)).toBe(true);
  });

  it('reads PKCS#1 and SEC1 keys written by openssl (with its EC PARAMETERS block)', () => {
    const rsaPath = tmp.file('rsa.key', '');
    opensslOk(['genrsa', '-traditional', '-out', rsaPath, '2048']);
    const rsaPem = opensslOk(['rsa', '-in', rsaPath, '-traditional']);
    expect(rsaPem).toMatch(/BEGIN RSA PRIVATE KEY/);
    expect(describeKey(parsePrivateKeyPem(rsaPem)).type).toBe('rsa-2048');

    const ecPem = opensslOk(['ecparam', '-name', 'prime256v1', '-genkey']);
    expect(ecPem).toMatch(/BEGIN EC PARAMETERS[\s\S]*BEGIN EC PRIVATE KEY/);
    const key = parsePrivateKeyPem(ecPem);
    expect(describeKey(key).type).toBe('ecdsa-p256');
    const pubFromOpenssl = opensslOk(['ec', '-pubout'], ecPem);
    expect(privateKeyToPem(key)).toMatch(/BEGIN PRIVATE KEY/);
    expect(opensslOk(['pkey', '-pubout'], privateKeyToPem(key))).toBe(pubFromOpenssl);
  });

  it('rejects RSA under 2048 bits as KEY_TOO_WEAK', () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expectCode(() => describeKey(weak.publicKey), 'KEY_TOO_WEAK', /1024/);
    expectCode(() => parsePrivateKeyPem(weak.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string), 'KEY_TOO_WEAK');
    expectCode(() => parsePrivateKeyPem(weak.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string), 'KEY_TOO_WEAK');
  });

  it('rejects other curves, Ed25519, DSA, RSA-PSS and odd RSA sizes as KEY_UNSUPPORTED', () => {
    const unsupported = [
      generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey,
      generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey,
      generateKeyPairSync('ed25519').privateKey,
      generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }).privateKey,
      generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).privateKey,
      generateKeyPairSync('rsa', { modulusLength: 2560 }).privateKey,
    ];
    for (const key of unsupported) {
      expectCode(() => describeKey(key), 'KEY_UNSUPPORTED');
      expectCode(() => parsePrivateKeyPem(key.export({ type: 'pkcs8', format: 'pem' }) as string), 'KEY_UNSUPPORTED');
    }
  });

  it('rejects encrypted keys, several keys, no key, other blocks and broken DER', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = ec.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const encrypted = ec.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }) as string;
    expectCode(() => parsePrivateKeyPem(encrypted), 'KEY_UNSUPPORTED', /encrypted/);
    expectCode(() => parsePrivateKeyPem(pem + pem), 'PEM_MULTIPLE');
    expectCode(() => parsePrivateKeyPem('not a key'), 'PEM_INVALID');
    expectCode(() => parsePrivateKeyPem(ec.publicKey.export({ type: 'spki', format: 'pem' }) as string), 'PEM_INVALID', /PUBLIC KEY/);
    expectCode(() => parsePrivateKeyPem(encodePem('PRIVATE KEY', Buffer.from('3003020100', 'hex'))), 'DER_INVALID');
    expectCode(() => parsePrivateKeyPem(pem + ' '.repeat(70_000)), 'INPUT_TOO_LARGE');
    expectCode(() => privateKeyToPem(ec.publicKey), 'KEY_UNSUPPORTED');
  });
});

describe('RSA public exponents', () => {
  it('rejects e = 1, even and oversized exponents (forgeable or nonsensical keys), in keys and in CSRs', async () => {
    const { createPublicKey } = await import('node:crypto');
    const { parseCsr } = await import('../../../src/pki/index.js');
    const { sequence, integer, bitString, oid, nullValue, implicit } = await import('../../../src/pki/der.js');
    const good = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const jwk = good.export({ format: 'jwk' });
    for (const e of [1n, 2n, 65536n, 2n ** 40n + 1n]) {
      const hexE = e.toString(16);
      const eBytes = Buffer.from(hexE.length % 2 ? `0${hexE}` : hexE, 'hex');
      const key = createPublicKey({ key: { ...jwk, e: eBytes.toString('base64url') }, format: 'jwk' });
      expectCode(() => describeKey(key), 'KEY_UNSUPPORTED', /exponent/);
      // A CSR "signed" with e = 1 needs no private key at all: the signature is the padded digest itself.
      const n = Buffer.from(jwk.n!, 'base64url');
      const spki = sequence(sequence(oid('1.2.840.113549.1.1.1'), nullValue()), bitString(sequence(integer(n), integer(eBytes))));
      const cri = sequence(integer(0), sequence(), spki, implicit(0, Buffer.alloc(0), true));
      const csr = sequence(cri, sequence(oid('1.2.840.113549.1.1.11'), nullValue()), bitString(Buffer.alloc(256, 1)));
      expectCode(() => parseCsr(encodePem('CERTIFICATE REQUEST', csr)), 'KEY_UNSUPPORTED', /exponent/);
    }
    expect(describeKey(good).type).toBe('rsa-2048');
  });
});

describe('public keys from SubjectPublicKeyInfo', () => {
  it('rejects EC points that are not on the curve', async () => {
    const { publicKeyFromSpki } = await import('../../../src/pki/keys.js');
    for (const namedCurve of ['P-256', 'P-384']) {
      const spki = Buffer.from(generateKeyPairSync('ec', { namedCurve }).publicKey.export({ type: 'spki', format: 'der' }));
      expect(publicKeyFromSpki(spki).key.curve).toBe(namedCurve);
      spki[spki.length - 1] = spki[spki.length - 1]! ^ 1;
      expectCode(() => publicKeyFromSpki(spki), 'KEY_UNSUPPORTED');
    }
  });

  it('imports keys that equal what OpenSSL decodes, and describes them as OpenSSL does', async () => {
    const { publicKeyFromSpki, spkiOf } = await import('../../../src/pki/keys.js');
    const pairs = [
      generateKeyPairSync('rsa', { modulusLength: 2048 }),
      generateKeyPairSync('rsa', { modulusLength: 3072, publicExponent: 3 }),
      generateKeyPairSync('rsa', { modulusLength: 4096 }),
      generateKeyPairSync('ec', { namedCurve: 'P-256' }),
      generateKeyPairSync('ec', { namedCurve: 'P-384' }),
    ];
    for (const pair of pairs) {
      const spki = pair.publicKey.export({ type: 'spki', format: 'der' });
      const { publicKey, key } = publicKeyFromSpki(spki);
      expect(publicKey.equals(pair.publicKey)).toBe(true);
      expect(spkiOf(publicKey)).toEqual(spki);
      // The key info is read from the DER; OpenSSL's details of the same key must say the same.
      expect(key).toEqual(describeKey(pair.publicKey));
    }
  });

  it('refuses the keys the policy refuses, read from the DER as from OpenSSL', async () => {
    const { publicKeyFromSpki } = await import('../../../src/pki/keys.js');
    for (const [modulusLength, code] of [[1024, 'KEY_TOO_WEAK'], [2040, 'KEY_TOO_WEAK'], [2056, 'KEY_UNSUPPORTED'], [2560, 'KEY_UNSUPPORTED']] as const) {
      const pub = generateKeyPairSync('rsa', { modulusLength }).publicKey;
      expectCode(() => describeKey(pub), code);
      expectCode(() => publicKeyFromSpki(pub.export({ type: 'spki', format: 'der' })), code, new RegExp(String(modulusLength)));
    }
  });
});
