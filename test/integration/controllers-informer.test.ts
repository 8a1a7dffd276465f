/**
 * src/kube/informer.ts against the real apiserver: the cache follows the cluster, comes back after the
 * connection fails (client-node's ListWatch stops for good on such errors; our wrapper restarts it).
 * `410 Gone` is handled inside client-node's ListWatch (it clears its resourceVersion and relists); it cannot be
 * provoked on the shared control plane, whose watch cache answers old resourceVersions from its own history even
 * after an etcd compaction: watch-gone.test.ts provokes it on a control plane of its own without a watch cache.
 */
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as k8s from '@kubernetes/client-node';
import { systemClock } from '../../src/clock.js';
import { connectKube, type KubeClients } from '../../src/kube/client.js';
import { createInformer, namedConfigMapInformer, serviceAccountInformer, type Informer } from '../../src/kube/informer.js';
import { silentLogger } from '../../src/log.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { waitFor } from '../support/wait.js';

let cluster: TestCluster;
let admin: KubeClients;
let ns: string;
const cleanups: (() => Promise<void>)[] = [];

const cm = (name: string, data: Record<string, string> = {}) => ({ metadata: { name, namespace: ns }, data });

beforeAll(async () => {
  cluster = getCluster();
  admin = cluster.kube();
  ns = await cluster.createNamespace('informer');
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('createInformer', () => {
  it('syncs, then follows adds, updates and deletes; the cache is readable synchronously', async () => {
    await admin.core.createNamespacedConfigMap({ namespace: ns, body: cm('istio-ca-root-cert', { v: '1' }) });
    const informer = namedConfigMapInformer(admin, 'istio-ca-root-cert', { clock: systemClock, log: silentLogger });
    cleanups.push(() => informer.stop());
    const events: string[] = [];
    for (const e of ['add', 'update', 'delete'] as const) informer.on(e, (o) => o.metadata?.namespace === ns && events.push(`${e}:${o.data?.v ?? ''}`));
    await informer.start();
    expect(informer.hasSynced()).toBe(true);
    expect(informer.get('istio-ca-root-cert', ns)?.data).toEqual({ v: '1' });
    // The field selector keeps other ConfigMaps out of the cache.
    await admin.core.createNamespacedConfigMap({ namespace: ns, body: cm('unrelated') });
    await admin.core.replaceNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns, body: cm('istio-ca-root-cert', { v: '2' }) });
    await waitFor('update', () => informer.get('istio-ca-root-cert', ns)?.data?.v === '2', { intervalMs: 50 });
    await admin.core.deleteNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns });
    await waitFor('delete', () => informer.get('istio-ca-root-cert', ns) === undefined, { intervalMs: 50 });
    expect(events).toEqual(['add:1', 'update:2', 'delete:2']);
    expect(informer.list(ns).map((o) => o.metadata?.name)).toEqual([]);
  });

  it('lists and watches ServiceAccounts as metadata only and caches no managedFields or secrets list', async () => {
    await admin.core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'listed', labels: { a: '1' } }, secrets: [{ name: 'x' }] } });
    const informer = serviceAccountInformer(admin, { clock: systemClock, log: silentLogger });
    cleanups.push(() => informer.stop());
    await informer.start();
    await admin.core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'watched', labels: { a: '2' } }, secrets: [{ name: 'y' }] } });
    const watched = await waitFor('watched ServiceAccount', () => informer.get('watched', ns), { intervalMs: 50 });
    // The apiserver sent metadata only (PartialObjectMetadata), not the whole object trimmed here.
    expect(watched.kind).toBe('PartialObjectMetadata');
    for (const [sa, label] of [[informer.get('listed', ns)!, '1'], [watched, '2']] as const) {
      expect(sa.metadata?.labels).toEqual({ a: label });
      expect(sa.metadata?.uid).toBeTruthy();
      expect(sa.metadata?.managedFields).toBeUndefined();
      expect(sa.metadata?.creationTimestamp).toBeUndefined();
      expect(sa.secrets).toBeUndefined();
    }
  });

  it('restarts after the connection fails and catches up with what changed meanwhile', async () => {
    const server = new URL(cluster.server);
    const sockets = new Set<net.Socket>();
    let cut = false;
    const proxy = net.createServer((client) => {
      if (cut) return client.destroy();
      const upstream = net.connect(Number(server.port), server.hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => { client.destroy(); upstream.destroy(); });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => { for (const s of sockets) s.destroy(); proxy.close(() => r()); }));
    const port = (proxy.address() as net.AddressInfo).port;
    const file = `${cluster.kubeconfigPath}.informer-proxy`;
    fs.writeFileSync(file, fs.readFileSync(cluster.kubeconfigPath, 'utf8').replace(cluster.server, `https://${server.hostname}:${port}`), { mode: 0o600 });
    const viaProxy = connectKube(file);

    await admin.core.createNamespacedConfigMap({ namespace: ns, body: cm('before-cut') });
    const errors: unknown[] = [];
    const informer: Informer<k8s.V1ConfigMap> = createInformer<k8s.V1ConfigMap>({
      resource: 'configmaps',
      config: viaProxy.config,
      path: `/api/v1/namespaces/${ns}/configmaps`,
      list: () => viaProxy.core.listNamespacedConfigMap({ namespace: ns }),
      clock: systemClock,
      log: silentLogger,
      restartBaseMs: 100,
      restartMaxMs: 400,
      onError: (err) => errors.push(err),
    });
    cleanups.push(() => informer.stop());
    await informer.start();
    expect(informer.get('before-cut', ns)).toBeDefined();

    cut = true;
    for (const s of sockets) s.destroy();
    await waitFor('a watch error', () => errors.length > 0, { intervalMs: 50 });
    await admin.core.createNamespacedConfigMap({ namespace: ns, body: cm('during-cut') });
    await admin.core.deleteNamespacedConfigMap({ name: 'before-cut', namespace: ns });
    const failedBefore = errors.length;
    await waitFor('several failed restarts', () => errors.length >= failedBefore + 3, { intervalMs: 50 });
    expect(informer.get('during-cut', ns)).toBeUndefined();
    cut = false;
    await waitFor('the cache to catch up', () => informer.get('during-cut', ns) !== undefined && informer.get('before-cut', ns) === undefined, { intervalMs: 50 });
    await admin.core.createNamespacedConfigMap({ namespace: ns, body: cm('after-heal') });
    await waitFor('events after the restart', () => informer.get('after-heal', ns) !== undefined, { intervalMs: 50 });
  });
});
