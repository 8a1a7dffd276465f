/**
 * Agent figures (issue 8 items 3 and 4), against a running `citadel ca`:
 * - startup: from spawning `citadel agent` in a simulated pod to a real Envoy holding the workload certificate
 *   (its admin /certs shows the SPIFFE ID); the agent's RSS at steady state afterwards;
 * - SDS fan-out: N concurrent StreamSecrets streams on one agent (an SDS client of ours over its Unix socket),
 *   then the time from the first stream seeing a rotated `default` secret to the last one seeing it, and the
 *   agent's RSS with the streams open. The rotation is the agent's own: it runs with a short --cert-ttl.
 * - leak check (issue 19): thousands of rotations as fast as the agent renews 1 s certificates, with a real Envoy
 *   taking every one over SDS; RSS and open file descriptors of the agent and the CA at the start and the end.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { SECRET_TYPE_URL } from '../src/agent/sds/xds-types.js';
import { sdsClientConstructor } from '../src/grpc/protos.js';
import { httpGet, metricValue } from '../test/e2e/support/agent-env.js';
import { sidecarBootstrap } from '../test/e2e/support/bootstrap.js';
import { startEnvoy } from '../test/harness/envoy.js';
import { startPod, writeFileAtomic, type SimulatedPod } from '../test/harness/kubelet.js';
import { freePort } from '../test/harness/ports.js';
import { startProcess, type ManagedProcess } from '../test/harness/process.js';
import type { TestCluster } from '../test/harness/test-cluster.js';
import { openFds, sampleProcess } from './procstat.js';

export interface AgentTarget {
  /** host:port of citadel ca's CSR API. */
  caAddr: string;
  caServerName: string;
  /** The CA's trust bundle, written into the pod as its root-cert.pem. */
  rootCertFile: string;
  trustDomain: string;
}

export interface AgentContext {
  cluster: TestCluster;
  namespace: string;
  node: string;
  mainJs: string;
  logDir: string;
}

export interface AgentStartup {
  keyType: string;
  /** Agent spawn to its /readyz answering 200 (certificate in hand), ms. */
  agentReadyMs: number;
  /** Agent spawn to Envoy's /certs showing the workload SPIFFE ID, ms. */
  envoyFirstCertMs: number;
  /** Agent RSS 3 s after Envoy got its certificate, MiB. */
  agentRssMb: number;
  /** CPU the agent had used when Envoy held the certificate, ms (10 ms ticks): start-up cost that machine load does not inflate. */
  agentCpuMs: number;
}

interface RunningAgent {
  proc: ManagedProcess;
  statusPort: number;
  spawnedAt: number;
}

async function startAgent(ctx: AgentContext, pod: SimulatedPod, target: AgentTarget, keyType: string, extra: readonly string[] = []): Promise<RunningAgent> {
  const statusPort = await freePort();
  const spawnedAt = performance.now();
  const proc = await startProcess({
    name: `citadel agent ${pod.name}`,
    command: ctx.node,
    cwd: pod.root,
    logPath: path.join(ctx.logDir, `agent-${pod.name}.log`),
    args: [
      ctx.mainJs, 'agent',
      '--ca-address', target.caAddr,
      '--ca-server-name', target.caServerName,
      '--trust-domain', target.trustDomain,
      '--key-type', keyType,
      '--status-address', `127.0.0.1:${statusPort}`,
      ...extra,
    ],
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
  });
  return { proc, statusPort, spawnedAt };
}

async function newPod(ctx: AgentContext, target: AgentTarget, serviceAccount: string): Promise<SimulatedPod> {
  const pod = await startPod(ctx.cluster, { namespace: ctx.namespace, serviceAccount, watchRootCert: false, tokenExpirationSeconds: 7200 });
  fs.mkdirSync(path.dirname(pod.rootCertPath), { recursive: true });
  writeFileAtomic(pod.rootCertPath, fs.readFileSync(target.rootCertFile, 'utf8'));
  return pod;
}

/**
 * Measures agent start to first certificate in Envoy for `keyType`, then the agent's RSS. Throws with the
 * agent's log tail if it exits or nothing arrives within `timeoutMs`.
 */
export async function measureAgentStartup(ctx: AgentContext, target: AgentTarget, keyType: string, timeoutMs = 60_000): Promise<AgentStartup> {
  const pod = await newPod(ctx, target, `agent-${keyType}`);
  const spiffeId = `spiffe://${target.trustDomain}/ns/${ctx.namespace}/sa/agent-${keyType}`;
  const listenPort = await freePort();
  const envoy = await startEnvoy({ bootstrap: sidecarBootstrap({
    nodeId: `bench-${keyType}`,
    sdsSocketPath: pod.sdsSocketPath,
    // Only the certificate matters here; the inbound listener exists so Envoy asks for `default` and ROOTCA.
    inbound: { port: listenPort, appPort: listenPort, allowedClientIds: [] },
    sdsRetry: { baseSeconds: 0.05, maxSeconds: 0.5 },
  }), name: `bench-${keyType}`, cwd: pod.root });
  let agent: RunningAgent | undefined;
  try {
    agent = await startAgent(ctx, pod, target, keyType);
    const deadline = Date.now() + timeoutMs;
    let agentReadyMs = NaN;
    let envoyFirstCertMs = NaN;
    let agentCpuMs = NaN;
    while (Number.isNaN(envoyFirstCertMs)) {
      if (!agent.proc.running()) throw new Error(`agent exited (${await agent.proc.exited}):\n${agent.proc.tail()}`);
      if (Date.now() > deadline) throw new Error(`no certificate in Envoy after ${timeoutMs} ms; agent log:\n${agent.proc.tail()}\nEnvoy log:\n${envoy.logTail()}`);
      if (Number.isNaN(agentReadyMs) && (await httpStatus(`http://127.0.0.1:${agent.statusPort}/readyz`)) === 200) {
        agentReadyMs = performance.now() - agent.spawnedAt;
      }
      const certs = await envoy.certs().catch(() => undefined);
      const has = certs?.certificates.some((c) => c.cert_chain?.some((d) => d.subject_alt_names?.some((s) => s.uri === spiffeId)));
      if (has) {
        envoyFirstCertMs = performance.now() - agent.spawnedAt;
        agentCpuMs = sampleProcess(agent.proc.pid).cpuSeconds * 1000;
      } else await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 3000));
    return { keyType, agentReadyMs, envoyFirstCertMs, agentCpuMs, agentRssMb: sampleProcess(agent.proc.pid).rssBytes / 2 ** 20 };
  } finally {
    await agent?.proc.stop();
    await envoy.stop();
    await pod.delete();
  }
}

export interface SdsFanout {
  streams: number;
  /** All streams opened and holding the first `default` secret, ms after the first stream was opened. */
  allStreamsServedMs: number;
  /** First stream seeing the rotated `default` to the last one seeing it, ms. */
  rotationSpreadMs: number;
  /** Agent RSS with the streams open, MiB; and before they were opened. */
  agentRssMb: number;
  agentRssIdleMb: number;
}

/**
 * Opens `streams` SDS streams (over `channels` connections) on one agent that rotates every ~certTtl/2 and
 * times the spread of the rotation over the streams. Throws if the rotation does not reach every stream
 * within `timeoutMs`.
 */
export async function measureSdsFanout(ctx: AgentContext, target: AgentTarget, opts: { streams: number; channels: number; certTtl: string; timeoutMs: number }): Promise<SdsFanout> {
  const pod = await newPod(ctx, target, 'sds-fanout');
  const agent = await startAgent(ctx, pod, target, 'ecdsa-p256', ['--cert-ttl', opts.certTtl]);
  const clients: grpc.Client[] = [];
  try {
    const readyBy = Date.now() + 30_000;
    while ((await httpStatus(`http://127.0.0.1:${agent.statusPort}/readyz`)) !== 200) {
      if (!agent.proc.running() || Date.now() > readyBy) throw new Error(`agent not ready:\n${agent.proc.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const agentRssIdleMb = sampleProcess(agent.proc.pid).rssBytes / 2 ** 20;
    const Sds = sdsClientConstructor();
    for (let i = 0; i < opts.channels; i++) {
      clients.push(new Sds(`unix:${pod.sdsSocketPath}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
    }
    const firstVersion: (string | undefined)[] = new Array(opts.streams).fill(undefined);
    const rotatedAt: (number | undefined)[] = new Array(opts.streams).fill(undefined);
    let served = 0;
    let rotated = 0;
    let allServed!: () => void;
    let allRotated!: () => void;
    const servedP = new Promise<void>((r) => (allServed = r));
    const rotatedP = new Promise<void>((r) => (allRotated = r));
    const calls: grpc.ClientDuplexStream<unknown, unknown>[] = [];
    const t0 = performance.now();
    for (let i = 0; i < opts.streams; i++) {
      const client = clients[i % clients.length]! as unknown as { StreamSecrets: () => grpc.ClientDuplexStream<unknown, unknown> };
      const call = client.StreamSecrets();
      calls.push(call);
      call.on('error', () => {});
      call.on('data', (msg: { version_info?: string; nonce?: string; resources?: unknown[] }) => {
        const version = msg.version_info ?? '';
        call.write({ node: { id: `bench-${i}` }, resource_names: ['default'], type_url: SECRET_TYPE_URL, version_info: version, response_nonce: msg.nonce ?? '' });
        if (firstVersion[i] === undefined) {
          firstVersion[i] = version;
          if (++served === opts.streams) allServed();
        } else if (version !== firstVersion[i] && rotatedAt[i] === undefined) {
          rotatedAt[i] = performance.now();
          if (++rotated === opts.streams) allRotated();
        }
      });
      call.write({ node: { id: `bench-${i}` }, resource_names: ['default'], type_url: SECRET_TYPE_URL });
    }
    const timeout = (what: string) => new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} not done within ${opts.timeoutMs} ms (${served} served, ${rotated} rotated)`)), opts.timeoutMs).unref());
    await Promise.race([servedP, timeout('serving every stream')]);
    const allStreamsServedMs = performance.now() - t0;
    const agentRssMb = sampleProcess(agent.proc.pid).rssBytes / 2 ** 20;
    await Promise.race([rotatedP, timeout('rotation to every stream')]);
    const times = rotatedAt as number[];
    const rotationSpreadMs = Math.max(...times) - Math.min(...times);
    for (const c of calls) c.cancel();
    return { streams: opts.streams, allStreamsServedMs, rotationSpreadMs, agentRssMb, agentRssIdleMb };
  } finally {
    for (const c of clients) c.close();
    await agent.proc.stop();
    await pod.delete();
  }
}

export interface RotationLeak {
  rotations: number;
  seconds: number;
  agentRssMb: [number, number];
  agentFds: [number, number];
  caRssMb: [number, number];
  caFds: [number, number];
  /** SDS pushes of `default` Envoy accepted (update_success), start and end. */
  envoyUpdates: [number, number];
}

/**
 * Runs one agent with 1 s certificates (renewed every ~0.5 s) and a real Envoy until `rotations` more
 * certificates have been issued after a warm-up of 20, and samples RSS and FDs of the agent and of `caPid` at
 * both ends. Throws with the agent's log tail if it stops renewing.
 */
export async function measureRotationLeak(ctx: AgentContext, target: AgentTarget, opts: { rotations: number; caPid: number; timeoutMs?: number }): Promise<RotationLeak> {
  const pod = await newPod(ctx, target, 'leak-check');
  const listenPort = await freePort();
  const envoy = await startEnvoy({ bootstrap: sidecarBootstrap({
    nodeId: 'bench-leak', sdsSocketPath: pod.sdsSocketPath,
    inbound: { port: listenPort, appPort: listenPort, allowedClientIds: [] },
    sdsRetry: { baseSeconds: 0.05, maxSeconds: 0.5 },
  }), name: 'bench-leak', cwd: pod.root });
  const agent = await startAgent(ctx, pod, target, 'ecdsa-p256', ['--cert-ttl', '1s']);
  try {
    const metrics = async () => {
      const { body } = await httpGet(`http://127.0.0.1:${agent.statusPort}/metrics`);
      return metricValue(body, 'istio_agent_num_outgoing_requests{request_type="csr"}') ?? 0;
    };
    const envoyUpdates = async () => (await envoy.stats('^sds\\.default\\.update_success$'))['sds.default.update_success'] ?? 0;
    const deadline = Date.now() + (opts.timeoutMs ?? 3_600_000);
    const waitFor = async (n: number) => {
      let last = -1;
      let lastAt = Date.now();
      for (;;) {
        const issued = await metrics();
        if (issued >= n) return issued;
        if (issued !== last) [last, lastAt] = [issued, Date.now()];
        if (!agent.proc.running() || Date.now() > deadline || Date.now() - lastAt > 30_000) throw new Error(`agent stopped renewing at ${issued} of ${n}:\n${agent.proc.tail()}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    const first = await waitFor(20);
    const t0 = performance.now();
    const start = { agent: sampleProcess(agent.proc.pid).rssBytes, agentFds: openFds(agent.proc.pid), ca: sampleProcess(opts.caPid).rssBytes, caFds: openFds(opts.caPid), envoy: await envoyUpdates() };
    const last = await waitFor(first + opts.rotations);
    const seconds = (performance.now() - t0) / 1000;
    const mb = (b: number) => b / 2 ** 20;
    return {
      rotations: last - first,
      seconds,
      agentRssMb: [mb(start.agent), mb(sampleProcess(agent.proc.pid).rssBytes)],
      agentFds: [start.agentFds, openFds(agent.proc.pid)],
      caRssMb: [mb(start.ca), mb(sampleProcess(opts.caPid).rssBytes)],
      caFds: [start.caFds, openFds(opts.caPid)],
      envoyUpdates: [start.envoy, await envoyUpdates()],
    };
  } finally {
    await agent.proc.stop();
    await envoy.stop();
    await pod.delete();
  }
}

function httpStatus(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}
