import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCsr, generateKeyPair, parseCsr, samePublicKey, type KeyType } from '../../../src/pki/index.js';
import { encodePem } from '../../../src/pki/pem.js';
import { childrenOf, parseDer, rawOf, sequence } from '../../../src/pki/der.js';
import { decodeSinglePem } from '../../../src/pki/pem.js';
import { expectCode } from './helpers.js';
import { opensslOk, scratch } from './openssl.js';

const tmp = scratch();
const ID = 'spiffe://cluster.local/ns/default/sa/web';
const csrDer = (pem: string) => decodeSinglePem(pem, ['CERTIFICATE REQUEST'], 'csr').der;
const asCsr = (der: Buffer) => encodePem('CERTIFICATE REQUEST', der);

describe('createCsr', () => {
  it.each(['ecdsa-p256', 'ecdsa-p384', 'rsa-2048'] as const)('makes a %s CSR that openssl verifies, with the SPIFFE ID as its only SAN', async (type: KeyType) => {
    const { privateKey, publicKey } = await generateKeyPair(type);
    const pem = createCsr({ key: privateKey, spiffeId: ID });
    const text = opensslOk(['req', '-verify', '-noout', '-text'], pem);
    expect(text).toMatch(/Subject:\s*\n/);
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical\s*\n\s*URI:spiffe:\/\/cluster.local\/ns\/default\/sa\/web\s*\n/);
    expect(text).toMatch(type === 'rsa-2048' ? /sha256WithRSAEncryption/ : type === 'ecdsa-p384' ? /ecdsa-with-SHA384/ : /ecdsa-with-SHA256/);
    const parsed = parseCsr(pem);
    expect(parsed.uris).toEqual([ID]);
    expect(parsed.key.type).toBe(type);
    expect(samePublicKey(parsed.publicKey, publicKey)).toBe(true);
    expect(parsed.subjectCommonName).toBeUndefined();
  });

  it('refuses invalid SPIFFE IDs and unsupported keys', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
    expectCode(() => createCsr({ key: privateKey, spiffeId: 'spiffe://Bad/x' }), 'SPIFFE_ID_INVALID');
    expectCode(() => createCsr({ key: publicKey, spiffeId: ID }), 'KEY_UNSUPPORTED');
    expectCode(() => createCsr({ key: generateKeyPairSync('ed25519').privateKey, spiffeId: ID }), 'KEY_UNSUPPORTED');
  });
});

describe('parseCsr', () => {
  it('reads an openssl CSR with an empty subject and a URI SAN', () => {
    const keyPath = tmp.file('p256.key', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }));
    const pem = opensslOk(['req', '-new', '-key', keyPath, '-subj', '/', '-addext', `subjectAltName=URI:${ID}`]);
    const parsed = parseCsr(pem);
    expect(parsed.uris).toEqual([ID]);
    expect(parsed.key.type).toBe('ecdsa-p256');
  });

  it('reports every requested SAN type and the CN (the CA decides what to use)', () => {
    const keyPath = tmp.file('rsa.key', generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey.export({ type: 'pkcs1', format: 'pem' }));
    const pem = opensslOk(['req', '-new', '-key', keyPath, '-subj', '/O=acme/CN=web.example', '-addext',
      `subjectAltName=URI:${ID},URI:spiffe://other/x,DNS:web.example,IP:10.1.2.3,IP:fd00::1,email:a@b.c`]);
    const parsed = parseCsr(pem);
    expect(parsed).toMatchObject({
      uris: [ID, 'spiffe://other/x'],
      dnsNames: ['web.example'],
      ipAddresses: ['10.1.2.3', 'fd00::1'],
      emails: ['a@b.c'],
      subjectCommonName: 'web.example',
    });
    expect(parsed.key).toEqual({ type: 'rsa-3072', algorithm: 'rsa', bits: 3072 });
  });

  it('reads a CSR without any extensions', () => {
    const keyPath = tmp.file('p384.key', generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const parsed = parseCsr(opensslOk(['req', '-new', '-key', keyPath, '-subj', '/CN=x']));
    expect(parsed.uris).toEqual([]);
    expect(parsed.key.type).toBe('ecdsa-p384');
  });

  it('rejects a CSR whose signature does not verify', async () => {
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const der = Buffer.from(csrDer(createCsr({ key: privateKey, spiffeId: ID })));
    // Flip a byte of the SAN inside the signed part (the URI text), keeping the DER well formed.
    const at = der.indexOf(Buffer.from('default'));
    der[at] = 'D'.charCodeAt(0);
    expectCode(() => parseCsr(asCsr(der)), 'SIGNATURE_INVALID');
  });

  it('rejects a CSR signed by another key', async () => {
    const a = await generateKeyPair('ecdsa-p256');
    const b = await generateKeyPair('ecdsa-p256');
    const derA = csrDer(createCsr({ key: a.privateKey, spiffeId: ID }));
    const derB = csrDer(createCsr({ key: b.privateKey, spiffeId: ID }));
    const parts = (d: Buffer) => childrenOf(parseDer(d)).map(rawOf);
    const [criA, algA] = parts(derA);
    const [, , sigB] = parts(derB);
    const fixed = sequence(criA!, algA!, sigB!);
    expectCode(() => parseCsr(asCsr(fixed)), 'SIGNATURE_INVALID');
  });

  it('rejects weak and unsupported keys in CSRs', () => {
    const weakPath = tmp.file('weak.key', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expectCode(() => parseCsr(opensslOk(['req', '-new', '-key', weakPath, '-subj', '/'])), 'KEY_TOO_WEAK');
    for (const [name, key] of [
      ['ed25519', generateKeyPairSync('ed25519').privateKey],
      ['p521', generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey],
      ['k256', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey],
    ] as const) {
      const path = tmp.file(`${name}.key`, key.export({ type: 'pkcs8', format: 'pem' }));
      expectCode(() => parseCsr(opensslOk(['req', '-new', '-key', path, '-subj', '/'])), 'KEY_UNSUPPORTED');
    }
  });

  it('rejects SHA-1 signatures', () => {
    const keyPath = tmp.file('sha1.key', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expectCode(() => parseCsr(opensslOk(['req', '-new', '-sha1', '-key', keyPath, '-subj', '/'])), 'SIGNATURE_INVALID', /unsupported signature algorithm/);
  });

  it('rejects bad PEM, several CSRs, truncated or padded DER and oversized input', async () => {
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const pem = createCsr({ key: privateKey, spiffeId: ID });
    const der = csrDer(pem);
    expectCode(() => parseCsr('garbage'), 'PEM_INVALID');
    expectCode(() => parseCsr(pem + pem), 'PEM_MULTIPLE');
    expectCode(() => parseCsr(pem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE')), 'PEM_INVALID');
    expectCode(() => parseCsr(asCsr(der.subarray(0, der.length - 1))), 'DER_INVALID');
    expectCode(() => parseCsr(asCsr(Buffer.concat([der, Buffer.from([0])]))), 'DER_INVALID', /trailing/);
    expectCode(() => parseCsr(pem + '\n'.repeat(65_536)), 'INPUT_TOO_LARGE');
    // Old "NEW CERTIFICATE REQUEST" label is accepted.
    expect(parseCsr(pem.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST')).uris).toEqual([ID]);
  });

  it('rejects a CSR with a version other than 0', async () => {
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const der = Buffer.from(csrDer(createCsr({ key: privateKey, spiffeId: ID })));
    const at = der.indexOf(Buffer.from([0x02, 0x01, 0x00]));
    der[at + 2] = 1;
    expectCode(() => parseCsr(asCsr(der)), 'CSR_INVALID', /version/);
  });
});
