/**
 * `citadel agent` end to end, issue 6's "done when": the real CA (plugged-in keys, TokenReview against the real
 * apiserver), simulated pods with Pod-bound istio-ca tokens, an agent per pod, and real Envoys getting `default`
 * and `ROOTCA` over SDS. Certificates live 40 s and are renewed at half-life, so rotation happens while the
 * other checks run.
 *
 *   A (sa client)   outbound-0 -> B inbound (expects sa server)   outbound-1 -> C inbound (expects sa server)
 *                   outbound-2 -> R inbound (expects sa server)
 *   B (sa server)   inbound: accepts only sa client -> b-app
 *   C (sa intruder) inbound: accepts sa client -> c-app;       outbound-0 -> B inbound (expects sa server)
 *   R (sa server, --key-type rsa-2048) inbound: accepts only sa client -> r-app
 *
 * B's agent is the agent image's bundle (dist/bundle/agent.mjs, scripts/bundle.ts), so the bundle is held to every
 * check B takes part in: issuance, Envoy's SDS, mTLS traffic, rotation, the CA going away and an agent restart.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, startPod, writeFileAtomic, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { generateKeyPair, issueCaCertificate } from '../../src/pki/index.js';
import { AGENT_BUNDLE } from '../support/build.js';
import { connectLines, ensureBundled, eventually, metricValue, requestOnce, startAgent, startLineApp, type LineApp } from './support/agent-env.js';
import { startCa, type RunningCa } from './support/ca.js';
import { caSerials, leafSerials, startSidecar, type Sidecar } from './support/sidecar.js';

const CERT_TTL = '40s';

function openssl(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('openssl', args, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` }));
  });
}

/** The secret Envoy holds under `name`, from config_dump (inline_bytes are base64 PEM; keys are redacted). */
async function activeSecretPem(s: Sidecar, name: 'default' | 'ROOTCA'): Promise<string> {
  const dump = await s.envoy.configDump('dynamic_active_secrets', `^${name}$`);
  type Dumped = { secret?: { tls_certificate?: { certificate_chain?: { inline_bytes?: string } }; validation_context?: { trusted_ca?: { inline_bytes?: string } } } };
  const secret = (dump.configs[0] as Dumped | undefined)?.secret;
  const b64 = name === 'default' ? secret?.tls_certificate?.certificate_chain?.inline_bytes : secret?.validation_context?.trusted_ca?.inline_bytes;
  return b64 ? Buffer.from(b64, 'base64').toString('utf8') : '';
}

/** The serial the agent last published, from its log. */
function lastPublishedSerial(s: Sidecar): string | undefined {
  const lines = fs.readFileSync(s.agent.proc.logPath, 'utf8').trim().split('\n');
  for (const line of lines.reverse()) {
    if (!line.includes('workload certificate published')) continue;
    try {
      return (JSON.parse(line) as { serial?: string }).serial;
    } catch {
      continue;
    }
  }
  return undefined;
}

async function serialOf(s: Sidecar): Promise<string> {
  const serials = leafSerials(await s.envoy.certs());
  if (serials.length !== 1) throw new Error(`${s.name}: expected one leaf serial in /certs, got ${serials.join(',') || 'none'}`);
  return serials[0]!;
}

describe('citadel agent with the real CA, apiserver and Envoy', () => {
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let ns: string;
  const pods: SimulatedPod[] = [];
  const apps: LineApp[] = [];
  let a: Sidecar;
  let b: Sidecar;
  let c: Sidecar;
  let r: Sidecar;
  let idClient: string;
  let idServer: string;
  let idIntruder: string;

  beforeAll(async () => {
    await ensureBundled();
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/ce-');
    const caNs = await cluster.createNamespace('agent-ca');
    ns = await cluster.createNamespace('agent-e2e');
    idClient = `spiffe://cluster.local/ns/${ns}/sa/client`;
    idServer = `spiffe://cluster.local/ns/${ns}/sa/server`;
    idIntruder = `spiffe://cluster.local/ns/${ns}/sa/intruder`;
    ca = await startCa({ kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir });

    const pod = async (serviceAccount: string) => {
      const p = await startPod(cluster, { namespace: ns, serviceAccount, watchRootCert: false });
      pods.push(p);
      // What kubelet mounts from istio-ca-root-cert (the CA's controllers are off in this test).
      writeFileAtomic(p.rootCertPath, ca.rootPem);
      return p;
    };
    const agentArgs = ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', CERT_TTL];
    const [podA, podB, podC, podR] = [await pod('client'), await pod('server'), await pod('intruder'), await pod('server')];
    const bApp = await startLineApp('b-app');
    const cApp = await startLineApp('c-app');
    const rApp = await startLineApp('r-app');
    apps.push(bApp, cApp, rApp);
    b = await startSidecar({ name: 'b', root: podB.root, logDir: workDir, bundled: true, agentArgs, inbound: { appPort: bApp.port, allowedClientIds: [idClient] } });
    c = await startSidecar({
      name: 'c', root: podC.root, logDir: workDir, agentArgs,
      inbound: { appPort: cApp.port, allowedClientIds: [idClient] },
      outbounds: [{ upstreamPort: b.inboundPort, serverId: idServer }],
    });
    r = await startSidecar({ name: 'r', root: podR.root, logDir: workDir, agentArgs: [...agentArgs, '--key-type', 'rsa-2048'], inbound: { appPort: rApp.port, allowedClientIds: [idClient] } });
    a = await startSidecar({
      name: 'a', root: podA.root, logDir: workDir, agentArgs,
      outbounds: [{ upstreamPort: b.inboundPort, serverId: idServer }, { upstreamPort: c.inboundPort, serverId: idServer }, { upstreamPort: r.inboundPort, serverId: idServer }],
    });
  }, 240_000);

  afterAll(async () => {
    for (const s of [a, b, c, r]) await s?.stop();
    for (const app of apps) await app.close();
    await ca?.stop();
    for (const p of pods) await p.delete().catch(() => undefined);
  });

  it('issues each pod its own SPIFFE ID from the token, with a chain openssl verifies against the root', async () => {
    for (const [s, id] of [[a, idClient], [b, idServer], [c, idIntruder]] as const) {
      const certs = await s.envoy.certs();
      const sans = certs.certificates.flatMap((x) => x.cert_chain?.[0]?.subject_alt_names ?? []).map((x) => x.uri);
      expect(new Set(sans)).toEqual(new Set([id]));
    }
    const chain = await activeSecretPem(b, 'default');
    const rootFile = path.join(workDir, 'root.pem');
    const chainFile = path.join(workDir, 'b-chain.pem');
    fs.writeFileSync(rootFile, ca.rootPem);
    fs.writeFileSync(chainFile, chain);
    const verified = await openssl(['verify', '-CAfile', rootFile, '-untrusted', chainFile, chainFile]);
    expect(verified.out).toContain(': OK');
    const text = await openssl(['x509', '-in', chainFile, '-noout', '-text']);
    expect(text.out).toContain(`URI:${idServer}`);
    expect(text.out).toMatch(/ASN1 OID: prime256v1|NIST CURVE: P-256/);
    const metrics = await b.agent.metrics();
    const expiry = metricValue(metrics, 'istio_agent_cert_expiry_seconds{resource_name="default"}')!;
    expect(expiry).toBeGreaterThan(0);
    expect(expiry).toBeLessThanOrEqual(40);
    expect(metricValue(metrics, 'istio_agent_num_outgoing_requests{request_type="csr"}')).toBeGreaterThanOrEqual(1);
    expect(metricValue(metrics, 'citadel_agent_sds_active_streams{api="sotw"}')).toBe(2); // default + ROOTCA
    const log = fs.readFileSync(b.agent.proc.logPath, 'utf8');
    expect(log).not.toMatch(/PRIVATE KEY|eyJ[A-Za-z0-9_-]{20,}\./); // no keys, no tokens
    const running = log.split('\n').find((l) => l.includes('"agent running"'))!;
    const { node } = (JSON.parse(running) as { runtime: { node: string } }).runtime;
    expect(Number(node.slice(1).split('.')[0]), 'the agent runs on Node 24+').toBeGreaterThanOrEqual(24);
    // What served all of this for B is the bundle, as the agent image runs it.
    expect(fs.readFileSync(`/proc/${b.agent.proc.pid}/cmdline`, 'utf8').split('\0')[1]).toBe(AGENT_BUNDLE);
  });

  it('A reaches the server behind B over mTLS', async () => {
    expect(await requestOnce(a.outboundPorts[0]!, 'hello')).toBe('b-app:hello');
  });

  it('--key-type rsa-2048: an RSA server certificate passes Envoy\'s upstream checks (keyUsage digitalSignature)', async () => {
    const chainFile = path.join(workDir, 'r-chain.pem');
    fs.writeFileSync(chainFile, await activeSecretPem(r, 'default'));
    const text = await openssl(['x509', '-in', chainFile, '-noout', '-text']);
    expect(text.out).toMatch(/Public-Key: \(2048 bit\)/);
    expect(text.out).toMatch(/rsaEncryption/);
    expect(text.out).toMatch(/Digital Signature/);
    expect(await requestOnce(a.outboundPorts[2]!, 'rsa')).toBe('r-app:rsa');
  });

  it('refuses a third identity at the handshake, in both directions', async () => {
    const bFailsBefore = (await b.envoy.stats('ssl.fail_verify_san'))[`listener.127.0.0.1_${b.inboundPort}.ssl.fail_verify_san`] ?? 0;
    // The intruder's Envoy dials B: B accepts only the client's SPIFFE ID.
    await expect(requestOnce(c.outboundPorts[0]!, 'let me in', 3000)).rejects.toThrow();
    await eventually('B to count a SAN verification failure', async () =>
      ((await b.envoy.stats('ssl.fail_verify_san'))[`listener.127.0.0.1_${b.inboundPort}.ssl.fail_verify_san`] ?? 0) > bFailsBefore);
    // A dials C expecting the server's identity; C presents the intruder's: A refuses, c-app never sees it.
    await expect(requestOnce(a.outboundPorts[1]!, 'are you the server?', 3000)).rejects.toThrow();
    await eventually('A to count a SAN verification failure', async () => ((await a.envoy.stats('outbound-1.ssl.fail_verify_san'))['cluster.outbound-1.ssl.fail_verify_san'] ?? 0) > 0);
    expect(apps[1]!.lines()).toBe(0);
  });

  it('rotates at half-life: Envoy shows a new serial, requests keep succeeding, an old connection still passes bytes', async () => {
    const long = await connectLines(a.outboundPorts[0]!);
    expect(await long.ask('before')).toBe('b-app:before');
    const before = await serialOf(b);
    const failures: string[] = [];
    let requests = 0;
    let rotated = false;
    const loop = (async () => {
      while (!rotated) {
        try {
          const answer = await requestOnce(a.outboundPorts[0]!, `r${requests}`, 3000);
          if (answer !== `b-app:r${requests}`) failures.push(`r${requests}: ${answer}`);
        } catch (err) {
          failures.push(`r${requests}: ${(err as Error).message}`);
        }
        requests++;
        await new Promise((r) => setTimeout(r, 300)); // traffic at about three requests a second, not a wait
      }
    })();
    const after = await eventually('B to rotate', async () => {
      const s = await serialOf(b);
      return s !== before ? s : undefined;
    }, { timeoutMs: 45_000, intervalMs: 500, context: () => b.agent.proc.tail(10) });
    // A few more requests on the new certificate, then stop.
    const target = requests + 3;
    await eventually('three more requests', () => requests >= target, { timeoutMs: 20_000 });
    rotated = true;
    await loop;
    expect(after).toBe(lastPublishedSerial(b));
    expect(failures).toEqual([]);
    expect(requests).toBeGreaterThan(5);
    expect(await long.ask('after')).toBe('b-app:after');
    long.close();
    expect(metricValue(await b.agent.metrics(), 'istio_agent_num_outgoing_requests{request_type="csr"}')).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it('CA stopped: Envoy keeps serving the current certificate; CA back: renewal resumes', async () => {
    await ca.stop();
    // Each agent renews every ~20 s; the first one to try fails and still holds ~20 s of validity.
    const failedCount = async (s: Sidecar) => metricValue(await s.agent.metrics(), 'istio_agent_num_failed_outgoing_requests{request_type="csr",error="UPSTREAM_UNAVAILABLE"}') ?? 0;
    const failedBefore = new Map([[a, await failedCount(a)], [b, await failedCount(b)]]);
    const first = await eventually('a failed renewal while the CA is down', async () => {
      for (const s of [a, b]) if ((await failedCount(s)) > failedBefore.get(s)!) return s;
      return undefined;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    const serving = await serialOf(first);
    expect(serving).toBe(lastPublishedSerial(first));
    expect(await requestOnce(a.outboundPorts[0]!, 'ca-down')).toBe('b-app:ca-down');
    expect((await fetch(`${first.agent.statusUrl}/readyz`)).status).toBe(200); // still a valid certificate
    expect(metricValue(await first.agent.metrics(), 'istio_agent_num_outgoing_retries{request_type="csr"}')).toBeGreaterThan(0);
    // An agent that starts while the CA is down is alive but not ready, and keeps trying.
    const late = await startPod(cluster, { namespace: ns, serviceAccount: 'late', watchRootCert: false });
    pods.push(late);
    writeFileAtomic(late.rootCertPath, ca.rootPem);
    const lateAgent = await startAgent({ name: 'late', cwd: late.root, logDir: workDir, args: ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', CERT_TTL] });
    try {
      await eventually('the late agent to fail a first attempt', async () => (metricValue(await lateAgent.metrics(), 'istio_agent_num_outgoing_retries{request_type="csr"}') ?? 0) > 0);
      expect((await fetch(`${lateAgent.statusUrl}/healthz`)).status).toBe(200);
      const notReady = await fetch(`${lateAgent.statusUrl}/readyz`);
      expect(notReady.status).toBe(503);
      expect(await notReady.text()).toContain('no workload certificate');
      await ca.start();
      await lateAgent.waitReady(20_000);
    } finally {
      await lateAgent.stop();
    }
    await eventually(`${first.name} to renew after the CA is back`, async () => (await serialOf(first)) !== serving, { timeoutMs: 20_000, intervalMs: 250, context: () => first.agent.proc.tail(10) });
    expect(await requestOnce(a.outboundPorts[0]!, 'ca-back')).toBe('b-app:ca-back');
  }, 75_000);

  it('agent restarted: Envoy reconnects and gets a fresh certificate', async () => {
    const before = await serialOf(b);
    const old = b.agent;
    await b.restartAgent();
    expect(await old.proc.exited).toBe(0); // SIGTERM: streams closed, clean exit
    const fresh = await eventually('Envoy B to get the new agent\'s certificate', async () => {
      const s = await serialOf(b);
      return s !== before && s === lastPublishedSerial(b) ? s : undefined;
    }, { timeoutMs: 20_000, context: () => b.envoy.logTail(20) });
    expect(fresh).not.toBe(before);
    // Both SDS streams (default, ROOTCA) are back; each reconnects on its own backoff.
    await eventually('both SDS streams to reconnect', async () => {
      const connected = Object.entries(await b.envoy.stats('control_plane.connected_state')).filter(([k]) => k.startsWith('sds.'));
      return connected.length === 2 && connected.every(([, v]) => v === 1);
    }, { timeoutMs: 10_000, context: () => JSON.stringify(b.envoy.logTail(10)) });
    expect(await requestOnce(a.outboundPorts[0]!, 'new-agent')).toBe('b-app:new-agent');
  }, 40_000);

  it('Envoy restarted: gets the current certificate at once', async () => {
    await a.restartEnvoy();
    // waitReady returned: LIVE means both secrets arrived (initial_fetch_timeout 0s waits for them).
    expect(await serialOf(a)).toBe(lastPublishedSerial(a));
    expect(await requestOnce(a.outboundPorts[0]!, 'new-envoy')).toBe('b-app:new-envoy');
  }, 40_000);

  it('VM mode: without a token the agent renews over mTLS with its current certificate', async () => {
    const vm = await startPod(cluster, { namespace: ns, serviceAccount: 'vm', watchRootCert: false });
    pods.push(vm);
    writeFileAtomic(vm.rootCertPath, ca.rootPem);
    const agent = await startAgent({ name: 'vm', cwd: vm.root, logDir: workDir, args: ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName, '--cert-ttl', '10s'] });
    try {
      await agent.waitReady();
      fs.rmSync(vm.tokenPath); // the one-time bootstrap token is gone
      const renewed = await eventually('an mTLS renewal', () => {
        const lines = fs.readFileSync(agent.proc.logPath, 'utf8').split('\n').filter((l) => l.includes('certificate issued by the CA'));
        return lines.some((l) => l.includes('"mode":"mtls"')) ? lines : undefined;
      }, { timeoutMs: 20_000, context: () => agent.proc.tail(10) });
      expect(renewed[0]).toContain('"mode":"token"');
      expect(renewed.at(-1)).toContain(`sa/vm`);
      const caLog = fs.readFileSync(ca.proc.logPath, 'utf8');
      expect(caLog).toMatch(new RegExp(`certificate-issued.*ns/${ns}/sa/vm.*client-certificate`));
      expect((await fetch(`${agent.statusUrl}/readyz`)).status).toBe(200);
    } finally {
      await agent.stop();
    }
  }, 40_000);

  it('root bundle file change: Envoy\'s ROOTCA updates', async () => {
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const next = issueCaCertificate({ key: privateKey, organization: 'next-root', commonName: 'next root', ttlMs: 86_400_000, now: Date.now() });
    const marker = next.pem.trim().split('\n')[1]!;
    writeFileAtomic(b.root + '/var/run/secrets/istio/root-cert.pem', ca.rootPem + next.pem);
    await eventually('Envoy B ROOTCA to hold the new root', async () => (await activeSecretPem(b, 'ROOTCA')).includes(marker), { timeoutMs: 15_000 });
    const bundle = await activeSecretPem(b, 'ROOTCA');
    expect(bundle).toContain(ca.rootPem.trim().split('\n')[1]!);
    expect(caSerials(await b.envoy.certs()).length).toBeGreaterThanOrEqual(1);
    expect(await requestOnce(a.outboundPorts[0]!, 'new-bundle')).toBe('b-app:new-bundle');
  });
});
