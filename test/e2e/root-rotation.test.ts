/**
 * Root changes with live traffic between real Envoys, while pods see ConfigMap changes late, as with a real kubelet
 * (issue 19). The CA runs its controllers (root ConfigMaps in this test's namespace only); the kubelet simulator
 * copies istio-ca-root-cert into each pod `LAG_MS` after every change. A client Envoy opens a new mTLS connection
 * every 50 ms and pings a long-lived one every 500 ms; certificates live 16 s, so both agents renew several times
 * across each change. 0 failed requests is the bar. The two plugged-in tests run in order on the same CA (the
 * careful way starts from the root the quick way left); the self-signed one has a CA of its own.
 *
 * The lag defaults to 4 s so the suite stays short; the mechanism does not depend on its length as long as the CA's
 * publish delay is longer (here twice the lag). For the figure run it by hand with a real kubelet's lag:
 *   CITADEL_TEST_KUBELET_LAG_MS=30000 npx vitest run test/e2e/root-rotation.test.ts
 * and with CITADEL_TEST_PUBLISH_DELAY_S=0 to see the failures the publish delay prevents.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, writeFileAtomic, type TestCluster } from '../harness/index.js';
import { parseCertificate, parseCertificates, type ParsedCertificate } from '../../src/pki/index.js';
import { ensureBuilt, eventually } from './support/agent-env.js';
import { createCaMaterial, scopedNamespaces, startCa, type RunningCa } from './support/ca.js';
import { startMtlsPair, type MtlsPair, type Sidecar } from './support/sidecar.js';
import { startTraffic } from './support/traffic.js';

const LAG_MS = Number(process.env.CITADEL_TEST_KUBELET_LAG_MS ?? 4000);
const PUBLISH_DELAY_S = Number(process.env.CITADEL_TEST_PUBLISH_DELAY_S ?? Math.ceil((2 * LAG_MS) / 1000));
const CERT_TTL_S = 16;
const CACERTS_FILES = ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem'] as const;

/** Serials of the chain Envoy presents in `default`: the leaf, then the intermediates the agent serves with it. */
async function presentedChainSerials(s: Sidecar): Promise<string[]> {
  const dump = await s.envoy.configDump('dynamic_active_secrets', '^default$');
  type Dumped = { secret?: { tls_certificate?: { certificate_chain?: { inline_bytes?: string } } } };
  const b64 = (dump.configs[0] as Dumped | undefined)?.secret?.tls_certificate?.certificate_chain?.inline_bytes;
  if (!b64) return [];
  return parseCertificates(Buffer.from(b64, 'base64').toString('utf8')).map((c) => c.serialHex);
}

/** Waits until each sidecar presents a leaf other than the one it presents now (its next renewal, at half-life). */
async function renewOnceMore(sidecars: readonly Sidecar[]): Promise<void> {
  const leaves = await Promise.all(sidecars.map(async (s) => (await presentedChainSerials(s))[0]));
  for (const [i, s] of sidecars.entries()) {
    await eventually(`${s.name} to renew once more`, async () => ((await presentedChainSerials(s))[0] ?? leaves[i]) !== leaves[i], {
      timeoutMs: 2 * CERT_TTL_S * 1000, intervalMs: 500, context: () => s.agent.proc.tail(15),
    });
  }
}

describe(`root change with live traffic, pods ${LAG_MS} ms behind the ConfigMap, publish delay ${PUBLISH_DELAY_S} s`, () => {
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let pair: MtlsPair;
  let client: Sidecar;
  let server: Sidecar;

  beforeAll(async () => {
    await ensureBuilt();
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/cr-');
    const { caNs, ns, selectorArgs } = await scopedNamespaces(cluster, 'rotation');
    ca = await startCa({
      kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true,
      extraArgs: [...selectorArgs, '--sa-secrets', 'off', '--cacerts-poll-interval', '1s', '--plugged-root-publish-delay', `${PUBLISH_DELAY_S}s`],
    });
    pair = await startMtlsPair({
      cluster, namespace: ns, logDir: workDir, rootCertLagMs: LAG_MS,
      agentArgs: ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', `${CERT_TTL_S}s`],
    });
    ({ client, server } = pair);
  }, 180_000);

  afterAll(async () => {
    await pair?.stop();
    await ca?.stop();
  });

  /** Waits until both workloads present certificates under `intermediate`, then for one more renewal of each. */
  async function bothRenewUnder(intermediate: ParsedCertificate, extraTimeoutMs = 0): Promise<void> {
    for (const s of [server, client]) {
      await eventually(`${s.name} to present a certificate under ${intermediate.subject}`, async () => (await presentedChainSerials(s))[1] === intermediate.serialHex, {
        timeoutMs: extraTimeoutMs + 3 * CERT_TTL_S * 1000, intervalMs: 500, context: () => `${ca.proc.tail(15)}\n${s.agent.proc.tail(15)}`,
      });
    }
    await renewOnceMore([server, client]);
  }

  const readPem = (dir: string, file: string) => fs.readFileSync(path.join(dir, file), 'utf8');
  const install = (files: Partial<Record<(typeof CACERTS_FILES)[number], string>>) => {
    for (const [f, pem] of Object.entries(files)) writeFileAtomic(path.join(ca.cacertsDir, f), pem);
  };

  it('plugged-in root replaced the quick way (the whole cacerts set at once): 0 failed requests', async () => {
    const traffic = await startTraffic({ port: pair.port, appName: 'server-app' });
    await eventually('traffic to flow', () => traffic.report().requests > 10);
    const next = path.join(workDir, 'next-ca');
    await createCaMaterial(next);
    const changedAt = Date.now();
    install(Object.fromEntries(CACERTS_FILES.map((f) => [f, readPem(next, f)])));
    // Both workloads renew under the new intermediate (through the CA's new serving certificate), and once more.
    await bothRenewUnder(parseCertificate(readPem(next, 'ca-cert.pem')), PUBLISH_DELAY_S * 1000);
    const switchedAfterMs = Date.now() - changedAt;
    const report = await traffic.stop();
    console.log(`[root-rotation] quick way, lag ${LAG_MS} ms, publish delay ${PUBLISH_DELAY_S} s: ${report.requests} requests + ${report.pings} pings, ${report.failures.length} failed`);
    expect(report.failures).toEqual([]);
    expect(switchedAfterMs).toBeGreaterThanOrEqual(PUBLISH_DELAY_S * 1000);
    expect(fs.readFileSync(ca.proc.logPath, 'utf8')).toContain('new CA root published in the trust bundle');
  }, 240_000);

  it('plugged-in root changed the careful way (both roots first; signing after every pod has them): 0 failed requests', async () => {
    const traffic = await startTraffic({ port: pair.port, appName: 'server-app' });
    await eventually('traffic to flow', () => traffic.report().requests > 10);
    const third = path.join(workDir, 'third-ca');
    await createCaMaterial(third);
    const thirdRoot = readPem(third, 'root-cert.pem');
    const both = readPem(ca.cacertsDir, 'root-cert.pem') + thirdRoot;
    // Step 2 of docs/rotation.md: publish both roots, keep signing with the current intermediate.
    install({ 'root-cert.pem': both });
    // Wait for kubelet propagation: every pod's root file holds the new root.
    for (const p of pair.pods) await p.waitForRootCert({ timeoutMs: LAG_MS + 30_000, predicate: (pem) => pem.includes(thirdRoot.trim()) });
    // Step 3: the new intermediate signs; root-cert.pem still holds both roots.
    install({ 'ca-cert.pem': readPem(third, 'ca-cert.pem'), 'ca-key.pem': readPem(third, 'ca-key.pem'), 'cert-chain.pem': readPem(third, 'cert-chain.pem') });
    await bothRenewUnder(parseCertificate(readPem(third, 'ca-cert.pem')));
    const report = await traffic.stop();
    console.log(`[root-rotation] careful way, lag ${LAG_MS} ms: ${report.requests} requests + ${report.pings} pings, ${report.failures.length} failed`);
    expect(report.failures).toEqual([]);
  }, 240_000);
});

describe(`self-signed root rotated with live traffic, pods ${LAG_MS} ms behind the ConfigMap, publish delay ${PUBLISH_DELAY_S} s`, () => {
  let ca: RunningCa;
  let pair: MtlsPair;

  beforeAll(async () => {
    await ensureBuilt();
    const cluster = getCluster();
    const workDir = fs.mkdtempSync('/tmp/cr-');
    const { caNs, ns, selectorArgs } = await scopedNamespaces(cluster, 'rotation-ss');
    // A 10-minute root is always in its last 95 %: the leader rotates it at every check once the last one signs.
    ca = await startCa({
      kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true, selfSigned: true,
      extraArgs: [...selectorArgs, '--sa-secrets', 'off', '--self-signed-ca-cert-ttl', '10m', '--self-signed-root-grace-percent', '95',
        '--self-signed-root-check-interval', '1s', '--self-signed-root-publish-delay', `${PUBLISH_DELAY_S}s`],
    });
    pair = await startMtlsPair({
      cluster, namespace: ns, logDir: workDir, rootCertLagMs: LAG_MS,
      agentArgs: ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', `${CERT_TTL_S}s`],
    });
  }, 180_000);

  afterAll(async () => {
    await pair?.stop();
    await ca?.stop();
  });

  it('three rotations: 0 failed requests', async () => {
    const traffic = await startTraffic({ port: pair.port, appName: 'server-app' });
    const rotations = () => fs.readFileSync(ca.proc.logPath, 'utf8').split('rotated the self-signed root (same key)').length - 1;
    await eventually('three root rotations', () => rotations() >= 3, { timeoutMs: 6 * (PUBLISH_DELAY_S + 2) * 1000, intervalMs: 500, context: () => ca.proc.tail(10) });
    // One more renewal of each under the latest root, with the traffic still flowing.
    await renewOnceMore([pair.server, pair.client]);
    const report = await traffic.stop();
    console.log(`[root-rotation] self-signed, ${rotations()} rotations, lag ${LAG_MS} ms, publish delay ${PUBLISH_DELAY_S} s: ${report.requests} requests + ${report.pings} pings, ${report.failures.length} failed`);
    expect(report.failures).toEqual([]);
  }, 240_000);
});
