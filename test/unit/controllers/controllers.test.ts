/**
 * The reconcilers' act step with in-memory caches and a recording ObjectWriter (our own seams), the real PKI
 * and the test CA on a fake clock: what is written, what is returned for requeueing, and races.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { CreateOutcome, ObjectWriter, UpdateOutcome } from '../../../src/kube/writes.js';
import { silentLogger } from '../../../src/log.js';
import { createControllerMetrics } from '../../../src/controllers/metrics.js';
import type { ConfigMapObject, NamespaceObject, SecretObject, ServiceAccountObject } from '../../../src/controllers/objects.js';
import { RetryLater } from '../../../src/controllers/queue.js';
import type { Cache } from '../../../src/controllers/reconciler.js';
import { createRootConfigMapReconciler } from '../../../src/controllers/root-configmap-controller.js';
import { createSaSecretReconciler } from '../../../src/controllers/sa-secret-controller.js';
import { DEFAULT_EXCLUDED_NAMESPACES } from '../../../src/controllers/namespaces.js';
import { parseLabelSelector } from '../../../src/controllers/selector.js';
import { keyMatchesCertificate, parseCertificates, parsePrivateKeyPem, verifyChain } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { createTestAuthority } from '../../support/test-authority.js';

function cache<T extends { metadata?: { name?: string; namespace?: string } }>(items: T[] = []) {
  const map = new Map<string, T>();
  const key = (name: string, namespace?: string) => `${namespace ?? ''}/${name}`;
  for (const i of items) map.set(key(i.metadata!.name!, i.metadata?.namespace), i);
  const c: Cache<T> & { set(o: T): void; delete(name: string, ns?: string): void } = {
    get: (name, namespace) => map.get(key(name, namespace)),
    list: (namespace) => [...map.values()].filter((o) => namespace === undefined || o.metadata?.namespace === namespace),
    set: (o) => map.set(key(o.metadata!.name!, o.metadata?.namespace), o),
    delete: (name, ns) => map.delete(key(name, ns)),
  };
  return c;
}

interface Recorded { op: string; obj?: unknown; args?: unknown[] }

function recordingWriter(outcomes: { create?: CreateOutcome; update?: UpdateOutcome; live?: unknown; pod?: unknown } = {}) {
  const calls: Recorded[] = [];
  const writer: ObjectWriter = {
    async createConfigMap(cm) { calls.push({ op: 'createConfigMap', obj: cm }); return outcomes.create ?? 'created'; },
    async updateConfigMap(cm) { calls.push({ op: 'updateConfigMap', obj: cm }); return outcomes.update ?? 'updated'; },
    async readConfigMap(namespace, name) { calls.push({ op: 'readConfigMap', args: [namespace, name] }); return outcomes.live as never; },
    async createSecret(s) { calls.push({ op: 'createSecret', obj: s }); return outcomes.create ?? 'created'; },
    async updateSecret(s) { calls.push({ op: 'updateSecret', obj: s }); return outcomes.update ?? 'updated'; },
    async setAuthorizationPolicyStatus(namespace, name, status) { calls.push({ op: 'setAuthorizationPolicyStatus', args: [namespace, name, status] }); return outcomes.update ?? 'updated'; },
    async deleteSecret(namespace, name, pre) { calls.push({ op: 'deleteSecret', args: [namespace, name, pre] }); return 'deleted'; },
    async updatePodCertificateRequestStatus(pcr) { calls.push({ op: 'updatePodCertificateRequestStatus', obj: pcr }); return outcomes.update ?? 'updated'; },
    async readPod(namespace, name) { calls.push({ op: 'readPod', args: [namespace, name] }); return outcomes.pod as never; },
    async createClusterTrustBundle(ctb) { calls.push({ op: 'createClusterTrustBundle', obj: ctb }); return outcomes.create ?? 'created'; },
    async updateClusterTrustBundle(ctb) { calls.push({ op: 'updateClusterTrustBundle', obj: ctb }); return outcomes.update ?? 'updated'; },
    async readClusterTrustBundle(name) { calls.push({ op: 'readClusterTrustBundle', args: [name] }); return outcomes.live as never; },
  };
  return { writer, calls };
}

const filter = { selector: parseLabelSelector(''), excluded: new Set(DEFAULT_EXCLUDED_NAMESPACES) };
const metrics = () => createControllerMetrics(new Registry(), () => ({}));
const signal = () => new AbortController().signal;
const decode = (s: SecretObject, k: string) => Buffer.from(s.data![k]!, 'base64').toString('utf8');

describe('root ConfigMap reconciler', () => {
  const ns: NamespaceObject = { metadata: { name: 'team' } };

  it('creates once, and on "exists" reads the live object and updates it in place', async () => {
    const ca = await createTestAuthority();
    const live: ConfigMapObject = { metadata: { name: 'istio-ca-root-cert', namespace: 'team', resourceVersion: '9' }, data: { 'root-cert.pem': 'old', keep: 'x' } };
    const { writer, calls } = recordingWriter({ create: 'exists', live });
    const r = createRootConfigMapReconciler({ namespaces: cache([ns]), configMaps: cache<ConfigMapObject>(), ca, filter, writer, log: silentLogger, metrics: metrics() });
    await r.reconcile('team', signal());
    expect(calls.map((c) => c.op)).toEqual(['createConfigMap', 'readConfigMap', 'updateConfigMap']);
    expect((calls[2]!.obj as ConfigMapObject).data).toEqual({ 'root-cert.pem': ca.trustBundlePem(), keep: 'x' });
    expect((calls[2]!.obj as ConfigMapObject).metadata?.resourceVersion).toBe('9');
    expect(r.allKeys()).toEqual(['team']);
  });

  it('returns quietly when the live object is already right, and retries (RetryLater) on a conflict', async () => {
    const ca = await createTestAuthority();
    const right: ConfigMapObject = {
      metadata: { name: 'istio-ca-root-cert', namespace: 'team', labels: { 'istio.io/config': 'true', 'app.kubernetes.io/managed-by': 'citadel' } },
      data: { 'root-cert.pem': ca.trustBundlePem() },
    };
    const exists = recordingWriter({ create: 'exists', live: right });
    const r1 = createRootConfigMapReconciler({ namespaces: cache([ns]), configMaps: cache<ConfigMapObject>(), ca, filter, writer: exists.writer, log: silentLogger, metrics: metrics() });
    await r1.reconcile('team', signal());
    expect(exists.calls.map((c) => c.op)).toEqual(['createConfigMap', 'readConfigMap']);

    const conflict = recordingWriter({ update: 'conflict' });
    const stale = { ...right, metadata: { ...right.metadata, resourceVersion: '1' }, data: { 'root-cert.pem': 'stale' } };
    const r2 = createRootConfigMapReconciler({ namespaces: cache([ns]), configMaps: cache([stale]), ca, filter, writer: conflict.writer, log: silentLogger, metrics: metrics() });
    await expect(r2.reconcile('team', signal())).rejects.toBeInstanceOf(RetryLater);
  });
});

describe('ServiceAccount secret reconciler', () => {
  it('issues a verifiable secret, asks to be requeued at the rotation time, and rotates then', async () => {
    const clock = new FakeClock(Date.UTC(2026, 5, 1));
    const ca = await createTestAuthority({ clock });
    const namespaces = cache<NamespaceObject>([{ metadata: { name: 'shop', labels: { 'citadel.io/sa-secrets': 'enabled' } } }]);
    const sa: ServiceAccountObject = { metadata: { name: 'cart', namespace: 'shop', uid: 'uid-cart' } };
    const secrets = cache<SecretObject>();
    const { writer, calls } = recordingWriter();
    const ttl = 3600_000;
    const r = createSaSecretReconciler({
      namespaces, filter, serviceAccounts: cache([sa]), secrets, ca, writer, clock, log: silentLogger, metrics: metrics(),
      mode: 'labeled', trustDomain: 'cluster.local', certTtlMs: ttl, gracePeriodRatio: 0.5, keyType: 'ecdsa-p256',
    });
    expect(r.allKeys()).toEqual(['shop/cart']);
    const first = await r.reconcile('shop/cart', signal());
    expect(first).toEqual({ requeueAfterMs: ttl / 2 });
    const written = calls[0]!.obj as SecretObject;
    expect(calls[0]!.op).toBe('createSecret');
    expect(written.type).toBe('istio.io/key-and-cert');
    expect(written.metadata?.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'ServiceAccount', name: 'cart', uid: 'uid-cart' }]);
    const [leaf, ...rest] = parseCertificates(decode(written, 'cert-chain.pem'));
    expect(rest).toEqual([]);
    expect(leaf!.uris).toEqual(['spiffe://cluster.local/ns/shop/sa/cart']);
    expect(keyMatchesCertificate(parsePrivateKeyPem(decode(written, 'key.pem')), leaf!)).toBe(true);
    expect(verifyChain({ leaf: leaf!, intermediates: [], roots: parseCertificates(decode(written, 'root-cert.pem')), now: clock.now() })).toHaveLength(2);

    // The informer now holds what was written: nothing to do until the rotation time.
    secrets.set({ ...written, metadata: { ...written.metadata, uid: 'secret-uid', resourceVersion: '1' } });
    await clock.advance(ttl / 2 - 1000);
    expect(await r.reconcile('shop/cart', signal())).toEqual({ requeueAfterMs: 1000 });
    expect(calls).toHaveLength(1);
    await clock.advance(1000);
    const again = await r.reconcile('shop/cart', signal());
    expect(calls.map((c) => c.op)).toEqual(['createSecret', 'updateSecret']);
    expect(again).toEqual({ requeueAfterMs: ttl / 2 });
    const rotated = calls[1]!.obj as SecretObject;
    expect(rotated.metadata?.resourceVersion).toBe('1');
    expect(decode(rotated, 'key.pem')).not.toBe(decode(written, 'key.pem'));

    // ServiceAccount gone: the secret is deleted with its uid as precondition.
    const gone = createSaSecretReconciler({
      namespaces, filter, serviceAccounts: cache<ServiceAccountObject>(), secrets, ca, writer, clock, log: silentLogger, metrics: metrics(),
      mode: 'labeled', trustDomain: 'cluster.local', certTtlMs: ttl, gracePeriodRatio: 0.5, keyType: 'ecdsa-p256',
    });
    expect(gone.allKeys()).toEqual(['shop/cart']);
    await gone.reconcile('shop/cart', signal());
    expect(calls[2]).toEqual({ op: 'deleteSecret', args: ['shop', 'istio.cart', { uid: 'secret-uid' }] });
  });
});
