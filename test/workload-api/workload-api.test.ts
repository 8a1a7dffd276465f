/**
 * The SPIFFE Workload API end to end with real clients (issue 17's "done when"): the real CA (plugged-in keys,
 * TokenReview, controllers publishing istio-ca-root-cert with spiffe-bundle.json, the https_spiffe bundle
 * endpoint), pods with Pod-bound tokens and the kubelet simulator projecting the ConfigMap, one agent per pod, and
 *   - go-spiffe v2 (test/workload-api/go/spiffeclient): X509Source and JWTSource get, rotate and validate;
 *     two programs on two agents do mTLS; one does mTLS with an Envoy sidecar in both directions; the bundle
 *     endpoint fetched with go-spiffe's federation client;
 *   - spiffe-helper writes the SVID, key, bundle, a JWT-SVID and the JWT bundle, and rewrites them on rotation.
 * Certificates live 30 s (renewed at half-life) and JWT keys rotate every 20 s, so rotations happen during the run.
 *
 *   pod A (sa alpha): agent; spiffeclient serve (mTLS, trust domain members); spiffe-helper
 *   pod B (sa beta):  agent; spiffeclient get -> A
 *   pod E (sa envoy): agent + Envoy: inbound mTLS (only beta) -> http app; outbound -> A's server (expects alpha)
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, startPod, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { freePort } from '../harness/ports.js';
import { startProcess, type ManagedProcess } from '../harness/process.js';
import { ensureBuilt, eventually, metricValue, startAgent, type RunningAgent } from '../e2e/support/agent-env.js';
import { startCa, type RunningCa } from '../e2e/support/ca.js';
import { startSidecar, type Sidecar } from '../e2e/support/sidecar.js';
import { provisionWorkloadApiTools, runSpiffeClient, startSpiffeServer, workloadEnv, type WorkloadApiTools } from './tools.js';

const TD = 'cluster.local';
const LABEL = 'citadel-test/workload-api';

function openssl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, (err, stdout, stderr) => (err ? reject(new Error(`openssl ${args.join(' ')}: ${stderr}`)) : resolve(stdout)));
  });
}

/** One HTTP/1.0 request over plain TCP (through Envoy's outbound listener); resolves with the whole answer. */
function rawHttpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET / HTTP/1.0\r\nHost: a\r\n\r\n'));
    let data = '';
    socket.setEncoding('utf8');
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
    socket.on('data', (c: string) => (data += c));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

describe('SPIFFE Workload API with go-spiffe, spiffe-helper and Envoy', () => {
  let tools: WorkloadApiTools;
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let caNs: string;
  let ns: string;
  let bundlePort: number;
  const pods: SimulatedPod[] = [];
  const procs: ManagedProcess[] = [];
  const agents: RunningAgent[] = [];
  let podA: SimulatedPod;
  let podB: SimulatedPod;
  let envoySidecar: Sidecar;
  let appServer: http.Server;
  let serverPort: number;
  const id = (sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

  beforeAll(async () => {
    [tools] = await Promise.all([provisionWorkloadApiTools(), ensureBuilt()]);
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/wapi-e2e-');
    caNs = await cluster.createNamespace('wapi-ca');
    ns = await cluster.createNamespace('wapi', { [LABEL]: 'true' });
    bundlePort = await freePort();
    ca = await startCa({
      kubeconfigPath: cluster.kubeconfigPath,
      namespace: caNs,
      workDir,
      controllers: true,
      extraArgs: [
        '--namespace-selector', `${LABEL}=true`,
        '--bundle-endpoint-address', `127.0.0.1:${bundlePort}`,
        '--jwt-key-rotation', '20s',
        '--jwt-svid-ttl', '10s',
        '--max-jwt-svid-ttl', '20s',
        '--bundle-refresh-hint', '10s',
      ],
    });
    const agentArgs = ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', '30s', '--jwt-svid-ttl', '10s'];
    const pod = async (serviceAccount: string) => {
      const p = await startPod(cluster, { namespace: ns, serviceAccount });
      pods.push(p);
      // The CA's controllers publish istio-ca-root-cert with spiffe-bundle.json; the simulator projects both.
      await p.waitForRootCert();
      await eventually('spiffe-bundle.json in the pod', () => fs.existsSync(path.join(path.dirname(p.rootCertPath), 'spiffe-bundle.json')));
      return p;
    };
    podA = await pod('alpha');
    podB = await pod('beta');
    const podE = await pod('envoy');
    for (const [name, p] of [['a', podA], ['b', podB]] as const) {
      const agent = await startAgent({ name, cwd: p.root, args: agentArgs, logDir: workDir });
      agents.push(agent);
      await agent.waitReady();
    }
    const server = await startSpiffeServer(tools.spiffeClient, { socketPath: podA.sdsSocketPath, allowTrustDomain: TD, logPath: path.join(workDir, 'server-a.log') });
    procs.push(server.proc);
    serverPort = server.port;
    appServer = http.createServer((_req, res) => res.end('e-app says hi'));
    await new Promise<void>((r) => appServer.listen(0, '127.0.0.1', r));
    envoySidecar = await startSidecar({
      name: 'e', root: podE.root, logDir: workDir, agentArgs,
      inbound: { appPort: (appServer.address() as net.AddressInfo).port, allowedClientIds: [id('beta')] },
      outbounds: [{ upstreamPort: serverPort, serverId: id('alpha') }],
    });
  }, 15 * 60_000);

  afterAll(async () => {
    for (const p of procs) await p.stop();
    await envoySidecar?.stop();
    for (const a of agents) await a.stop();
    appServer?.close();
    await ca?.stop();
    for (const p of pods) await p.delete().catch(() => undefined);
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('X509Source gets the pod\'s SVID through SPIFFE_ENDPOINT_SOCKET, verifies it, and sees the rotation', async () => {
    const [first, second] = await runSpiffeClient(tools.spiffeClient, podA.sdsSocketPath, ['x509', '-updates', '2', '-timeout', '60s'], 70_000);
    expect(first).toMatchObject({ spiffeId: id('alpha'), verified: true, roots: 1, chainLength: 2 });
    expect(second).toMatchObject({ spiffeId: id('alpha'), verified: true });
    expect(second!.serial).not.toBe(first!.serial);
  });

  it('JWTSource gets a JWT-SVID that validates locally and through the agent, and follows a JWT key rotation', async () => {
    const rounds = await runSpiffeClient(tools.spiffeClient, podB.sdsSocketPath, ['jwt', '-audience', 'payments', '-bundle-updates', '1', '-timeout', '60s'], 70_000);
    expect(rounds).toHaveLength(2);
    for (const r of rounds) {
      expect(r).toMatchObject({ spiffeId: id('beta'), audience: ['payments'], localValid: true, agentValid: true, localSpiffeId: id('beta'), agentSpiffeId: id('beta') });
      expect((r.bundleKeyIds as string[]).length).toBe(3); // previous, current, next
    }
    expect(rounds[1]!.bundleKeyIds).not.toEqual(rounds[0]!.bundleKeyIds);
    expect((rounds[0]!.agentClaims as Record<string, unknown>).sub).toBe(id('beta'));
    const metrics = await agents[1]!.metrics();
    expect(metricValue(metrics, 'istio_agent_num_outgoing_requests{request_type="jwt-svid"}')).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, 'citadel_agent_workload_api_requests_total{method="ValidateJWTSVID",code="OK"}')).toBe(2);
  });

  it('two go-spiffe programs on two agents do mTLS with each other', async () => {
    const [answer] = await runSpiffeClient(tools.spiffeClient, podB.sdsSocketPath, ['get', '-url', `https://127.0.0.1:${serverPort}/`, '-server-id', id('alpha')]);
    expect(answer).toMatchObject({ status: 200, client: id('beta') });
    expect(JSON.parse(answer!.body as string)).toEqual({ caller: id('beta'), server: id('alpha') });
    // The client refuses a server with another identity.
    await expect(runSpiffeClient(tools.spiffeClient, podB.sdsSocketPath, ['get', '-url', `https://127.0.0.1:${serverPort}/`, '-server-id', id('gamma'), '-timeout', '10s'])).rejects.toThrow(/unexpected ID|authoriz/i);
  });

  it('a go-spiffe program and an Envoy sidecar do mTLS with each other, both ways', async () => {
    // go-spiffe (beta) -> Envoy inbound (accepts only beta) -> app.
    const [viaEnvoy] = await runSpiffeClient(tools.spiffeClient, podB.sdsSocketPath, ['get', '-url', `https://127.0.0.1:${envoySidecar.inboundPort}/`, '-server-id', id('envoy')]);
    expect(viaEnvoy).toMatchObject({ status: 200, body: 'e-app says hi' });
    // Envoy outbound (expects alpha) -> go-spiffe server, which sees Envoy's SPIFFE ID.
    const raw = await rawHttpGet(envoySidecar.outboundPorts[0]!);
    expect(raw).toMatch(/^HTTP\/1\.0 200/);
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4))).toEqual({ caller: id('envoy'), server: id('alpha') });
  });

  it('the bundle endpoint serves the trust domain\'s SPIFFE bundle to go-spiffe\'s federation client (https_spiffe)', async () => {
    const [bundle] = await runSpiffeClient(tools.spiffeClient, podA.sdsSocketPath, [
      'fetch-bundle', '-url', `https://127.0.0.1:${bundlePort}/`, '-trust-domain', TD, '-endpoint-id', `spiffe://${TD}/ns/${caNs}/sa/citadel`,
    ]);
    expect(bundle).toMatchObject({ trustDomain: TD, refreshHintSeconds: 10, x509Authorities: 1 });
    expect((bundle!.jwtKeyIds as string[]).length).toBe(3);
    expect(bundle!.sequence).toBeGreaterThan(0);
    // The same document as the ConfigMap's spiffe-bundle.json (both the CA's one bundle).
    const cm = JSON.parse(fs.readFileSync(path.join(path.dirname(podA.rootCertPath), 'spiffe-bundle.json'), 'utf8')) as { spiffe_sequence: number };
    expect(Math.abs(cm.spiffe_sequence - (bundle!.sequence as number))).toBeLessThanOrEqual(20);
  });

  it('spiffe-helper writes the SVID, key, bundle, a JWT-SVID and the JWT bundle, and rewrites them on rotation', async () => {
    const certDir = path.join(workDir, 'helper-certs');
    fs.mkdirSync(certDir);
    const config = path.join(workDir, 'helper.conf');
    fs.writeFileSync(config, [
      `agent_address = "${path.resolve(podA.sdsSocketPath)}"`,
      'daemon_mode = true',
      `cert_dir = "${certDir}"`,
      'svid_file_name = "svid.pem"',
      'svid_key_file_name = "svid_key.pem"',
      'svid_bundle_file_name = "svid_bundle.pem"',
      'jwt_bundle_file_name = "jwt_bundle.json"',
      'jwt_svids = [{ jwt_audience = "helper-aud", jwt_svid_file_name = "jwt_svid.token" }]',
      '',
    ].join('\n'));
    const env = workloadEnv(podA.sdsSocketPath);
    delete env.SPIFFE_ENDPOINT_SOCKET; // agent_address is the helper's own setting (a bare path)
    const helper = await startProcess({ name: 'spiffe-helper', command: tools.spiffeHelper, args: ['-config', config], env, logPath: path.join(workDir, 'spiffe-helper.log') });
    procs.push(helper);
    const file = (n: string) => path.join(certDir, n);
    const serial = async () => (await openssl(['x509', '-in', file('svid.pem'), '-noout', '-serial'])).trim();
    await eventually('spiffe-helper files', () => ['svid.pem', 'svid_key.pem', 'svid_bundle.pem', 'jwt_bundle.json', 'jwt_svid.token'].every((n) => fs.existsSync(file(n))), { context: () => helper.tail(20) });
    const text = await openssl(['x509', '-in', file('svid.pem'), '-noout', '-text']);
    expect(text).toContain(`URI:${id('alpha')}`);
    expect(await openssl(['verify', '-CAfile', file('svid_bundle.pem'), '-untrusted', file('svid.pem'), file('svid.pem')])).toContain(': OK');
    const keyPub = await openssl(['pkey', '-in', file('svid_key.pem'), '-pubout']);
    const certPub = await openssl(['x509', '-in', file('svid.pem'), '-noout', '-pubkey']);
    expect(keyPub).toBe(certPub);
    const jwt = fs.readFileSync(file('jwt_svid.token'), 'utf8').trim();
    expect(JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString())).toMatchObject({ sub: id('alpha'), aud: 'helper-aud' });
    // spiffe-helper's format: trust domain -> base64 of the JWKS.
    const byDomain = JSON.parse(fs.readFileSync(file('jwt_bundle.json'), 'utf8')) as Record<string, string>;
    expect(Object.keys(byDomain)).toEqual([TD]);
    const jwks = JSON.parse(Buffer.from(byDomain[TD]!, 'base64').toString()) as { keys: { kid: string }[] };
    expect(jwks.keys.map((k) => k.kid)).toContain(JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()).kid);
    const before = await serial();
    await eventually('spiffe-helper to write the rotated SVID', async () => (await serial()) !== before, { timeoutMs: 45_000, intervalMs: 500, context: () => helper.tail(20) });
  });
});
