/**
 * `410 Gone` on demand (issue 19): a control plane of its own whose apiserver serves watches from etcd
 * (`--watch-cache=false`; the shared one's watch cache answers old resourceVersions from its own history), and an
 * etcd compaction through the harness. A watch from a resourceVersion older than the compaction ends with an
 * ERROR event carrying 410; our informer's watch, restarted from its last resourceVersion after such a compaction,
 * gets the same answer, relists, and follows the cluster again, without taking its error path.
 */
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { createInformer } from '../../src/kube/informer.js';
import { silentLogger } from '../../src/log.js';
import { startControlPlane, type ControlPlane } from '../harness/cluster.js';
import { connectCluster, type TestCluster } from '../harness/test-cluster.js';
import { waitFor } from '../support/wait.js';

let controlPlane: ControlPlane;
let cluster: TestCluster;
let ns: string;

beforeAll(async () => {
  controlPlane = await startControlPlane({ apiserverArgs: ['--watch-cache=false'] });
  cluster = connectCluster(controlPlane.info);
  ns = await cluster.createNamespace('gone');
}, 120_000);

afterAll(async () => {
  await controlPlane?.stop();
});

const cm = (name: string) => ({ metadata: { name }, data: { v: name } });

/** Objects written elsewhere, so that etcd's revision moves past everything in `ns`. */
async function writeElsewhere(n: number): Promise<void> {
  const other = await cluster.createNamespace('gone-other');
  for (let i = 0; i < n; i++) await cluster.kube().core.createNamespacedConfigMap({ namespace: other, body: cm(`x${i}`) });
}

describe('410 Gone after an etcd compaction', () => {
  it('a watch from a compacted resourceVersion ends with 410', async () => {
    const { core, config } = cluster.kube();
    const before = (await core.listNamespacedConfigMap({ namespace: ns })).metadata!.resourceVersion!;
    await writeElsewhere(3);
    const compactedAt = await cluster.compactEtcd();
    expect(compactedAt).toBeGreaterThan(Number(before));
    const events: { phase: string; code?: number }[] = [];
    await new Promise<void>((resolve) => {
      void new k8s.Watch(config).watch(`/api/v1/namespaces/${ns}/configmaps`, { resourceVersion: before, timeoutSeconds: 10 },
        (phase, obj: { code?: number }) => events.push({ phase, code: obj.code }),
        () => resolve());
    });
    expect(events).toEqual([{ phase: 'ERROR', code: 410 }]);
  });

  it('the informer whose resourceVersion was compacted relists and follows the cluster again', async () => {
    const { core, config } = cluster.kube();
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('a') });
    let lists = 0;
    const errors: unknown[] = [];
    const informer = createInformer<k8s.V1ConfigMap>({
      config, resource: 'configmaps', path: `/api/v1/namespaces/${ns}/configmaps`,
      list: () => {
        lists++;
        return core.listNamespacedConfigMap({ namespace: ns });
      },
      clock: systemClock, log: silentLogger,
      // Short watches, so the watch is restarted from its resourceVersion soon after the compaction.
      watchTimeoutSeconds: 1,
      onError: (err) => errors.push(err),
    });
    try {
      await informer.start();
      expect(lists).toBe(1);
      expect(informer.list().map((c) => c.metadata!.name)).toEqual(['a']);
      // The informer's resourceVersion is now a's; nothing in `ns` changes while etcd moves on and is compacted.
      await writeElsewhere(3);
      await cluster.compactEtcd();
      await waitFor('the informer to relist', () => lists === 2, { timeoutMs: 30_000 });
      expect(errors).toEqual([]);
      expect(informer.hasSynced()).toBe(true);
      // Watching again from the relist: a change arrives through the watch.
      await core.createNamespacedConfigMap({ namespace: ns, body: cm('b') });
      await waitFor('b in the cache', () => informer.get('b', ns), { timeoutMs: 30_000 });
      expect(informer.list().map((c) => c.metadata!.name).sort()).toEqual(['a', 'b']);
      expect(lists).toBe(2);
    } finally {
      await informer.stop();
    }
  }, 60_000);
});
