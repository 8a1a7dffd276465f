/**
 * kube-apiserver restarted under traffic (issue 19), on a control plane of its own (restarting the shared one would
 * break every other test file): SIGKILL, then a graceful SIGTERM. The CA reviews every token afresh
 * (--token-review-cache-ttl 0) and the agents' certificates live 10 s, so they expire during the outage: what is
 * asserted is that the CA's watches resume (a deleted root ConfigMap comes back), TokenReviews recover (both
 * agents get new certificates), and no pod is without a valid certificate for longer than the outage plus 6 s
 * (the agent's 5 s retry cap while it has none, plus a CSR). Requests made while certificates had expired fail;
 * their number is printed, not asserted.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../harness/cluster.js';
import { connectCluster, type TestCluster } from '../harness/test-cluster.js';
import { ensureBuilt, eventually, httpGet, requestOnce } from './support/agent-env.js';
import { startCa, type RunningCa } from './support/ca.js';
import { leafSerials, startMtlsPair, type MtlsPair, type Sidecar } from './support/sidecar.js';
import { startTraffic } from './support/traffic.js';

const CERT_TTL_S = 10;
const DOWN_MS = 3000;

/** Polls an agent's /readyz (200 = it serves a valid certificate) and keeps the longest stretch without one. */
function watchReadiness(s: Sidecar) {
  let stopped = false;
  let notReadySince: number | undefined;
  let longest = 0;
  const poll = async () => {
    const ok = (await httpGet(`${s.agent.statusUrl}/readyz`, 1000)).status === 200;
    const now = Date.now();
    if (!ok) notReadySince ??= now;
    else if (notReadySince !== undefined) {
      longest = Math.max(longest, now - notReadySince);
      notReadySince = undefined;
    }
  };
  const loop = (async () => {
    while (!stopped) {
      await poll();
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      // The loop's last poll may predate the recovery the caller just waited for: look once more.
      await poll();
      return notReadySince === undefined ? longest : Infinity;
    },
  };
}

describe('kube-apiserver restarted under traffic', () => {
  let controlPlane: ControlPlane;
  let cluster: TestCluster;
  let workDir: string;
  let ns: string;
  let ca: RunningCa;
  let pair: MtlsPair;
  let client: Sidecar;
  let server: Sidecar;

  beforeAll(async () => {
    await ensureBuilt();
    controlPlane = await startControlPlane();
    cluster = connectCluster(controlPlane.info);
    workDir = fs.mkdtempSync('/tmp/ar-');
    const caNs = await cluster.createNamespace('restart-ca');
    ns = await cluster.createNamespace('restart');
    ca = await startCa({
      kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true,
      extraArgs: ['--sa-secrets', 'off', '--token-review-cache-ttl', '0', '--lease-duration', '5s', '--lease-renew-deadline', '3s', '--lease-retry-period', '1s'],
    });
    pair = await startMtlsPair({ cluster, namespace: ns, logDir: workDir, agentArgs: ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', `${CERT_TTL_S}s`] });
    ({ client, server } = pair);
  }, 240_000);

  afterAll(async () => {
    await pair?.stop();
    await ca?.stop();
    await controlPlane?.stop();
  });

  it.each(['SIGKILL', 'SIGTERM'] as const)('%s: watches resume, TokenReviews recover, no pod without a certificate beyond the outage + 6 s', async (signal) => {
    const traffic = await startTraffic({ port: pair.port, appName: 'server-app' });
    await eventually('traffic to flow', () => traffic.report().requests > 10);
    const readiness = [watchReadiness(server), watchReadiness(client)];
    const { exitedMs, unavailableMs: outageMs } = await controlPlane.restartApiserver({ signal, downMs: DOWN_MS });
    const back = [leafSerials(await server.envoy.certs())[0], leafSerials(await client.envoy.certs())[0]];

    // Watches resumed: the CA's root ConfigMap informer sees the delete and its controller writes it back.
    await cluster.kube().core.deleteNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns });
    await eventually('the CA to recreate istio-ca-root-cert', async () => (await cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns })).data?.['root-cert.pem'], { context: () => ca.proc.tail(10) });
    // TokenReviews recovered: both agents renew (every CSR needs a fresh review).
    await eventually('both agents to renew after the restart', async () => leafSerials(await server.envoy.certs())[0] !== back[0] && leafSerials(await client.envoy.certs())[0] !== back[1], { timeoutMs: 3 * CERT_TTL_S * 1000, context: () => ca.proc.tail(10) });
    await eventually('both agents ready', async () => (await httpGet(`${server.agent.statusUrl}/readyz`)).status === 200 && (await httpGet(`${client.agent.statusUrl}/readyz`)).status === 200);
    const [serverGap, clientGap] = await Promise.all(readiness.map((r) => r.stop()));
    const report = await traffic.stop();
    console.log(`[apiserver-restart] ${signal}: apiserver exited after ${exitedMs} ms, unavailable ${outageMs} ms; longest stretch without a valid certificate: server ${serverGap} ms, client ${clientGap} ms; ${report.requests} requests + ${report.pings} pings, ${report.failures.length} failed`);
    expect(Math.max(serverGap!, clientGap!)).toBeLessThanOrEqual(outageMs + 6000);
    expect(await requestOnce(pair.port, 'after')).toBe('server-app:after');
  }, 180_000);
});
