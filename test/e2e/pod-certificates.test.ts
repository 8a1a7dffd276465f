/**
 * deploy/examples/pod-certificates end to end: plain-app has no sidecar and gets its SVID the kubelet way
 * (PodCertificateRequest made by the node, signed by `citadel ca`, projected with the ClusterTrustBundle), mesh-app
 * is a mesh workload (citadel agent + real Envoy, certificate by CSR). Both run as local processes from their
 * Deployments' templates, like `npm run demo`: each "pod" gets its own loopback address, and only addresses, the
 * pod root of mounted paths and the signer name (demo's CA owns the default one in this shared cluster) are
 * substituted. They call each other over mTLS in both directions, under one root.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadAllYaml, type V1Deployment, type V1EnvVar, type V1PodSpec } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCertificates, splitPem } from '../../src/pki/index.js';
import { getCluster, projectPodCertificate, startEnvoy, startNode, startPod, type EnvoyProcess, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { startProcess, type ManagedProcess } from '../harness/process.js';
import { REPO_ROOT } from '../support/build.js';
import { FakeClock } from '../support/fake-clock.js';
import { ensureBuilt, eventually, httpGet, metricValue, startAgent, startLineApp, type RunningAgent } from './support/agent-env.js';
import { startCa, type RunningCa } from './support/ca.js';
import { leafSerials, startSidecar } from './support/sidecar.js';

const run = promisify(execFile);
const EXAMPLE = path.join(REPO_ROOT, 'deploy/examples/pod-certificates');
const NS = 'pod-certificates';
const SIGNER = 'citadel.io/e2e-pod-certificates';
const SELECTOR_LABEL = 'citadel-e2e-pod-certificates';
const id = (sa: string) => `spiffe://cluster.local/ns/${NS}/sa/${sa}`;

let cluster: TestCluster;
let workDir: string;
let ca: RunningCa | undefined;
const pods: SimulatedPod[] = [];
const processes: Array<ManagedProcess | RunningAgent | EnvoyProcess> = [];
const stops: Array<() => Promise<void>> = [];
// Own loopback addresses, so the manifests' ports are used unchanged.
const base = `127.${10 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}`;
const ip = { 'mesh-app': `${base}.11`, 'plain-app': `${base}.12` } as const;

/** What a local run changes, and nothing else: addresses, mounted paths under the pod root, the signer name. */
function localise(text: string, self: keyof typeof ip, root: string): string {
  return text
    .replaceAll('0.0.0.0', ip[self]).replaceAll('127.0.0.1', ip[self])
    .replaceAll(`mesh-app.${NS}.svc.cluster.local`, ip['mesh-app']).replaceAll(`plain-app.${NS}.svc.cluster.local`, ip['plain-app'])
    .replaceAll('/var/run/secrets/', `${root}/var/run/secrets/`);
}

const envOf = (env: V1EnvVar[] | undefined, self: keyof typeof ip, root: string) =>
  Object.fromEntries((env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, localise(e.value!, self, root)]));

// The rendered example (as applied), read here rather than from the cluster: deploy.test.ts applies the same
// example with the default signer name.
let manifests: Array<{ kind?: string; metadata?: { name?: string } }> = [];
const deployment = (name: string) => manifests.find((m) => m.kind === 'Deployment' && m.metadata?.name === name) as V1Deployment;

async function startApp(name: keyof typeof ip, root: string, env: Record<string, string>): Promise<void> {
  const proc = await startProcess({
    name, command: process.execPath, args: [path.join(EXAMPLE, 'app/app.mjs')], cwd: root,
    env: { PATH: process.env.PATH, ...env }, logPath: path.join(workDir, `${name}.log`),
  });
  processes.push(proc);
}

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-podcert-e2e-'));
  // The example exactly as kustomize renders it, with this run's signer name.
  const { stdout: rendered } = await run(cluster.info.tools.kubectl, ['kustomize', EXAMPLE], { maxBuffer: 16 << 20 });
  expect(rendered).toContain('signerName: citadel.io/workload');
  const ours = rendered.replaceAll('citadel.io/workload', SIGNER);
  manifests = loadAllYaml(ours) as typeof manifests;
  const applied = await cluster.kubectl(['apply', '-f', '-'], { input: ours });
  expect(applied.code, applied.stderr).toBe(0);
  await cluster.kubectl(['label', 'namespace', NS, `${SELECTOR_LABEL}=yes`, '--overwrite']);

  const caNamespace = await cluster.createNamespace('podcert-e2e-ca');
  ca = await startCa({
    kubeconfigPath: cluster.kubeconfigPath, namespace: caNamespace, workDir, controllers: true,
    extraArgs: ['--sa-secrets', 'off', '--namespace-selector', `${SELECTOR_LABEL}=yes`, '--pod-certificate-signer', SIGNER,
      '--lease-duration', '3s', '--lease-renew-deadline', '2s', '--lease-retry-period', '500ms'],
  });
}, 180_000);

afterAll(async () => {
  for (const stop of stops) await stop().catch(() => {});
  for (const p of processes.reverse()) await p.stop().catch(() => {});
  await Promise.all(pods.map((p) => p.delete().catch(() => {})));
  await ca?.stop();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
});

describe('deploy/examples/pod-certificates', () => {
  it('plain-app (kubelet-projected SVID, no sidecar) and mesh-app (agent + Envoy) call each other over mTLS under one root', async () => {
    const node = await startNode(cluster);

    // plain-app: the Pod from its template on our node; the kubelet simulator fills the projected volume.
    const plainTemplate = deployment('plain-app').spec!.template;
    const plainPod = await startPod(cluster, {
      namespace: NS, serviceAccount: 'plain-app', nodeName: node.name, watchRootCert: false,
      labels: plainTemplate.metadata?.labels ?? {}, podSpec: plainTemplate.spec as V1PodSpec,
    });
    pods.push(plainPod);
    const container = plainTemplate.spec!.containers[0]!;
    const mount = container.volumeMounts!.find((m) => m.name === 'svid')!.mountPath.replace(/^\//, '');
    const sources = plainTemplate.spec!.volumes!.find((v) => v.name === 'svid')!.projected!.sources!;
    const pc = sources.find((s) => s.podCertificate)!.podCertificate!;
    const ctb = sources.find((s) => s.clusterTrustBundle)!.clusterTrustBundle!;
    expect(pc.signerName).toBe(SIGNER);
    const volume = await projectPodCertificate(cluster, node, plainPod, {
      signerName: pc.signerName, keyType: pc.keyType as 'ECDSAP256', maxExpirationSeconds: pc.maxExpirationSeconds,
      credentialBundlePath: path.join(mount, pc.credentialBundlePath!),
      trustBundle: { signerName: ctb.signerName!, path: path.join(mount, ctb.path) },
    });
    stops.push(() => volume.stop());
    expect(volume.state().phase).toBe('issued');
    await eventually('projected trust bundle', () => fs.existsSync(volume.trustBundlePath!));
    await startApp('plain-app', plainPod.root, envOf(container.env, 'plain-app', plainPod.root));

    // mesh-app: agent (CSR with the pod's token) + Envoy with the example's own bootstrap + the plain app.
    const meshTemplate = deployment('mesh-app').spec!.template;
    const meshPod = await startPod(cluster, {
      namespace: NS, serviceAccount: 'mesh-app', labels: meshTemplate.metadata?.labels ?? {}, podSpec: meshTemplate.spec as V1PodSpec,
    });
    pods.push(meshPod);
    await meshPod.waitForRootCert();
    const agent = await startAgent({
      name: 'mesh-app', cwd: meshPod.root, logDir: workDir,
      args: ['--ca-address', ca!.grpcAddress, '--ca-server-name', ca!.serverName],
      env: { POD_NAMESPACE: NS, SERVICE_ACCOUNT: 'mesh-app' },
    });
    processes.push(agent);
    await agent.waitReady();
    const bootstrap = localise(fs.readFileSync(path.join(EXAMPLE, 'envoy/mesh-app.yaml'), 'utf8'), 'mesh-app', meshPod.root);
    const envoy = await startEnvoy({ bootstrap, name: 'mesh-app', cwd: meshPod.root });
    processes.push(envoy);
    await envoy.waitReady();
    const meshApp = meshTemplate.spec!.containers.find((c) => c.name === 'app')!;
    await startApp('mesh-app', meshPod.root, envOf(meshApp.env, 'mesh-app', meshPod.root));

    // mesh-app -> (Envoy, mTLS) -> plain-app, which verified mesh-app's SVID itself.
    const toPlain = await eventually('mesh-app -> plain-app', async () => {
      const r = await httpGet(`http://${ip['mesh-app']}:8080/call/plain-app`, 8000);
      return r.status === 200 ? JSON.parse(r.body) : undefined;
    });
    expect(toPlain.response).toEqual({ workload: 'plain-app', caller: id('mesh-app') });
    // plain-app -> (its own mTLS) -> mesh-app's Envoy, which verified plain-app's kubelet-issued SVID.
    const toMesh = await eventually('plain-app -> mesh-app', async () => {
      const r = await httpGet(`http://${ip['plain-app']}:8080/call/mesh-app`, 8000);
      return r.status === 200 ? JSON.parse(r.body) : undefined;
    });
    expect(toMesh.response).toEqual({ workload: 'mesh-app', caller: id('plain-app') });

    // One root: the ClusterTrustBundle, the root ConfigMap and what mesh-app's Envoy trusts are the CA's root.
    expect(fs.readFileSync(volume.trustBundlePath!, 'utf8')).toBe(ca!.rootPem);
    expect(await meshPod.waitForRootCert()).toBe(ca!.rootPem);
    const rootSerial = parseCertificates(ca!.rootPem)[0]!.serialHex;
    const trusted = (await envoy.certs()).certificates.flatMap((c) => (c.ca_cert ?? []).map((d) => d.serial_number));
    expect(trusted).toContain(rootSerial);

    // One audit line for the kubelet-path certificate, as for every certificate the CA issues.
    const audit = ca!.proc.tail(400).split('\n').filter((l) => l.includes('"authn":"pod-certificate-request"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(audit).toContainEqual(expect.objectContaining({ audit: 'certificate-issued', identity: id('plain-app'), pod: plainPod.name, node: node.name }));

    // plain-app refuses a caller without a certificate at the handshake.
    const refused = await new Promise<string>((resolve) => {
      https.get(`https://${ip['plain-app']}:8443/`, { rejectUnauthorized: false, timeout: 5000 }, (res) => resolve(`HTTP ${res.statusCode}`))
        .on('error', (err) => resolve(err.message));
    });
    expect(refused).not.toMatch(/^HTTP 200/);
  });

  it('citadel agent --pod-certificate-bundle gives an Envoy sidecar the kubelet-projected SVID (no CSR to the CA) and follows its refresh', async () => {
    const node = await startNode(cluster);
    // plain-app's pod spec (the namespace enforces Pod Security "restricted"), as ServiceAccount edge.
    const pod = await startPod(cluster, {
      namespace: NS, serviceAccount: 'edge', nodeName: node.name, watchRootCert: false, podSpec: deployment('plain-app').spec!.template.spec as V1PodSpec,
    });
    pods.push(pod);
    const clock = new FakeClock(Date.now());
    const volume = await projectPodCertificate(cluster, node, pod, {
      signerName: SIGNER, keyType: 'ECDSAP256', credentialBundlePath: 'var/run/secrets/citadel/credentialbundle.pem',
      trustBundle: { signerName: SIGNER, path: 'var/run/secrets/citadel/trust-bundle.pem' }, clock,
    });
    stops.push(() => volume.stop());
    await eventually('projected trust bundle', () => fs.existsSync(volume.trustBundlePath!));
    const app = await startLineApp('edge-app');
    stops.push(() => app.close());
    const sidecar = await startSidecar({
      name: 'edge', root: pod.root, logDir: workDir,
      agentArgs: ['--pod-certificate-bundle', 'var/run/secrets/citadel/credentialbundle.pem'],
      inbound: { appPort: app.port, allowedClientIds: [id('edge')] },
    });
    stops.push(() => sidecar.stop());
    const leafSerial = () => parseCertificates(splitPem(fs.readFileSync(volume.credentialBundlePath, 'utf8'), 'CERTIFICATE').join(''))[0]!.serialHex;
    const first = leafSerial();
    expect(leafSerials(await sidecar.envoy.certs())).toEqual([first]);

    // A client holding the same kubelet-issued credentials passes Envoy's mTLS (SPIFFE ID allow-list) to the app.
    const bundle = fs.readFileSync(volume.credentialBundlePath, 'utf8');
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1', port: sidecar.inboundPort, key: bundle, cert: bundle.slice(bundle.indexOf('-----BEGIN CERTIFICATE')),
        ca: fs.readFileSync(volume.trustBundlePath!), checkServerIdentity: (_h, cert) => (cert.subjectaltname === `URI:${id('edge')}` ? undefined : new Error(cert.subjectaltname)),
      }, () => socket.write('hello\n'));
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => { resolve(d.trim()); socket.destroy(); });
      socket.on('error', reject);
    });
    expect(answer).toBe('edge-app:hello');
    // The agent never called the CA.
    expect(metricValue(await sidecar.agent.metrics(), 'istio_agent_num_outgoing_requests{request_type="csr"}') ?? 0).toBe(0);

    // The kubelet refreshes at beginRefreshAt; the agent pushes the new certificate to Envoy. The CA dates the new
    // certificate by the real clock, so its refresh time (plus the kubelet's random jitter) can already be behind
    // this fake clock, and the simulated kubelet then refreshes again at once: any later certificate will do.
    await clock.advance(volume.state().refreshDueAt! - clock.now());
    await volume.waitFor((st) => st.requests.length >= 2 && leafSerial() !== first);
    await eventually('Envoy holds the refreshed certificate', async () => {
      const current = leafSerial();
      return current !== first && leafSerials(await sidecar.envoy.certs()).includes(current);
    });
  });
});
