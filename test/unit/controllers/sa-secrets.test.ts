import { beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, privateKeyToPem } from '../../../src/pki/index.js';
import {
  decideSaSecret,
  namespaceWantsSaSecrets,
  rotationTime,
  serviceAccountOfSecret,
  type SaSecretInput,
} from '../../../src/controllers/sa-secrets.js';
import type { SecretObject } from '../../../src/controllers/objects.js';
import { DEFAULT_EXCLUDED_NAMESPACES, type NamespaceFilter } from '../../../src/controllers/namespaces.js';
import { parseLabelSelector } from '../../../src/controllers/selector.js';
import { createTestAuthority, type TestAuthority } from '../../support/test-authority.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const NS = { metadata: { name: 'shop', labels: { 'citadel.io/sa-secrets': 'enabled' } } };
const SA = { metadata: { name: 'cart', namespace: 'shop', uid: 'sa-uid-1' } };
const ID = 'spiffe://cluster.local/ns/shop/sa/cart';
const DAY = 24 * 3600_000;

let ca: TestAuthority;
let now: number;

async function secretFor(opts: { id?: string; ttlMs?: number; otherKey?: boolean; root?: string } = {}): Promise<SecretObject> {
  const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
  const issued = ca.issueWorkload({ publicKey, spiffeId: opts.id ?? ID, ttlMs: opts.ttlMs ?? DAY });
  const keyPem = opts.otherKey ? privateKeyToPem((await generateKeyPair('ecdsa-p256')).privateKey) : privateKeyToPem(privateKey);
  return {
    type: 'istio.io/key-and-cert',
    metadata: {
      name: 'istio.cart',
      namespace: 'shop',
      uid: 'secret-uid',
      resourceVersion: '7',
      labels: { 'app.kubernetes.io/managed-by': 'citadel' },
      ownerReferences: [{ apiVersion: 'v1', kind: 'ServiceAccount', name: 'cart', uid: 'sa-uid-1' }],
    },
    data: { 'key.pem': b64(keyPem), 'cert-chain.pem': b64(issued.chain.slice(0, -1).join('')), 'root-cert.pem': b64(opts.root ?? ca.trustBundlePem()) },
  };
}

const all: NamespaceFilter = { selector: parseLabelSelector(''), excluded: new Set(DEFAULT_EXCLUDED_NAMESPACES) };

function input(over: Partial<SaSecretInput>): SaSecretInput {
  return {
    namespaceName: 'shop',
    filter: all,
    serviceAccountName: 'cart',
    namespace: NS,
    serviceAccount: SA,
    secret: undefined,
    mode: 'labeled',
    trustDomain: 'cluster.local',
    bundlePem: ca.trustBundlePem(),
    now,
    gracePeriodRatio: 0.5,
    ...over,
  };
}

beforeAll(async () => {
  ca = await createTestAuthority();
  now = Date.now();
});

describe('namespaceWantsSaSecrets', () => {
  it('follows the mode and the namespace label', () => {
    const plain = { metadata: { name: 'x' } };
    expect(namespaceWantsSaSecrets('labeled', NS)).toBe(true);
    expect(namespaceWantsSaSecrets('labeled', plain)).toBe(false);
    expect(namespaceWantsSaSecrets('labeled', { metadata: { name: 'x', labels: { 'citadel.io/sa-secrets': 'disabled' } } })).toBe(false);
    expect(namespaceWantsSaSecrets('all', plain)).toBe(true);
    expect(namespaceWantsSaSecrets('off', NS)).toBe(false);
    expect(namespaceWantsSaSecrets('all', { metadata: { name: 'x' }, status: { phase: 'Terminating' } })).toBe(false);
    expect(namespaceWantsSaSecrets('all', undefined)).toBe(false);
  });
});

describe('serviceAccountOfSecret / rotationTime', () => {
  it('maps istio.<sa> back to the ServiceAccount', () => {
    expect(serviceAccountOfSecret('istio.cart')).toBe('cart');
    expect(serviceAccountOfSecret('istio.')).toBeUndefined();
    expect(serviceAccountOfSecret('cacerts')).toBeUndefined();
  });
  it('rotates at the ratio of the life counted from issuance, not from the backdated notBefore', () => {
    const issuedAt = 1_000_000_000;
    expect(rotationTime(issuedAt - 120_000, issuedAt + DAY, 0.5)).toBe(issuedAt + DAY / 2);
    expect(rotationTime(issuedAt - 120_000, issuedAt + 10_000, 0.5)).toBe(issuedAt + 5_000);
    expect(rotationTime(issuedAt, issuedAt + 60_000, 0.5)).toBe(issuedAt + 60_000); // no backdate: due at expiry at the latest
  });
  it('never rotates sooner than the minimum interval after issuance, nor later than expiry', () => {
    const issuedAt = 1_000_000_000;
    // Cut short to 20 s by the signer: half-life would be 10 s; the floor makes it 30 s, capped at expiry (20 s).
    expect(rotationTime(issuedAt - 120_000, issuedAt + 20_000, 0.5, 30_000)).toBe(issuedAt + 20_000);
    expect(rotationTime(issuedAt - 120_000, issuedAt + 50_000, 0.5, 30_000)).toBe(issuedAt + 30_000);
    expect(rotationTime(issuedAt - 120_000, issuedAt + DAY, 0.5, 30_000)).toBe(issuedAt + DAY / 2);
  });
});

describe('decideSaSecret', () => {
  it('creates a missing secret in a selected namespace only', () => {
    expect(decideSaSecret(input({}))).toEqual({ action: 'create', reason: 'secret missing' });
    expect(decideSaSecret(input({ namespace: { metadata: { name: 'shop' } } }))).toEqual({ action: 'none', reason: 'namespace not selected for ServiceAccount secrets' });
    expect(decideSaSecret(input({ mode: 'off' })).action).toBe('none');
    expect(decideSaSecret(input({ mode: 'all', namespace: { metadata: { name: 'shop' } } })).action).toBe('create');
    expect(decideSaSecret(input({ bundlePem: '' })).action).toBe('none');
  });

  it('leaves a good secret alone and asks to be rechecked at its rotation time', async () => {
    const secret = await secretFor();
    const d = decideSaSecret(input({ secret }));
    expect(d.action).toBe('none');
    if (d.action !== 'none') return;
    expect(d.reason).toBe('up to date');
    expect(d.recheckAt).toBeGreaterThan(now + DAY / 2 - 60_000);
    expect(d.recheckAt).toBeLessThan(now + DAY / 2 + 60_000);
    expect(decideSaSecret(input({ secret, now: d.recheckAt! }))).toEqual({ action: 'update', reason: 'rotation due' });
  });

  it('deletes our secret once the ServiceAccount is gone, but never a secret that is not ours', async () => {
    const secret = await secretFor();
    expect(decideSaSecret(input({ secret, serviceAccount: undefined }))).toEqual({ action: 'delete', reason: 'ServiceAccount deleted', uid: 'secret-uid', resourceVersion: '7' });
    const foreign = { ...secret, metadata: { name: 'istio.cart', namespace: 'shop' } };
    expect(decideSaSecret(input({ secret: foreign, serviceAccount: undefined })).action).toBe('none');
    // Deleted even when the namespace label no longer selects it: the owner is gone either way.
    expect(decideSaSecret(input({ secret, serviceAccount: undefined, namespace: { metadata: { name: 'shop' } } })).action).toBe('delete');
  });

  it('touches nothing, not even to delete, outside the namespaces this CA manages', async () => {
    const secret = await secretFor();
    const other: NamespaceFilter = { selector: parseLabelSelector('team=payments'), excluded: new Set() };
    expect(decideSaSecret(input({ filter: other }))).toEqual({ action: 'none', reason: 'namespace labels do not match selector "team=payments"' });
    expect(decideSaSecret(input({ filter: other, secret, serviceAccount: undefined })).action).toBe('none');
    const excluded: NamespaceFilter = { selector: parseLabelSelector(''), excluded: new Set(['shop']) };
    expect(decideSaSecret(input({ filter: excluded, secret, serviceAccount: undefined }))).toEqual({ action: 'none', reason: 'namespace is excluded' });
    expect(decideSaSecret(input({ namespace: { metadata: { name: 'shop', labels: NS.metadata.labels }, status: { phase: 'Terminating' } } })).reason).toBe('namespace is terminating');
  });

  it('repairs tampering: wrong key, wrong identity, foreign root, stale root bundle, broken data, expiry, lost owner', async () => {
    const cases: [SecretObject, string][] = [
      [await secretFor({ otherKey: true }), 'key does not match the certificate'],
      [await secretFor({ id: 'spiffe://cluster.local/ns/shop/sa/admin' }), 'certificate identity is spiffe://cluster.local/ns/shop/sa/admin, not spiffe://cluster.local/ns/shop/sa/cart'],
      [await secretFor({ root: 'old' }), 'root-cert.pem differs from the trust bundle'],
    ];
    const good = await secretFor();
    cases.push([{ ...good, data: { ...good.data, 'key.pem': b64('garbage') } }, 'key.pem does not parse']);
    cases.push([{ ...good, data: { ...good.data, 'cert-chain.pem': undefined as unknown as string } }, 'cert-chain.pem missing']);
    cases.push([{ ...good, metadata: { ...good.metadata, ownerReferences: [] } }, 'owner reference to the ServiceAccount missing']);
    cases.push([{ ...good, metadata: { ...good.metadata, ownerReferences: [{ apiVersion: 'v1', kind: 'ServiceAccount', name: 'cart', uid: 'old-uid' }] } }, 'owner reference to the ServiceAccount missing']);
    for (const [secret, reason] of cases) expect(decideSaSecret(input({ secret }))).toEqual({ action: 'update', reason });
    expect(decideSaSecret(input({ secret: good, now: now + 2 * DAY }))).toEqual({ action: 'update', reason: 'certificate expired' });

    const other = await createTestAuthority();
    expect(decideSaSecret(input({ secret: good, bundlePem: other.trustBundlePem() }))).toEqual({ action: 'update', reason: 'certificate does not chain to the current trust bundle' });
  });
});
