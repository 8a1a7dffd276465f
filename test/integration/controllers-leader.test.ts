/**
 * Leader election between controller replicas against the real apiserver, each running as the citadel
 * ServiceAccount with deploy/base/rbac.yaml. Replica A reaches the apiserver through a TCP proxy the test can
 * cut, to partition it; lease timings are shortened (3 s lease, 2 s renew deadline, 0.5 s retry).
 */
import fs from 'node:fs';
import net from 'node:net';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { startControllers, type Controllers } from '../../src/controllers/index.js';
import { connectKube, type KubeClients } from '../../src/kube/client.js';
import { silentLogger } from '../../src/log.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { createTestAuthority, type TestAuthority } from '../support/test-authority.js';
import { unlessNotFound, waitFor } from '../support/wait.js';

const CM = 'istio-ca-root-cert';
const RUN_LABEL = 'citadel-leader-test';
const LEASE_MS = 3000;
const RENEW_DEADLINE_MS = 2000;
const RETRY_MS = 500;

interface Replica {
  readonly name: string;
  readonly controllers: Controllers;
  readonly registry: Registry;
  readonly changes: { leading: boolean; at: number }[];
}

let cluster: TestCluster;
let admin: KubeClients;
let ca: TestAuthority;
let caNamespace: string;
let kubeconfig: string;
let proxy: Proxy;
const replicas: Replica[] = [];

/** A TCP forwarder to the apiserver that can be cut (every connection reset, new ones refused) and healed. */
interface Proxy {
  readonly port: number;
  cut(): void;
  heal(): void;
  close(): Promise<void>;
}

async function startProxy(host: string, port: number): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  let cut = false;
  const server = net.createServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
    },
    heal() {
      cut = false;
    },
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** Leadership changes are timed after the wait returns, so poll more often than the default. */
const QUICK = { intervalMs: 50 };

const readCm = (namespace: string) => unlessNotFound(admin.core.readNamespacedConfigMap({ name: CM, namespace }));

async function writes(replica: Replica): Promise<number> {
  const metric = (await replica.registry.getMetricsAsJSON()).find((m) => m.name === 'citadel_controller_writes_total');
  return ((metric?.values ?? []) as { value: number }[]).reduce((a, v) => a + v.value, 0);
}

async function gauge(replica: Replica, name: string): Promise<number | undefined> {
  const metric = (await replica.registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (metric?.values as { value: number }[] | undefined)?.[0]?.value;
}

function startReplica(name: string, kube: KubeClients): Replica {
  const registry = new Registry();
  const controllers = startControllers({
    kube,
    ca,
    clock: systemClock,
    log: silentLogger,
    registry,
    namespace: caNamespace,
    trustDomain: 'cluster.local',
    identity: name,
    saSecrets: 'off',
    namespaceSelector: `${RUN_LABEL}=${caNamespace}`,
    leaseDurationMs: LEASE_MS,
    renewDeadlineMs: RENEW_DEADLINE_MS,
    retryPeriodMs: RETRY_MS,
  });
  const replica: Replica = { name, controllers, registry, changes: [] };
  controllers.onLeadershipChange((leading) => replica.changes.push({ leading, at: Date.now() }));
  replicas.push(replica);
  return replica;
}

/** Deletes the ConfigMap and waits until a new one (new uid) holds the bundle again. */
async function deleteAndWaitForRecreate(namespace: string): Promise<void> {
  const before = await waitFor('ConfigMap', () => readCm(namespace), QUICK);
  await admin.core.deleteNamespacedConfigMap({ name: CM, namespace });
  await waitFor('recreated ConfigMap', async () => {
    const cm = await readCm(namespace);
    return cm && cm.metadata?.uid !== before.metadata?.uid && cm.data?.['root-cert.pem'] === ca.trustBundlePem();
  }, QUICK);
}

let a: Replica;
let b: Replica;
let served: string;

beforeAll(async () => {
  cluster = getCluster();
  admin = cluster.kube();
  caNamespace = await cluster.createNamespace('ctrl-leader');
  ({ kubeconfig } = await citadelClients(cluster, caNamespace));
  ca = await createTestAuthority();
  const server = new URL(cluster.server);
  proxy = await startProxy(server.hostname, Number(server.port));
  const proxiedConfig = `${kubeconfig}.proxied`;
  fs.writeFileSync(proxiedConfig, fs.readFileSync(kubeconfig, 'utf8').replace(cluster.server, `https://${server.hostname}:${proxy.port}`), { mode: 0o600 });
  a = startReplica('replica-a', connectKube(proxiedConfig));
  await waitFor('replica A to lead', () => a.controllers.isLeader(), QUICK);
  b = startReplica('replica-b', connectKube(kubeconfig));
  await b.controllers.synced();
  served = await cluster.createNamespace('ctrl-served', { [RUN_LABEL]: caNamespace });
});

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.controllers.stop()));
  await proxy?.close();
});

describe('leader election', () => {
  it('only the leader writes', async () => {
    await waitFor('ConfigMap from the leader', () => readCm(served), QUICK);
    await deleteAndWaitForRecreate(served);
    expect(a.controllers.isLeader()).toBe(true);
    expect(b.controllers.isLeader()).toBe(false);
    expect(await writes(a)).toBeGreaterThanOrEqual(2);
    expect(await writes(b)).toBe(0);
    expect(await gauge(a, 'citadel_leader')).toBe(1);
    expect(await gauge(b, 'citadel_leader')).toBe(0);
  });

  it('a partitioned leader steps down at its renew deadline, before the other replica takes over', async () => {
    const cutAt = Date.now();
    proxy.cut();
    await waitFor('replica B to lead', () => b.controllers.isLeader(), { ...QUICK, timeoutMs: 10_000 });
    const stepDown = a.changes.find((c) => !c.leading && c.at >= cutAt);
    const takeOver = b.changes.find((c) => c.leading && c.at >= cutAt);
    expect(stepDown).toBeDefined();
    expect(takeOver).toBeDefined();
    expect(a.controllers.isLeader()).toBe(false);
    // A stopped writing no later than its renew deadline after the last renew, and before B could start.
    expect(stepDown!.at - cutAt).toBeLessThanOrEqual(RENEW_DEADLINE_MS + 200);
    expect(stepDown!.at).toBeLessThan(takeOver!.at);
    // B waits out a whole lease duration from its last sight of A's renewals: about one lease duration.
    expect(takeOver!.at - cutAt).toBeLessThanOrEqual(LEASE_MS + 2 * RETRY_MS + 1000);
    expect(await gauge(a, 'citadel_leader')).toBe(0);

    const writesBefore = await writes(b);
    await deleteAndWaitForRecreate(served);
    expect(await writes(b)).toBeGreaterThan(writesBefore);
    proxy.heal();
  });

  it('when the leader dies without releasing the lease, the other takes over within about one lease duration', async () => {
    // A is back on the network as a follower. A follower's lease reads leave no trace (no write, no log, no
    // metric), so two retry periods are the window in which it would have taken the lease if it were going to.
    await new Promise((r) => setTimeout(r, 2 * RETRY_MS));
    expect(a.controllers.isLeader()).toBe(false);
    const diedAt = Date.now();
    await b.controllers.stop({ release: false });
    await waitFor('replica A to lead again', () => a.controllers.isLeader(), { ...QUICK, timeoutMs: 10_000 });
    expect(Date.now() - diedAt).toBeLessThanOrEqual(LEASE_MS + 2 * RETRY_MS + 1000);
    await deleteAndWaitForRecreate(served);
  });

  it('a leader that stops cleanly releases the lease, so a new replica leads at once', async () => {
    await a.controllers.stop();
    const startedAt = Date.now();
    const c = startReplica('replica-c', connectKube(kubeconfig));
    await waitFor('replica C to lead', () => c.controllers.isLeader(), { ...QUICK, timeoutMs: 10_000 });
    expect(Date.now() - startedAt).toBeLessThan(LEASE_MS);
    await deleteAndWaitForRecreate(served);
    const lease = await admin.coordination.readNamespacedLease({ name: 'citadel-leader', namespace: caNamespace });
    expect(lease.spec?.holderIdentity).toBe('replica-c');
    expect(lease.spec?.leaseTransitions).toBeGreaterThanOrEqual(3);
  });
});
