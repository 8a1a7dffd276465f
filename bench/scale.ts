/**
 * `citadel ca` at cluster scale (issue 8 item 5): N namespaces with M ServiceAccounts each exist before the CA
 * starts; the CA (default flags: controllers on, ServiceAccounts cached for --sa-secrets labeled) must put
 * istio-ca-root-cert into every namespace. Reports the time from ready to the last ConfigMap and the CA's RSS
 * with all of it cached.
 */
import type { TestCluster } from '../test/harness/test-cluster.js';
import { peakRss, sampleProcess } from './procstat.js';
import type { RunningCa } from './servers.js';

export interface CaAtScale {
  namespaces: number;
  serviceAccounts: number;
  /** Creating the namespaces and ServiceAccounts (apiserver speed, for context), ms. */
  setupMs: number;
  /** CA ready to every namespace holding istio-ca-root-cert, ms. */
  readyToAllConfigMapsMs: number;
  caRssMb: number;
  caPeakRssMb: number;
}

async function inBatches<T>(items: readonly T[], size: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

/** Creates `namespaces` namespaces `<prefix>-NNNN` with `serviceAccountsPerNamespace` ServiceAccounts each (one is `default`). */
export async function populate(cluster: TestCluster, prefix: string, namespaces: number, serviceAccountsPerNamespace: number): Promise<{ names: string[]; setupMs: number }> {
  const started = Date.now();
  const core = cluster.kube().core;
  const names = Array.from({ length: namespaces }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`);
  await inBatches(names, 25, (name) => core.createNamespace({ body: { metadata: { name } } }));
  const sas = names.flatMap((ns) => Array.from({ length: serviceAccountsPerNamespace }, (_, i) => ({ ns, name: i === 0 ? 'default' : `sa-${i}` })));
  await inBatches(sas, 25, (sa) => cluster.createServiceAccount(sa.ns, sa.name));
  return { names, setupMs: Date.now() - started };
}

/**
 * With the namespaces already populated, waits (after `startCa` resolves, i.e. /readyz) until every one of
 * `names` has the root ConfigMap, then lets the CA settle for 3 s and samples its RSS.
 * Throws if that takes longer than `timeoutMs`.
 */
export async function measureCaAtScale(
  cluster: TestCluster,
  populated: { names: string[]; setupMs: number },
  serviceAccounts: number,
  startCa: () => Promise<RunningCa>,
  timeoutMs = 240_000,
): Promise<CaAtScale> {
  const core = cluster.kube().core;
  const wanted = new Set(populated.names);
  const ca = await startCa();
  try {
    const ready = Date.now();
    for (;;) {
      const list = await core.listConfigMapForAllNamespaces({ fieldSelector: 'metadata.name=istio-ca-root-cert' });
      const have = list.items.filter((cm) => wanted.has(cm.metadata?.namespace ?? '')).length;
      if (have >= wanted.size) break;
      if (!ca.process.running()) throw new Error(`citadel ca exited:\n${ca.process.tail()}`);
      if (Date.now() - ready > timeoutMs) throw new Error(`only ${have}/${wanted.size} namespaces have istio-ca-root-cert after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const readyToAllConfigMapsMs = Date.now() - ready;
    await new Promise((r) => setTimeout(r, 3000));
    return {
      namespaces: wanted.size,
      serviceAccounts,
      setupMs: populated.setupMs,
      readyToAllConfigMapsMs,
      caRssMb: sampleProcess(ca.process.pid).rssBytes / 2 ** 20,
      caPeakRssMb: (peakRss(ca.process.pid) ?? NaN) / 2 ** 20,
    };
  } finally {
    await ca.stop();
  }
}
