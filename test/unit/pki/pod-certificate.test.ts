/**
 * podCertificatePublicKey against requests built the way kubelets build them (the harness's kubelet simulator:
 * 1.36 stub PKCS#10, 1.34/1.35 pkixPublicKey + proofOfPossession), with openssl as an independent check that the
 * stub is a well-formed, correctly signed CSR.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { podCertificatePublicKey, spkiOf } from '../../../src/pki/index.js';
import { proofOfPossession, stubPkcs10Request, type PodCertificateKeyType } from '../../harness/pod-certificates.js';
import { expectCode } from './helpers.js';
import { opensslOk } from './openssl.js';

const UID = '0b7f4c52-9a7e-4d0e-8f4a-3c1f0e2d9b11';
const keyOf = (type: PodCertificateKeyType) => {
  switch (type) {
    case 'ECDSAP256': return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    case 'ECDSAP384': return generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    case 'ECDSAP521': return generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey;
    case 'RSA3072': return generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
    case 'RSA4096': return generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey;
    case 'ED25519': return generateKeyPairSync('ed25519').privateKey;
  }
};
const spki = (k: ReturnType<typeof keyOf>) => spkiOf(k);

describe('podCertificatePublicKey', () => {
  it.each(['ECDSAP256', 'ECDSAP384', 'RSA3072'] as const)('takes the key of a 1.36 stub CSR (%s), which openssl verifies too', (type) => {
    const key = keyOf(type);
    const csr = stubPkcs10Request(type, key);
    expect(opensslOk(['req', '-inform', 'DER', '-noout', '-verify'], csr)).toBe('');
    const got = podCertificatePublicKey({ stubPKCS10Request: csr, podUid: UID });
    expect(spkiOf(got.publicKey).equals(spki(key))).toBe(true);
  });

  it.each(['ECDSAP256', 'RSA3072'] as const)('takes pkixPublicKey with a proof of possession over the pod UID (%s)', (type) => {
    const key = keyOf(type);
    const got = podCertificatePublicKey({ pkixPublicKey: spki(key), proofOfPossession: proofOfPossession(key, UID), podUid: UID });
    expect(got.key.algorithm).toBe(type === 'RSA3072' ? 'rsa' : 'ecdsa');
  });

  it.each(['ED25519', 'ECDSAP521'] as const)('refuses %s keys as unsupported, in either form', (type) => {
    const key = keyOf(type);
    expectCode(() => podCertificatePublicKey({ stubPKCS10Request: stubPkcs10Request(type, key), podUid: UID }), 'KEY_UNSUPPORTED');
    expectCode(() => podCertificatePublicKey({ pkixPublicKey: spki(key), proofOfPossession: proofOfPossession(key, UID), podUid: UID }), 'KEY_UNSUPPORTED');
  });

  it('refuses a proof made with another key, for another pod, or missing', () => {
    const key = keyOf('ECDSAP256');
    const other = keyOf('ECDSAP256');
    expectCode(() => podCertificatePublicKey({ pkixPublicKey: spki(key), proofOfPossession: proofOfPossession(other, UID), podUid: UID }), 'SIGNATURE_INVALID', /proofOfPossession does not verify/);
    expectCode(() => podCertificatePublicKey({ pkixPublicKey: spki(key), proofOfPossession: proofOfPossession(key, 'another-uid'), podUid: UID }), 'SIGNATURE_INVALID');
    expectCode(() => podCertificatePublicKey({ pkixPublicKey: spki(key), podUid: UID }), 'SIGNATURE_INVALID', /without proofOfPossession/);
    const rsa = keyOf('RSA3072');
    expectCode(() => podCertificatePublicKey({ pkixPublicKey: spki(rsa), proofOfPossession: proofOfPossession(keyOf('RSA3072'), UID), podUid: UID }), 'SIGNATURE_INVALID');
  });

  it('refuses a stub CSR whose signature does not verify, both forms at once, and no key at all', () => {
    const key = keyOf('ECDSAP256');
    const csr = stubPkcs10Request('ECDSAP256', key);
    const broken = Buffer.from(csr);
    broken[broken.length - 3]! ^= 0x01;
    expectCode(() => podCertificatePublicKey({ stubPKCS10Request: broken, podUid: UID }), 'SIGNATURE_INVALID');
    expectCode(() => podCertificatePublicKey({ stubPKCS10Request: csr, pkixPublicKey: spki(key), podUid: UID }), 'CSR_INVALID', /both/);
    expectCode(() => podCertificatePublicKey({ podUid: UID }), 'CSR_INVALID', /no public key/);
    expectCode(() => podCertificatePublicKey({ stubPKCS10Request: Buffer.alloc(11 * 1024, 1), podUid: UID }), 'CSR_INVALID', /larger than/);
  });
});
