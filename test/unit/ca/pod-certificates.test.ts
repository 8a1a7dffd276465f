/** The PodCertificateRequest policy (pure): every refusal with its reason, the lifetime and beginRefreshAt rules. */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { beginRefreshAt, decidePodCertificate, issuedLifetimeProblem, type PodCertificateSpec } from '../../../src/ca/pod-certificates.js';
import { BACKDATE_MS } from '../../../src/pki/index.js';
import { proofOfPossession, stubPkcs10Request } from '../../harness/pod-certificates.js';

const HOUR = 3600_000;
const UID = '6d3b7c1e-0000-4000-8000-000000000001';
const policy = { trustDomain: 'cluster.local', maxTtlMs: 2160 * HOUR };
const ec = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
const spec = (over: Partial<PodCertificateSpec> = {}): PodCertificateSpec => ({
  signerName: 'citadel.io/workload',
  podName: 'web-0',
  podUID: UID,
  serviceAccountName: 'web',
  maxExpirationSeconds: 86_400,
  stubPKCS10Request: stubPkcs10Request('ECDSAP256', ec()).toString('base64'),
  ...over,
});
const pod = { uid: UID, serviceAccountName: 'web' };

describe('decidePodCertificate', () => {
  it('issues the ServiceAccount SVID for exactly maxExpirationSeconds, backdate included', () => {
    const d = decidePodCertificate('shop', spec(), pod, policy);
    expect(d).toMatchObject({ action: 'issue', spiffeId: 'spiffe://cluster.local/ns/shop/sa/web', keyType: 'ecdsa-p256', ttlMs: 24 * HOUR - BACKDATE_MS });
  });

  it('caps the lifetime at the CA maximum, and denies when that is under the API minimum of an hour', () => {
    expect(decidePodCertificate('shop', spec({ maxExpirationSeconds: 91 * 86_400 }), pod, policy)).toMatchObject({ ttlMs: 2160 * HOUR - BACKDATE_MS });
    const d = decidePodCertificate('shop', spec(), pod, { ...policy, maxTtlMs: HOUR / 2 });
    expect(d).toMatchObject({ action: 'deny', reason: 'LifetimeNotAllowed' });
    expect(d.action !== 'issue' && d.message).toMatch(/at most 1800s \(--max-workload-cert-ttl\)/);
  });

  it('denies when the pod is gone, replaced (new uid) or runs as another ServiceAccount', () => {
    expect(decidePodCertificate('shop', spec(), undefined, policy)).toMatchObject({ action: 'deny', reason: 'PodNotFound' });
    expect(decidePodCertificate('shop', spec(), { ...pod, uid: 'other' }, policy)).toMatchObject({ action: 'deny', reason: 'PodNotFound' });
    expect(decidePodCertificate('shop', spec(), { ...pod, serviceAccountName: 'admin' }, policy)).toMatchObject({ action: 'deny', reason: 'PodMismatch' });
  });

  it('denies unsupported keys with UnsupportedKeyType, naming the key types to use', () => {
    const d = decidePodCertificate('shop', spec({ stubPKCS10Request: stubPkcs10Request('ED25519', generateKeyPairSync('ed25519').privateKey).toString('base64') }), pod, policy);
    expect(d).toMatchObject({ action: 'deny', reason: 'UnsupportedKeyType' });
    expect(d.action !== 'issue' && d.message).toMatch(/ed25519.*keyType to ECDSAP256, ECDSAP384, RSA3072 or RSA4096/);
  });

  it('denies a proof of possession that does not match the key', () => {
    const key = ec();
    const pkix = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const d = decidePodCertificate('shop', spec({ stubPKCS10Request: undefined, pkixPublicKey: pkix, proofOfPossession: proofOfPossession(key, UID).toString('base64') }), pod, policy);
    expect(d).toMatchObject({ action: 'deny', reason: 'InvalidProofOfPossession' });
  });
});

describe('beginRefreshAt and the issued lifetime', () => {
  const nb = Date.UTC(2026, 0, 1);
  it('is halfway, within [notBefore + 10 min, notAfter - 10 min], in whole seconds', () => {
    expect(beginRefreshAt(nb, nb + 24 * HOUR)).toBe(nb + 12 * HOUR);
    expect(beginRefreshAt(nb, nb + HOUR + 1001)).toBe(nb + HOUR / 2);
    const r = beginRefreshAt(nb, nb + HOUR);
    expect(r).toBeGreaterThanOrEqual(nb + 10 * 60_000);
    expect(r).toBeLessThanOrEqual(nb + HOUR - 10 * 60_000);
    expect(r % 1000).toBe(0);
  });
  it('fails a certificate the signing certificate cut under an hour', () => {
    expect(issuedLifetimeProblem(nb, nb + HOUR)).toBeUndefined();
    expect(issuedLifetimeProblem(nb, nb + HOUR - 1000)).toMatchObject({ action: 'fail', reason: 'SignerExpiresTooSoon' });
  });
});
