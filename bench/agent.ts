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
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
  /** What runs the agent: the agent image's bundle (dist/bundle/agent.mjs) or a main.js; default mainJs. */
  agentJs?: string;
  /** Node flags for the agent (as an image's ENTRYPOINT would set them), e.g. --max-semi-space-size=1. */
  agentNodeFlags?: readonly string[];
  logDir: string;
}

/** The arguments that start `citadel agent` from `js`: the agent's bundle takes the flags alone. */
export function agentArgv(js: string): string[] {
  return js.endsWith('.mjs') ? [js] : [js, 'agent'];
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
      ...(ctx.agentNodeFlags ?? []),
      ...agentArgv(ctx.agentJs ?? ctx.mainJs),
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
  /** Processes the streams came from (bench/sds-fanout-client.ts). */
  clientProcesses: number;
  /** All streams opened and holding the first `default` secret, ms after the first stream was opened. */
  allStreamsServedMs: number;
  /** First stream seeing the rotated `default` to the last one seeing it, ms. */
  rotationSpreadMs: number;
  /** Agent RSS with the streams open, MiB; and before they were opened. */
  agentRssMb: number;
  agentRssIdleMb: number;
  /** CPU the agent used from every stream being served to the rotation reaching the last one, ms (10 ms ticks). */
  agentRotationCpuMs: number;
}

/**
 * Opens `streams` SDS streams (over `channels` connections, from `clientProcesses` processes) on one agent that
 * rotates every ~certTtl/2 and times the spread of the rotation over the streams. Throws if the rotation does not reach every stream
 * within `timeoutMs`.
 */
export async function measureSdsFanout(ctx: AgentContext, target: AgentTarget, opts: { streams: number; channels: number; clientProcesses: number; certTtl: string; timeoutMs: number }): Promise<SdsFanout> {
  const pod = await newPod(ctx, target, 'sds-fanout');
  const agent = await startAgent(ctx, pod, target, 'ecdsa-p256', ['--cert-ttl', opts.certTtl]);
  const clients: ChildProcess[] = [];
  try {
    const readyBy = Date.now() + 30_000;
    while ((await httpStatus(`http://127.0.0.1:${agent.statusPort}/readyz`)) !== 200) {
      if (!agent.proc.running() || Date.now() > readyBy) throw new Error(`agent not ready:\n${agent.proc.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const agentRssIdleMb = sampleProcess(agent.proc.pid).rssBytes / 2 ** 20;
    // The streams come from `clientProcesses` processes of their own (bench/sds-fanout-client.ts), which time each
    // stream's bytes as they are read, before decoding: a client decoding as it goes times its own queue.
    type ClientEvent = { served?: number; first?: number; last?: number };
    const events: ClientEvent[][] = [];
    let wake: (() => void) | undefined;
    for (let c = 0; c < opts.clientProcesses; c++) {
      const streams = Math.floor(opts.streams / opts.clientProcesses) + (c < opts.streams % opts.clientProcesses ? 1 : 0);
      const channels = Math.max(1, Math.round(opts.channels / opts.clientProcesses));
      const child = spawn(ctx.node, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'sds-fanout-client.js'), pod.sdsSocketPath, String(streams), String(channels)], { stdio: ['ignore', 'pipe', 'inherit'] });
      clients.push(child);
      const mine: ClientEvent[] = [];
      events.push(mine);
      let buffered = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        buffered += chunk;
        for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
          mine.push(JSON.parse(buffered.slice(0, i)) as ClientEvent);
          buffered = buffered.slice(i + 1);
        }
        wake?.();
      });
    }
    /** Waits until every client has reported `key`; returns each one's event. */
    const all = async (key: keyof ClientEvent, what: string): Promise<ClientEvent[]> => {
      const deadline = Date.now() + opts.timeoutMs;
      for (;;) {
        const got = events.map((mine) => mine.find((e) => e[key] !== undefined));
        if (got.every(Boolean)) return got as ClientEvent[];
        if (clients.some((c) => c.exitCode !== null) || Date.now() > deadline) throw new Error(`${what} not done within ${opts.timeoutMs} ms`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 1000).unref();
        });
      }
    };
    const allStreamsServedMs = Math.max(...(await all('served', 'serving every stream')).map((e) => e.served!));
    const agentRssMb = sampleProcess(agent.proc.pid).rssBytes / 2 ** 20;
    const cpuBefore = sampleProcess(agent.proc.pid).cpuSeconds;
    const rotated = await all('last', 'rotation to every stream');
    const agentRotationCpuMs = (sampleProcess(agent.proc.pid).cpuSeconds - cpuBefore) * 1000;
    const rotationSpreadMs = Math.max(...rotated.map((e) => e.last!)) - Math.min(...rotated.map((e) => e.first!));
    return { streams: opts.streams, clientProcesses: opts.clientProcesses, allStreamsServedMs, rotationSpreadMs, agentRssMb, agentRssIdleMb, agentRotationCpuMs };
  } finally {
    for (const c of clients) c.kill('SIGKILL');
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
