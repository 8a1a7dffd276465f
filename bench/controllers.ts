/**
 * Controller figures against a real apiserver (printed, not asserted):
 * - full reconcile: N namespaces (default 1,000) exist; the controllers start and lead; time until every one
 *   holds istio-ca-root-cert with the bundle (N creates through the client-side write limit);
 * - bundle change: the root rotates; time until all N ConfigMaps hold the new bundle (N updates);
 * - recreate latency: a ConfigMap is deleted; time until it is back (repeated, p50 and max).
 * Errors counted by the controllers' own metrics must be zero.
 *
 *   npm run build && node dist/bench/controllers.js [--namespaces 1000] [--write-qps 50] [--recreates 20]
 */
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { systemClock } from '../src/clock.js';
import { startControllers } from '../src/controllers/index.js';
import { createLogger } from '../src/log.js';
import { startControlPlane } from '../test/harness/cluster.js';
import { connectCluster } from '../test/harness/test-cluster.js';
import { citadelClients } from '../test/support/citadel-rbac.js';
import { createTestAuthority } from '../test/support/test-authority.js';

const CM = 'istio-ca-root-cert';
const LABEL = 'citadel-bench';

const { values } = parseArgs({
  options: {
    namespaces: { type: 'string', default: '1000' },
    'write-qps': { type: 'string', default: '50' },
    recreates: { type: 'string', default: '20' },
  },
});
const N = Number(values.namespaces);
const QPS = Number(values['write-qps']);
const RECREATES = Number(values.recreates);

async function inBatches<T>(items: T[], size: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return ((m?.values ?? []) as { labels: Record<string, string | number>; value: number }[])
    .filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))
    .reduce((a, v) => a + v.value, 0);
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number, pollMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

async function main(): Promise<void> {
  const plane = await startControlPlane({ log: (l) => console.error(`[harness] ${l}`) });
  try {
    const cluster = connectCluster(plane.info);
    const admin = cluster.kube();
    const caNamespace = await cluster.createNamespace('bench-ca');
    const { kube } = await citadelClients(cluster, caNamespace);
    const names = Array.from({ length: N }, (_, i) => `bench-${String(i).padStart(4, '0')}`);
    let t = Date.now();
    await inBatches(names, 25, (name) => admin.core.createNamespace({ body: { metadata: { name, labels: { [LABEL]: 'yes' } } } }));
    console.error(`[bench] created ${N} namespaces in ${Date.now() - t} ms`);

    const ca = await createTestAuthority();
    const registry = new Registry();
    const log = createLogger({ level: 'warn', name: 'controllers' });
    const controllers = startControllers({
      kube,
      ca,
      clock: systemClock,
      log,
      registry,
      namespace: caNamespace,
      trustDomain: 'cluster.local',
      saSecrets: 'off',
      namespaceSelector: `${LABEL}=yes`,
      writeQps: QPS,
      writeBurst: QPS * 2,
    });
    const started = Date.now();
    await controllers.synced();
    const syncedMs = Date.now() - started;
    const created = () => metric(registry, 'citadel_controller_writes_total', { controller: 'root-configmap', action: 'create', outcome: 'created' });
    await until('every ConfigMap', async () => (await created()) >= N, 10 * 60_000, 50);
    const fullMs = Date.now() - started;

    const countWith = async (bundle: string) => {
      const list = await admin.core.listConfigMapForAllNamespaces({ fieldSelector: `metadata.name=${CM}` });
      const wanted = new Set(names);
      return list.items.filter((cm) => wanted.has(cm.metadata?.namespace ?? '') && cm.data?.['root-cert.pem'] === bundle).length;
    };
    const verifiedFull = await countWith(ca.trustBundlePem());

    const updatesBefore = await metric(registry, 'citadel_controller_writes_total', { controller: 'root-configmap', action: 'update', outcome: 'updated' });
    t = Date.now();
    await ca.rotateRoot({ keepOld: true });
    await until('the new bundle everywhere', async () => (await metric(registry, 'citadel_controller_writes_total', { controller: 'root-configmap', action: 'update', outcome: 'updated' })) - updatesBefore >= N, 10 * 60_000, 50);
    const rotateMs = Date.now() - t;
    const verifiedRotate = await countWith(ca.trustBundlePem());

    const latencies: number[] = [];
    for (let i = 0; i < RECREATES; i++) {
      const namespace = names[(i * 37) % N]!;
      const before = await admin.core.readNamespacedConfigMap({ name: CM, namespace });
      const deletedAt = Date.now();
      await admin.core.deleteNamespacedConfigMap({ name: CM, namespace });
      await until(`recreate in ${namespace}`, async () => {
        try {
          const cm = await admin.core.readNamespacedConfigMap({ name: CM, namespace });
          return cm.metadata?.uid !== before.metadata?.uid;
        } catch {
          return false;
        }
      }, 30_000, 5);
      latencies.push(Date.now() - deletedAt);
    }
    latencies.sort((a, b) => a - b);
    const errors = await metric(registry, 'citadel_controller_errors_total');
    await controllers.stop();

    const rows: [string, string][] = [
      ['namespaces', String(N)],
      ['write limit (writes/s, burst)', `${QPS}, ${QPS * 2}`],
      ['informers synced', `${syncedMs} ms`],
      ['full reconcile (start -> all ConfigMaps created)', `${fullMs} ms (${verifiedFull}/${N} verified by list)`],
      ['bundle change (rotate -> all ConfigMaps updated)', `${rotateMs} ms (${verifiedRotate}/${N} verified by list)`],
      [`recreate after delete (${RECREATES}x)`, `p50 ${latencies[Math.floor(latencies.length / 2)]} ms, max ${latencies[latencies.length - 1]} ms`],
      ['ideal at the write limit', `${Math.round(Math.max(0, N - QPS * 2) / QPS * 1000)} ms per full pass`],
      ['controller errors', String(errors)],
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(52)} ${v}`);
    if (errors > 0 || verifiedFull !== N || verifiedRotate !== N) process.exitCode = 1;
  } finally {
    await plane.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
