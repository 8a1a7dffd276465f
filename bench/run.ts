/**
 * `npm run bench`: issuance figures for `citadel ca` beside Istio's own CA server code (the anchor) and the
 * raw crypto bound, all measured in one run on this machine, so that the ratios mean something even though
 * absolute numbers drift between runs and machines.
 *
 *   node dist/bench/run.js [--duration 6s] [--warmup 1s] [--concurrency 1,16,128] [--key-types rsa-2048,ecdsa-p256]
 *                          [--servers citadel,citadel-nocache,istio,istio+cache] [--no-profile] [--profile-server citadel-nocache]
 *                          [--no-agent] [--sds-streams 1000] [--leak-rotations 2000] [--scale-namespaces 1000] [--quick] [--out bench/results]
 *                          [--ca-args '--signing-workers 0']
 *
 * It builds or reuses the Go programs (scripts/provision-bench.sh), starts the harness control plane
 * (etcd + kube-apiserver), makes ServiceAccounts, Pods and pod-bound tokens (audience istio-ca), writes one
 * set of plugged-in CA material per key type and hands it to each CA in turn, then runs the Go load
 * generator at each concurrency. It writes bench/results/<date>.json and bench/results/latest.md.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startControlPlane, type ControlPlane } from '../test/harness/cluster.js';
import { connectCluster, type TestCluster } from '../test/harness/test-cluster.js';
import { writeCaMaterial, type CaMaterial } from './ca-material.js';
import { measureAgentStartup, measureRotationLeak, measureSdsFanout, type AgentContext, type AgentStartup, type AgentTarget, type RotationLeak, type SdsFanout } from './agent.js';
import { measureCaPath, type CaPathRow } from './ca-path.js';
import { measureCryptoBound, type BenchKeyType, type CryptoBound } from './crypto-bound.js';
import { runLoadgen, type LoadgenResult } from './loadgen.js';
import { peakRss, sampleProcess } from './procstat.js';
import { summariseCpuProfile, type ProfileSummary } from './profile.js';
import { measureCaAtScale, populate, type CaAtScale } from './scale.js';
import { startCitadelCa, startIstioCa, startTransportFloor, type RunningCa } from './servers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TRUST_DOMAIN = 'cluster.local';
const CA_NAMESPACE = 'citadel-system';
const MAIN_JS = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

type ServerKind = 'citadel' | 'citadel-nocache' | 'istio' | 'istio+cache' | 'transport floor';
/** Each Istio row is compared with the citadel row that caches token reviews the same way. */
const COUNTERPART: Record<string, ServerKind> = { istio: 'citadel-nocache', 'istio+cache': 'citadel' };

interface Options {
  durationMs: number;
  warmupMs: number;
  concurrency: number[];
  keyTypes: BenchKeyType[];
  servers: ServerKind[];
  profile: boolean;
  profileServer: 'citadel' | 'citadel-nocache';
  outDir: string;
  serviceAccounts: number;
  podsPerServiceAccount: number;
  tokenCacheTtlMs: number;
  agent: boolean;
  sdsStreams: number;
  /** Rotations of the leak check (0: skip it). */
  leakRotations: number;
  /** Namespaces for the at-scale CA figure and the controllers bench (0: skip both). */
  scaleNamespaces: number;
  scaleServiceAccountsPerNamespace: number;
  /** Extra `citadel ca` flags for every citadel row (to try a setting side by side). */
  caArgs: string[];
}

export interface IssuanceRow {
  keyType: BenchKeyType;
  server: ServerKind;
  concurrency: number;
  certsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  errorsByCode: Record<string, number>;
  /** CA process CPU seconds per 1,000 issued certificates. */
  caCpuSecPer1k: number;
  /** kube-apiserver CPU seconds per 1,000 certificates (TokenReviews). */
  apiserverCpuSecPer1k: number;
  loadgenCpuSecPer1k: number;
  /** certsPerSec / raw verify+sign per second on one core. */
  ratioToRawBound: number;
  /** Raw CPU per certificate / CA CPU per certificate: the share of the CA's CPU that is the crypto floor. */
  cryptoShareOfCpu: number;
  caRssMb: number;
  raw: LoadgenResult;
}

interface Report {
  date: string;
  machine: Record<string, string | number>;
  options: Omit<Options, 'outDir'>;
  cryptoBounds: CryptoBound[];
  /** citadel's CA path without gRPC (bench/ca-path.ts), 16 calls in flight, inline and with one signing worker. */
  caPath: CaPathRow[];
  issuance: IssuanceRow[];
  /** citadel (same token caching) / the Istio row: certs/s ratio (higher is better), CPU per certificate ratio (lower is better). */
  ratios: { keyType: BenchKeyType; concurrency: number; versus: ServerKind; certsPerSecRatio: number; cpuPer1kRatio: number }[];
  agentStartup: AgentStartup[];
  sdsFanout?: SdsFanout;
  rotationLeak?: RotationLeak;
  caAtScale?: CaAtScale;
  /** Rows printed by bench/controllers.js (the controllers' own bench), when it exists. */
  controllers?: { rows: [string, string][]; exitCode: number | null };
  profile?: { server: string; keyType: BenchKeyType; concurrency: number; file: string; summary: ProfileSummary; workers: ProfileSummary[] };
  notMeasured: string[];
  errors: string[];
  wallSeconds: number;
}

function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (!m) throw new Error(`bad duration ${text} (use e.g. 500ms, 8s, 1m)`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    durationMs: 6000,
    warmupMs: 1000,
    concurrency: [1, 16, 128],
    keyTypes: ['rsa-2048', 'ecdsa-p256'],
    servers: ['citadel', 'citadel-nocache', 'istio', 'istio+cache', 'transport floor'],
    profile: true,
    profileServer: 'citadel',
    outDir: path.join(ROOT, 'bench', 'results'),
    serviceAccounts: 8,
    podsPerServiceAccount: 4,
    tokenCacheTtlMs: 10_000, // citadel ca's --token-review-cache-ttl default
    agent: true,
    sdsStreams: 1000,
    leakRotations: 2000,
    scaleNamespaces: 1000,
    scaleServiceAccountsPerNamespace: 5,
    caArgs: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--duration': o.durationMs = parseDuration(next()); break;
      case '--warmup': o.warmupMs = parseDuration(next()); break;
      case '--concurrency': o.concurrency = next().split(',').map(Number); break;
      case '--key-types': o.keyTypes = next().split(',') as BenchKeyType[]; break;
      case '--servers': o.servers = next().split(',').map((x) => (x === 'floor' ? 'transport floor' : x)) as ServerKind[]; break;
      case '--token-cache-ttl': o.tokenCacheTtlMs = parseDuration(next()); break;
      case '--profile': o.profile = true; break;
      case '--no-profile': o.profile = false; break;
      case '--profile-server': {
        const v = next();
        if (v !== 'citadel' && v !== 'citadel-nocache') throw new Error('--profile-server: citadel or citadel-nocache');
        o.profileServer = v;
        o.profile = true;
        break;
      }
      case '--no-agent': o.agent = false; break;
      case '--sds-streams': o.sdsStreams = Number(next()); break;
      case '--leak-rotations': o.leakRotations = Number(next()); break;
      case '--scale-namespaces': o.scaleNamespaces = Number(next()); break;
      case '--quick': o.durationMs = 3000; o.warmupMs = 1000; break;
      case '--out': o.outDir = path.resolve(next()); break;
      case '--ca-args': o.caArgs = next().split(/\s+/).filter(Boolean); break;
      case '--help':
        process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*?|^ \* ?/gm, ''));
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${a} (see --help)`);
    }
  }
  for (const k of o.keyTypes) if (k !== 'rsa-2048' && k !== 'ecdsa-p256') throw new Error(`--key-types: ${k} is not rsa-2048 or ecdsa-p256`);
  for (const s of o.servers) if (!['citadel', 'citadel-nocache', 'istio', 'istio+cache', 'transport floor', 'floor'].includes(s)) throw new Error(`--servers: unknown ${s}`);
  if (o.concurrency.some((c) => !Number.isInteger(c) || c < 1)) throw new Error('--concurrency: positive integers');
  return o;
}

const say = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Runs scripts/provision-bench.sh (progress on our stderr) and returns its KEY=VALUE output. */
function provisionBenchTools(): Record<string, string> {
  const res = spawnSync('bash', [path.join(ROOT, 'scripts', 'provision-bench.sh')], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (res.status !== 0) throw new Error('scripts/provision-bench.sh failed (see above)');
  const env: Record<string, string> = {};
  for (const line of res.stdout.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  if (!env.LOADGEN || !env.ISTIOCA) throw new Error('provision-bench.sh printed no LOADGEN/ISTIOCA');
  return env;
}

function machineInfo(benchEnv: Record<string, string>, cp: ControlPlane): Record<string, string | number> {
  const cpus = os.cpus();
  let openssl = process.versions.openssl ?? '';
  try {
    openssl = `${openssl} (node); ${execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim()} (cli)`;
  } catch {
    // the CLI is optional here
  }
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    openssl,
    go: benchEnv.GO_VERSION ?? '',
    istioModule: `istio.io/istio ${benchEnv.ISTIO_MODULE ?? ''}`,
    kubernetes: cp.info.tools.kubernetesVersion,
    etcd: cp.info.tools.etcdVersion,
    citadel: gitDescribe(),
    // Other work on the machine skews absolute figures (not the side-by-side ratios as much): recorded here.
    loadAverage1mAtStart: Number(os.loadavg()[0]!.toFixed(2)),
  };
}

function gitDescribe(): string {
  try {
    return execFileSync('git', ['-C', ROOT, 'describe', '--always', '--dirty'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** ServiceAccounts bench-sa-<i> with Pods, and one pod-bound istio-ca token per Pod, as [{token, spiffeId}]. */
async function makeIdentities(cluster: TestCluster, o: Options, file: string): Promise<number> {
  const ns = await cluster.createNamespace('bench');
  const core = cluster.kube().core;
  const ids: { token: string; spiffeId: string }[] = [];
  for (let s = 0; s < o.serviceAccounts; s++) {
    const sa = `bench-sa-${s}`;
    await cluster.createServiceAccount(ns, sa);
    for (let p = 0; p < o.podsPerServiceAccount; p++) {
      const name = `${sa}-pod-${p}`;
      const pod = await core.createNamespacedPod({
        namespace: ns,
        body: { metadata: { name }, spec: { serviceAccountName: sa, containers: [{ name: 'app', image: 'bench.invalid/app' }] } },
      });
      const token = await cluster.tokenFor(ns, sa, { audiences: ['istio-ca'], podName: name, podUid: pod.metadata?.uid, expirationSeconds: 7200 });
      ids.push({ token, spiffeId: `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}` });
    }
  }
  fs.writeFileSync(file, JSON.stringify(ids), { mode: 0o600 });
  return ids.length;
}

/**
 * Runs bench/controllers.js (written with the controllers; it starts its own control plane) and keeps the
 * `name   value` rows it prints. Its progress goes to our stderr.
 */
function runControllersBench(o: Options, report: Report): Report['controllers'] {
  const script = path.join(ROOT, 'dist', 'bench', 'controllers.js');
  if (!fs.existsSync(script)) {
    report.notMeasured.push('controllers: full reconcile, bundle change, ConfigMap recreate (bench/controllers.ts is not there yet)');
    return undefined;
  }
  say(`controllers bench (bench/controllers.js, ${o.scaleNamespaces} namespaces, its own control plane)`);
  const res = spawnSync(process.execPath, [script, '--namespaces', String(o.scaleNamespaces)], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 10 * 60_000,
  });
  const rows: [string, string][] = [];
  for (const line of (res.stdout ?? '').split('\n')) {
    const m = /^(\S.*?)\s{2,}(\S.*)$/.exec(line.trimEnd());
    if (m) rows.push([m[1]!, m[2]!]);
  }
  if (res.status !== 0) report.errors.push(`controllers bench exited ${res.status ?? res.signal}`);
  return { rows, exitCode: res.status };
}

/** False while src/cli/agent.ts is still the placeholder. */
function agentBuilt(): boolean {
  const res = spawnSync(process.execPath, [MAIN_JS, 'agent', '--help'], { encoding: 'utf8' });
  return res.status === 0 && !/not built yet/.test(res.stdout);
}

/** Agent startup for this key type; the SDS fan-out once (with the P-256 CA). Failures are recorded, not thrown. */
async function agentFigures(report: Report, o: Options, ctx: AgentContext, target: AgentTarget, keyType: BenchKeyType, caPid: number): Promise<void> {
  try {
    say(`agent start to first certificate in Envoy (${keyType})`);
    const a = await measureAgentStartup(ctx, target, keyType);
    report.agentStartup.push(a);
    say(`  agent ready ${f0(a.agentReadyMs)} ms, Envoy holds it at ${f0(a.envoyFirstCertMs)} ms, agent RSS ${f0(a.agentRssMb)} MiB`);
  } catch (err) {
    report.errors.push(`agent startup ${keyType}: ${(err as Error).message}`);
    say(`agent startup ${keyType} failed: ${(err as Error).message}`);
  }
  if (keyType === 'ecdsa-p256' && o.leakRotations > 0) {
    try {
      say(`leak check: ${o.leakRotations} rotations of 1 s certificates, agent + real Envoy (about ${f0(o.leakRotations / 290)} min)`);
      const l = await measureRotationLeak(ctx, target, { rotations: o.leakRotations, caPid });
      report.rotationLeak = l;
      say(`  ${l.rotations} rotations in ${f0(l.seconds)} s: agent RSS ${f0(l.agentRssMb[0])} -> ${f0(l.agentRssMb[1])} MiB, FDs ${l.agentFds[0]} -> ${l.agentFds[1]}; CA RSS ${f0(l.caRssMb[0])} -> ${f0(l.caRssMb[1])} MiB, FDs ${l.caFds[0]} -> ${l.caFds[1]}`);
    } catch (err) {
      report.errors.push(`leak check: ${(err as Error).message}`);
      say(`leak check failed: ${(err as Error).message}`);
    }
  }
  if (keyType !== 'ecdsa-p256' || o.sdsStreams <= 0) return;
  try {
    say(`SDS fan-out: ${o.sdsStreams} streams on one agent, waiting for its rotation`);
    const f = await measureSdsFanout(ctx, target, { streams: o.sdsStreams, channels: 10, clientProcesses: 1, certTtl: '20s', timeoutMs: 60_000 });
    report.sdsFanout = f;
    say(`  all served in ${f0(f.allStreamsServedMs)} ms; rotation reached the last stream ${f0(f.rotationSpreadMs)} ms after the first; agent RSS ${f0(f.agentRssMb)} MiB (idle ${f0(f.agentRssIdleMb)})`);
  } catch (err) {
    report.errors.push(`SDS fan-out: ${(err as Error).message}`);
    say(`SDS fan-out failed: ${(err as Error).message}`);
  }
}

async function startServer(kind: ServerKind, ctx: { material: CaMaterial; cp: ControlPlane; benchEnv: Record<string, string>; logDir: string; o: Options; nodeFlags?: string[]; floorSpiffeId?: string }): Promise<RunningCa> {
  if (kind === 'transport floor') {
    return startTransportFloor({
      node: process.execPath, script: path.join(ROOT, 'dist', 'bench', 'transport-floor.js'),
      material: ctx.material, spiffeId: ctx.floorSpiffeId!, logDir: ctx.logDir,
    });
  }
  if (kind === 'citadel' || kind === 'citadel-nocache') {
    const ca = await startCitadelCa({
      node: process.execPath,
      mainJs: MAIN_JS,
      kubeconfig: ctx.cp.info.kubeconfigPath,
      namespace: CA_NAMESPACE,
      material: ctx.material,
      logDir: ctx.logDir,
      trustDomain: TRUST_DOMAIN,
      nodeFlags: ctx.nodeFlags ?? [],
      extraArgs: [...(kind === 'citadel-nocache' ? ['--token-review-cache-ttl', '0'] : []), ...ctx.o.caArgs],
    });
    return { ...ca, name: kind };
  }
  return startIstioCa({
    binary: ctx.benchEnv.ISTIOCA!,
    kubeconfig: ctx.cp.info.kubeconfigPath,
    material: ctx.material,
    logDir: ctx.logDir,
    trustDomain: TRUST_DOMAIN,
    tokenCacheTtlMs: kind === 'istio+cache' ? ctx.o.tokenCacheTtlMs : 0,
  });
}

function toRow(keyType: BenchKeyType, server: ServerKind, r: LoadgenResult, bound: CryptoBound, caPid: number): IssuanceRow {
  const per1k = (name: string) => (r.ok > 0 ? ((r.cpuSeconds[name] ?? 0) * 1000) / r.ok : NaN);
  const caCpu = per1k('ca');
  return {
    keyType,
    server,
    concurrency: r.concurrency,
    certsPerSec: r.certsPerSec,
    p50Ms: r.latencyMs.p50,
    p99Ms: r.latencyMs.p99,
    errors: r.errors,
    errorsByCode: r.errorsByCode,
    caCpuSecPer1k: caCpu,
    apiserverCpuSecPer1k: per1k('apiserver'),
    loadgenCpuSecPer1k: per1k('loadgen'),
    ratioToRawBound: r.certsPerSec / bound.verifySignPerSec,
    cryptoShareOfCpu: 1000 / bound.verifySignPerSec / caCpu,
    caRssMb: sampleProcess(caPid).rssBytes / 2 ** 20,
    raw: r,
  };
}

const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
const f3 = (n: number) => (Number.isFinite(n) ? n.toFixed(3) : '-');
const pct = (n: number) => (Number.isFinite(n) ? `${(n * 100).toFixed(0)}%` : '-');

/** The markdown the README section is made from. */
export function renderMarkdown(rep: Report): string {
  const m = rep.machine;
  const lines: string[] = [];
  lines.push(`Measured ${rep.date} on ${m.cpuModel} (${m.cores} cores, ${m.memoryGiB} GiB), Linux ${m.kernel}; Node ${m.node}, OpenSSL ${m.openssl}; ${m.go}; anchor ${m.istioModule}; kube-apiserver ${m.kubernetes}; citadel ${m.citadel}; load average ${m.loadAverage1mAtStart} at start, ${m.loadAverage1mAtEnd} at end. ${f0(rep.options.durationMs / 1000)} s measured per row after ${f0(rep.options.warmupMs / 1000)} s warm-up; ${rep.options.serviceAccounts * rep.options.podsPerServiceAccount} pod-bound tokens over ${rep.options.serviceAccounts} ServiceAccounts; load and CAs share the machine's cores.`);
  lines.push('');
  lines.push('Raw crypto bound (node:crypto, one core; CA and workload keys of the same type), and a whole issuance without transport on one core: citadel\'s `signCsr` (PEM/DER parsing, key import, CSR verify, leaf building and signing) and the same in Go\'s crypto/x509, the library Istio\'s CA signs with (per CPU second):');
  lines.push('');
  lines.push('| key type | sign/s | verify/s | verify+sign/s (bound) | citadel signCsr/s | Go crypto/x509 parse+verify+create/s | citadel / Go |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const b of rep.cryptoBounds) {
    const go = b.goX509PerSec;
    lines.push(`| ${b.keyType} | ${f0(b.signPerSec)} | ${f0(b.verifyPerSec)} | ${f0(b.verifySignPerSec)} | ${f0(b.signCsrPerSec)} | ${go ? f0(go) : '-'} | ${go ? `${f2(b.signCsrPerSec / go)}x` : '-'} |`);
  }
  lines.push('');
  if (rep.caPath?.length) {
    lines.push('citadel\'s CA path without gRPC (bench/ca-path.ts: handler, token-review cache, CSR policy, keyring and revocation guard, signing, metrics, audit line), 16 calls in flight, CPU of all threads per certificate, beside `signCsr` alone from the table above:');
    lines.push('');
    lines.push('| key type | signing | CPU us per certificate | signCsr alone, us | per-call work outside signCsr, us |');
    lines.push('|---|---|---:|---:|---:|');
    for (const r of rep.caPath) {
      const b = rep.cryptoBounds.find((x) => x.keyType === r.keyType);
      const alone = b ? 1e6 / b.signCsrPerSec : undefined;
      lines.push(`| ${r.keyType} | ${r.workers === 0 ? 'inline' : `${r.workers} worker${r.workers > 1 ? 's' : ''}`} | ${f0(r.cpuUsPerCert)} | ${alone ? f0(alone) : '-'} | ${alone ? f0(r.cpuUsPerCert - alone) : '-'} |`);
    }
    lines.push('');
  }
  lines.push('Issuance over gRPC+TLS on loopback with TokenReview authentication. `citadel`: as deployed (successful reviews cached 10 s); `citadel-nocache`: `--token-review-cache-ttl 0`; `istio`: Istio\'s CA server as shipped (no review cache: one TokenReview per request, through istiod\'s 80 QPS kube client); `istio+cache`: the same behind a 10 s review cache of ours; `transport floor`: citadel\'s gRPC layer (grpc-js + TLS + proto) answering a constant chain, i.e. what citadel pays before any CA work. `citadel / istio` compares certs/s (and CA CPU per certificate, lower is better) with the citadel row that caches the same way:');
  lines.push('');
  lines.push('| key | clients | server | certs/s | p50 ms | p99 ms | CA CPU s/1k | apiserver CPU s/1k | of raw bound | crypto share of CA CPU | citadel / istio certs/s | citadel / istio CPU | errors |');
  lines.push('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rep.issuance) {
    const ratio = rep.ratios.find((x) => x.keyType === r.keyType && x.concurrency === r.concurrency && x.versus === r.server);
    const cells = ratio ? [`${f2(ratio.certsPerSecRatio)}x`, `${f2(ratio.cpuPer1kRatio)}x`] : ['', ''];
    lines.push(`| ${r.keyType} | ${r.concurrency} | ${r.server} | ${f0(r.certsPerSec)} | ${f1(r.p50Ms)} | ${f1(r.p99Ms)} | ${f3(r.caCpuSecPer1k)} | ${f3(r.apiserverCpuSecPer1k)} | ${pct(r.ratioToRawBound)} | ${pct(r.cryptoShareOfCpu)} | ${cells[0]} | ${cells[1]} | ${r.errors} |`);
  }
  if (rep.agentStartup.length) {
    lines.push('');
    lines.push('Agent (real Envoy, simulated pod, citadel ca on loopback):');
    lines.push('');
    lines.push('| workload key | agent ready ms | Envoy holds cert ms | agent RSS MiB |');
    lines.push('|---|---:|---:|---:|');
    for (const a of rep.agentStartup) lines.push(`| ${a.keyType} | ${f0(a.agentReadyMs)} | ${f0(a.envoyFirstCertMs)} | ${f0(a.agentRssMb)} |`);
  }
  if (rep.sdsFanout) {
    const f = rep.sdsFanout;
    lines.push('');
    lines.push(`SDS fan-out: ${f.streams} StreamSecrets streams on one agent: all served in ${f0(f.allStreamsServedMs)} ms; a rotation reached the last stream ${f0(f.rotationSpreadMs)} ms after the first; agent RSS ${f0(f.agentRssMb)} MiB with the streams open (${f0(f.agentRssIdleMb)} MiB before).`);
  }
  if (rep.rotationLeak) {
    const l = rep.rotationLeak;
    lines.push('');
    lines.push(`Leak check: ${l.rotations} rotations of 1 s certificates in ${f0(l.seconds)} s (one agent, a real Envoy took ${l.envoyUpdates[1] - l.envoyUpdates[0]} of them over SDS), start -> end: agent RSS ${f0(l.agentRssMb[0])} -> ${f0(l.agentRssMb[1])} MiB, open FDs ${l.agentFds[0]} -> ${l.agentFds[1]}; CA RSS ${f0(l.caRssMb[0])} -> ${f0(l.caRssMb[1])} MiB, open FDs ${l.caFds[0]} -> ${l.caFds[1]}.`);
  }
  if (rep.caAtScale) {
    const c = rep.caAtScale;
    lines.push('');
    lines.push(`citadel ca with ${c.namespaces} namespaces and ${c.serviceAccounts} ServiceAccounts (all cached by its informers): every namespace held istio-ca-root-cert ${f0(c.readyToAllConfigMapsMs)} ms after the CA was ready; CA RSS ${f0(c.caRssMb)} MiB (peak ${f0(c.caPeakRssMb)} MiB).`);
  }
  if (rep.controllers?.rows.length) {
    lines.push('');
    lines.push('Controllers (bench/controllers.js, against its own apiserver):');
    lines.push('');
    lines.push('| figure | value |');
    lines.push('|---|---|');
    for (const [k, v] of rep.controllers.rows) lines.push(`| ${k} | ${v} |`);
  }
  if (rep.profile) {
    const p = rep.profile.summary;
    lines.push('');
    lines.push(`Where citadel's CA CPU goes (node --cpu-prof of \`${rep.profile.server}\`, ${rep.profile.keyType}, ${rep.profile.concurrency} clients, ${f0(p.busyMs)} ms busy):`);
    lines.push('');
    lines.push('| category | share |');
    lines.push('|---|---:|');
    for (const c of p.categories.slice(0, 12)) lines.push(`| ${c.category} | ${pct(c.share)} |`);
    lines.push('');
    lines.push('| hottest functions (self time) | category | share |');
    lines.push('|---|---|---:|');
    for (const h of p.hotFunctions.slice(0, 12)) lines.push(`| \`${h.where}\` | ${h.category} | ${pct(h.share)} |`);
    rep.profile.workers.forEach((w, i) => {
      lines.push('');
      lines.push(`Signing worker ${i + 1} (same run, ${f0(w.busyMs)} ms busy): ${w.categories.slice(0, 5).map((c) => `${c.category} ${pct(c.share)}`).join(', ')}.`);
    });
  }
  if (rep.notMeasured.length) {
    lines.push('');
    lines.push('Not measured in this run:');
    for (const n of rep.notMeasured) lines.push(`- ${n}`);
  }
  if (rep.errors.length) {
    lines.push('');
    lines.push('Errors:');
    for (const e of rep.errors) lines.push(`- ${e.split('\n')[0]}`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<number> {
  const started = Date.now();
  // The harness unrefs its child processes; while we only wait for one to exit (a slow SIGTERM shutdown) nothing
  // else would hold the event loop, and Node would end the run silently with code 0. This timer holds it.
  const keepAlive = setInterval(() => {}, 60_000);
  const o = parseArgs(process.argv.slice(2));
  say('building or reusing the Go load generator and the Istio anchor');
  const benchEnv = provisionBenchTools();

  const bounds: CryptoBound[] = [];

  say('starting the control plane (etcd + kube-apiserver)');
  const cp = await startControlPlane({ log: (l) => say(l) });
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-bench-'));
  const report: Report = {
    date: new Date().toISOString(),
    machine: machineInfo(benchEnv, cp),
    options: { durationMs: o.durationMs, warmupMs: o.warmupMs, concurrency: o.concurrency, keyTypes: o.keyTypes, servers: o.servers, profile: o.profile, profileServer: o.profileServer, serviceAccounts: o.serviceAccounts, podsPerServiceAccount: o.podsPerServiceAccount, tokenCacheTtlMs: o.tokenCacheTtlMs, agent: o.agent, sdsStreams: o.sdsStreams, leakRotations: o.leakRotations, scaleNamespaces: o.scaleNamespaces, scaleServiceAccountsPerNamespace: o.scaleServiceAccountsPerNamespace, caArgs: o.caArgs },
    cryptoBounds: bounds,
    caPath: [],
    issuance: [],
    ratios: [],
    agentStartup: [],
    notMeasured: [],
    errors: [],
    wallSeconds: 0,
  };
  try {
    const cluster = connectCluster(cp.info);
    await cluster.kube().core.createNamespace({ body: { metadata: { name: CA_NAMESPACE } } }).catch(() => undefined);
    const identitiesFile = path.join(workDir, 'identities.json');
    const nIds = await makeIdentities(cluster, o, identitiesFile);
    // The transport floor answers one constant chain, so its load uses one identity (the first).
    const floorIdentitiesFile = path.join(workDir, 'identities-floor.json');
    const firstIdentity = (JSON.parse(fs.readFileSync(identitiesFile, 'utf8')) as { token: string; spiffeId: string }[])[0]!;
    fs.writeFileSync(floorIdentitiesFile, JSON.stringify([firstIdentity]), { mode: 0o600 });
    say(`${nIds} pod-bound tokens (audience istio-ca) ready`);
    const apiserverPid = cp.apiserver.pid;
    const agentNs = await cluster.createNamespace('bench-agent');
    if (o.agent && !agentBuilt()) {
      o.agent = false;
      report.notMeasured.push('agent start to first certificate in Envoy, agent RSS, SDS fan-out (items 3, 4): `citadel agent` is not built yet');
    }

    for (const keyType of o.keyTypes) {
      const material = await writeCaMaterial(path.join(workDir, 'ca'), keyType, TRUST_DOMAIN);
      // Measured right before this key type's servers, so machine load drifts as little as possible in between.
      say(`raw crypto bound for ${keyType} (node:crypto, one core; then citadel's signCsr and Go's crypto/x509)`);
      const bound = measureCryptoBound(keyType, 1500, benchEnv.LOADGEN);
      bounds.push(bound);
      say(`citadel's CA path without gRPC for ${keyType} (handler to signed chain, 16 calls in flight; inline, then one signing worker)`);
      report.caPath.push(...(await measureCaPath(keyType, { ms: 1500, concurrency: 16, workers: [0, 1] })));
      for (const kind of o.servers) {
        let server: RunningCa;
        try {
          server = await startServer(kind, { material, cp, benchEnv, logDir: workDir, o, floorSpiffeId: firstIdentity.spiffeId });
        } catch (err) {
          const msg = `${kind} ${keyType}: could not start: ${(err as Error).message}`;
          say(msg);
          report.errors.push(msg);
          continue;
        }
        try {
          for (const c of o.concurrency) {
            say(`${keyType} ${kind} ${c} clients: ${o.durationMs / 1000} s`);
            try {
              const r = await runLoadgen({
                binary: benchEnv.LOADGEN!, addr: server.addr, serverName: server.serverName, rootCaFile: server.rootCaFile,
                identitiesFile: kind === 'transport floor' ? floorIdentitiesFile : identitiesFile,
                keyType, concurrency: c, durationMs: o.durationMs, warmupMs: o.warmupMs,
                label: `${kind} ${keyType} c${c}`, cpuPids: { ca: server.process.pid, apiserver: apiserverPid },
              });
              const row = toRow(keyType, kind, r, bound, server.process.pid);
              report.issuance.push(row);
              say(`  ${f0(row.certsPerSec)} certs/s, p50 ${f1(row.p50Ms)} ms, p99 ${f1(row.p99Ms)} ms, CA CPU ${f3(row.caCpuSecPer1k)} s/1k, ${row.errors} errors`);
            } catch (err) {
              const msg = `${kind} ${keyType} c${c}: ${(err as Error).message}`;
              say(msg);
              report.errors.push(msg);
            }
          }
          if (kind === 'citadel' && o.agent) {
            await agentFigures(report, o, { cluster, namespace: agentNs, node: process.execPath, mainJs: MAIN_JS, logDir: workDir },
              { caAddr: server.addr, caServerName: server.serverName, rootCertFile: material.rootCert, trustDomain: TRUST_DOMAIN }, keyType, server.process.pid);
          }
        } finally {
          const peak = peakRss(server.process.pid);
          if (peak !== undefined) say(`  ${kind} peak RSS ${f0(peak / 2 ** 20)} MiB`);
          const stopping = Date.now();
          await server.stop();
          const stopMs = Date.now() - stopping;
          if (stopMs > 3000) say(`  ${kind} took ${f0(stopMs)} ms to stop after SIGTERM`);
        }
      }
    }

    if (o.profile) {
      const keyType = o.keyTypes.includes('ecdsa-p256') ? 'ecdsa-p256' : o.keyTypes[0]!;
      const concurrency = o.concurrency.includes(16) ? 16 : o.concurrency[0]!;
      say(`profiling ${o.profileServer} (${keyType}, ${concurrency} clients) with --cpu-prof`);
      const profDir = path.join(workDir, 'cpuprof');
      fs.mkdirSync(profDir, { recursive: true });
      const material = await writeCaMaterial(path.join(workDir, 'ca-prof'), keyType, TRUST_DOMAIN);
      const server = await startServer(o.profileServer, { material, cp, benchEnv, logDir: workDir, o, nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] });
      try {
        await runLoadgen({
          binary: benchEnv.LOADGEN!, addr: server.addr, serverName: server.serverName, rootCaFile: server.rootCaFile,
          identitiesFile, keyType, concurrency, durationMs: o.durationMs, warmupMs: o.warmupMs, label: 'profile',
        });
      } finally {
        const stopping = Date.now();
        await server.stop();
        say(`  citadel ca stopped ${f0(Date.now() - stopping)} ms after SIGTERM (exit ${await server.process.exited})`);
      }
      // node writes one profile per thread: CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile, the main thread being 0.
      const files = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
      const threadOf = (f: string) => Number(f.split('.')[4]);
      const mainFile = files.find((f) => threadOf(f) === 0);
      if (mainFile) {
        // Profiles are large and machine-specific: kept in the cache dir, not in the repo.
        const profileDir = path.join(process.env.CITADEL_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'citadel'), 'bench-profiles');
        fs.mkdirSync(profileDir, { recursive: true });
        const keep = (f: string) => {
          const kept = path.join(profileDir, `${report.date.replace(/[:.]/g, '-')}-${o.profileServer}-${keyType}-thread${threadOf(f)}.cpuprofile`);
          fs.copyFileSync(path.join(profDir, f), kept);
          return kept;
        };
        const kept = keep(mainFile);
        const workers = files.filter((f) => f !== mainFile).map((f) => summariseCpuProfile(keep(f), 15));
        report.profile = { server: o.profileServer, keyType, concurrency, file: kept, summary: summariseCpuProfile(kept, 15, 'handleCsr'), workers };
      } else {
        report.errors.push('profile: citadel ca wrote no .cpuprofile (did it exit cleanly on SIGTERM?)');
      }
    }

    if (o.scaleNamespaces > 0 && o.servers.includes('citadel')) {
      const n = o.scaleNamespaces;
      const m = o.scaleServiceAccountsPerNamespace;
      say(`citadel ca at scale: creating ${n} namespaces with ${m} ServiceAccounts each`);
      try {
        const populated = await populate(cluster, 'scale', n, m);
        say(`  created in ${f0(populated.setupMs / 1000)} s; starting citadel ca`);
        const material = await writeCaMaterial(path.join(workDir, 'ca-scale'), 'ecdsa-p256', TRUST_DOMAIN);
        const s = await measureCaAtScale(cluster, populated, n * m, () => startServer('citadel', { material, cp, benchEnv, logDir: workDir, o }));
        report.caAtScale = s;
        say(`  every namespace has the root ConfigMap ${f0(s.readyToAllConfigMapsMs)} ms after ready; CA RSS ${f0(s.caRssMb)} MiB (peak ${f0(s.caPeakRssMb)})`);
      } catch (err) {
        report.errors.push(`CA at scale: ${(err as Error).message}`);
        say(`CA at scale failed: ${(err as Error).message}`);
      }
    }

    for (const r of report.issuance) {
      const counterpart = COUNTERPART[r.server];
      if (!counterpart) continue;
      const cit = report.issuance.find((x) => x.keyType === r.keyType && x.concurrency === r.concurrency && x.server === counterpart);
      if (!cit) continue;
      report.ratios.push({ keyType: r.keyType, concurrency: r.concurrency, versus: r.server, certsPerSecRatio: cit.certsPerSec / r.certsPerSec, cpuPer1kRatio: cit.caCpuSecPer1k / r.caCpuSecPer1k });
    }
  } finally {
    await cp.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  if (o.scaleNamespaces > 0) report.controllers = runControllersBench(o, report);
  report.wallSeconds = (Date.now() - started) / 1000;
  report.machine.loadAverage1mAtEnd = Number(os.loadavg()[0]!.toFixed(2));

  fs.mkdirSync(o.outDir, { recursive: true });
  const stamp = report.date.replace(/[:.]/g, '-');
  const jsonPath = path.join(o.outDir, `${stamp}.json`);
  fs.writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  const md = renderMarkdown(report);
  fs.writeFileSync(path.join(o.outDir, 'latest.md'), md);
  process.stdout.write(md);
  say(`wrote ${path.relative(ROOT, jsonPath)} and ${path.relative(ROOT, path.join(o.outDir, 'latest.md'))} in ${f0(report.wallSeconds)} s`);
  clearInterval(keepAlive);
  return report.errors.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[bench] failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
