/**
 * The leading `citadel ca` replica killed with SIGKILL while it serves CSRs (issue 19): two replicas with the same
 * key material behind a Service-like proxy (each new connection to the next replica, a dead one skipped), two
 * agents renewing every 4 s through it, and live mTLS traffic between their Envoys. The other replica must take the
 * Lease within the lease duration (plus one retry period) and do the leader's work, the agents must keep renewing,
 * and not one request may fail.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, type TestCluster } from '../harness/index.js';
import { ensureBuilt, eventually, httpGet, metricValue } from './support/agent-env.js';
import { scopedNamespaces, startCa, type RunningCa } from './support/ca.js';
import { startServiceProxy, type ServiceProxy } from './support/service-proxy.js';
import { leafSerials, startMtlsPair, type MtlsPair, type Sidecar } from './support/sidecar.js';
import { startTraffic } from './support/traffic.js';

const LEASE_S = 5;
const RETRY_S = 1;
const CERT_TTL_S = 8;

const leading = async (ca: RunningCa) => metricValue((await httpGet(`${ca.monitoringUrl}/metrics`)).body, 'citadel_leader') === 1;
const issued = async (ca: RunningCa) => metricValue((await httpGet(`${ca.monitoringUrl}/metrics`)).body, 'citadel_server_success_cert_issuance_count') ?? 0;
const serial = async (s: Sidecar) => leafSerials(await s.envoy.certs())[0];

describe('leading CA replica SIGKILLed while serving CSRs, with a second replica and live traffic', () => {
  let cluster: TestCluster;
  let workDir: string;
  let ns: string;
  let a: RunningCa;
  let b: RunningCa;
  let service: ServiceProxy;
  let pair: MtlsPair;
  let client: Sidecar;
  let server: Sidecar;

  beforeAll(async () => {
    await ensureBuilt();
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/cf-');
    const scoped = await scopedNamespaces(cluster, 'failover');
    const caNs = scoped.caNs;
    ns = scoped.ns;
    const args = [...scoped.selectorArgs, '--sa-secrets', 'off', '--lease-duration', `${LEASE_S}s`, '--lease-renew-deadline', `${LEASE_S - 2}s`, '--lease-retry-period', `${RETRY_S}s`];
    a = await startCa({ kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true, name: 'ca-a', extraArgs: args });
    await eventually('ca-a to lead', () => leading(a));
    b = await startCa({ kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true, name: 'ca-b', cacertsDir: a.cacertsDir, extraArgs: args });
    service = await startServiceProxy([a, b].map((ca) => Number(ca.grpcAddress.split(':')[1])));
    pair = await startMtlsPair({ cluster, namespace: ns, logDir: workDir, agentArgs: ['--ca-address', service.address, '--ca-server-name', a.serverName, '--cert-ttl', `${CERT_TTL_S}s`] });
    ({ client, server } = pair);
  }, 180_000);

  afterAll(async () => {
    await pair?.stop();
    await service?.close();
    await a?.stop();
    await b?.stop();
  });

  it('the other replica takes over within the lease; renewals and traffic carry on: 0 failed requests', async () => {
    const traffic = await startTraffic({ port: pair.port, appName: 'server-app' });
    await eventually('traffic to flow', () => traffic.report().requests > 10);
    expect(await leading(b)).toBe(false);
    // Kill the leader right after it signed a certificate: renewals keep reaching it through the proxy.
    const before = await issued(a);
    await eventually('ca-a to sign a renewal', async () => (await issued(a)) > before, { intervalMs: 50 });
    const killedAt = Date.now();
    await a.proc.kill();
    await eventually('ca-b to take the Lease', () => leading(b), { timeoutMs: (LEASE_S + RETRY_S) * 1000 + 10_000, intervalMs: 100, context: () => b.proc.tail(10) });
    const takeoverMs = Date.now() - killedAt;

    // The new leader does the leader's work: a deleted root ConfigMap comes back.
    await cluster.kube().core.deleteNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns });
    await eventually('ca-b to recreate istio-ca-root-cert', async () => (await cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns })).data?.['root-cert.pem']);
    // Both agents renew after the kill (so from ca-b), twice, with the traffic flowing.
    for (let round = 0; round < 2; round++) {
      const serials = await Promise.all([serial(server), serial(client)]);
      await eventually('both agents to renew', async () => (await serial(server)) !== serials[0] && (await serial(client)) !== serials[1], { timeoutMs: 3 * CERT_TTL_S * 1000, intervalMs: 250 });
    }
    const report = await traffic.stop();
    console.log(`[ca-failover] lease ${LEASE_S} s, retry ${RETRY_S} s: takeover ${takeoverMs} ms after SIGKILL; ${report.requests} requests + ${report.pings} pings, ${report.failures.length} failed`);
    expect(report.failures).toEqual([]);
    expect(takeoverMs).toBeLessThanOrEqual((LEASE_S + RETRY_S) * 1000 + 2000);
    expect(await a.proc.exited).toBe('SIGKILL');
  }, 120_000);
});
