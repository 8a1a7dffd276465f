/**
 * The ServiceAccount-secret mode and the root ConfigMap, end to end with the CA's controllers: the CA writes
 * `istio.<sa>` (key.pem, cert-chain.pem, root-cert.pem) and rotates it; kubelet's atomic Secret volume is
 * simulated (timestamped dir + `..data` symlink swap); the agent serves it in file-mounted mode to a real Envoy
 * and pushes each rotation. Beside it, an agent in CA mode trusts the root that reached its pod through the
 * istio-ca-root-cert ConfigMap. The controllers only touch this test's namespace (--namespace-selector).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, startPod, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { parseCertificates } from '../../src/pki/index.js';

const leafOf = (chainPem: string) => parseCertificates(chainPem)[0]!;
import { ensureBuilt, eventually, requestOnce, startLineApp, type LineApp } from './support/agent-env.js';
import { scopedNamespaces, startCa, type RunningCa } from './support/ca.js';
import { leafSerials, startSidecar, type Sidecar } from './support/sidecar.js';

/** Writes `files` into `dir` the way kubelet updates a Secret volume: a new timestamped dir, then an atomic `..data` swap. */
function mountAtomically(dir: string, files: Record<string, string>): void {
  fs.mkdirSync(dir, { recursive: true });
  const version = `..${Date.now()}_${randomBytes(3).toString('hex')}`;
  fs.mkdirSync(path.join(dir, version));
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, version, name), content, { mode: 0o400 });
  fs.symlinkSync(version, path.join(dir, '..data_tmp'));
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  for (const name of Object.keys(files)) {
    const link = path.join(dir, name);
    if (!fs.existsSync(link)) fs.symlinkSync(path.join('..data', name), link);
  }
}

describe('istio.<sa> Secret served by the agent in file-mounted mode, and the root ConfigMap in CA mode', () => {
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let ns: string;
  let app: LineApp;
  let server: Sidecar;
  let client: Sidecar;
  const pods: SimulatedPod[] = [];
  let secretData: () => Promise<Record<string, string> | undefined>;

  beforeAll(async () => {
    await ensureBuilt();
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/cs-');
    const scoped = await scopedNamespaces(cluster, 'agent-sa', { 'citadel.io/sa-secrets': 'enabled' });
    const caNs = scoped.caNs;
    ns = scoped.ns;
    await cluster.createServiceAccount(ns, 'legacy');
    ca = await startCa({
      kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true,
      extraArgs: [...scoped.selectorArgs, '--sa-secrets', 'labeled', '--workload-cert-ttl', '40s'],
    });
    secretData = async () => {
      try {
        const s = await cluster.kube().core.readNamespacedSecret({ name: 'istio.legacy', namespace: ns });
        if (!s.data) return undefined;
        return Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
      } catch {
        return undefined;
      }
    };
    const first = await eventually('the CA to write istio.legacy', secretData, { timeoutMs: 60_000, context: () => ca.proc.tail(20) });
    expect(Object.keys(first).sort()).toEqual(['cert-chain.pem', 'key.pem', 'root-cert.pem']);

    const serverDir = fs.mkdtempSync('/tmp/cs-');
    mountAtomically(path.join(serverDir, 'etc', 'certs'), first);
    app = await startLineApp('legacy-app');
    // The client: CA mode in the same namespace, trusting the root from the ConfigMap (kubelet simulator).
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'client' });
    pods.push(pod);
    await pod.waitForRootCert({ timeoutMs: 60_000 });
    const idClient = `spiffe://cluster.local/ns/${ns}/sa/client`;
    server = await startSidecar({ name: 'legacy', root: serverDir, logDir: workDir, inbound: { appPort: app.port, allowedClientIds: [idClient] } });
    client = await startSidecar({
      name: 'client', root: pod.root, logDir: workDir,
      agentArgs: ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName],
      outbounds: [{ upstreamPort: server.inboundPort, serverId: `spiffe://cluster.local/ns/${ns}/sa/legacy` }],
    });
  }, 240_000);

  afterAll(async () => {
    await client?.stop();
    await server?.stop();
    await app?.close();
    await ca?.stop();
    for (const p of pods) await p.delete().catch(() => undefined);
  });

  it('serves the Secret\'s certificate, and a CA-mode client that trusts the ConfigMap root reaches it', async () => {
    const mounted = fs.readFileSync(path.join(server.root, 'etc', 'certs', 'cert-chain.pem'), 'utf8');
    expect(leafSerials(await server.envoy.certs())).toEqual([leafOf(mounted).serialHex]);
    expect(leafOf(mounted).uris).toEqual([`spiffe://cluster.local/ns/${ns}/sa/legacy`]);
    expect(fs.readFileSync(server.agent.proc.logPath, 'utf8')).toContain('file-mounted');
    expect(await requestOnce(client.outboundPorts[0]!, 'hi')).toBe('legacy-app:hi');
  });

  it('pushes the CA\'s rotation of the Secret to Envoy after kubelet swaps the volume', async () => {
    const mountedSerial = leafSerials(await server.envoy.certs())[0]!;
    const rotated = await eventually('the CA to rotate istio.legacy', async () => {
      const d = await secretData();
      return d && leafOf(d['cert-chain.pem']!).serialHex !== mountedSerial ? d : undefined;
    }, { timeoutMs: 45_000, intervalMs: 1000, context: () => ca.proc.tail(10) });
    const newSerial = leafOf(rotated['cert-chain.pem']!).serialHex;
    mountAtomically(path.join(server.root, 'etc', 'certs'), rotated);
    await eventually('Envoy to serve the rotated Secret', async () => leafSerials(await server.envoy.certs())[0] === newSerial, { timeoutMs: 15_000, context: () => server.agent.proc.tail(10) });
    expect(await requestOnce(client.outboundPorts[0]!, 'after-rotation')).toBe('legacy-app:after-rotation');
  }, 70_000);
});
