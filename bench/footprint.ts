/**
 * The sidecar's footprint (issue 13), beside the anchor, in one run against one control plane:
 * - agent start -> a real Envoy holds its certificate, median and p90 of --starts starts per workload key type,
 *   with the agent's readiness and its RSS at steady state (bench/agent.ts, one row each);
 * - the anchor: Istio's own agent-side code (test/compat's istioclient: key, CSR, CreateCertificate) against the
 *   same CA, spawn to certificate in hand, and its peak RSS (GNU time);
 * - SDS fan-out: --sds-streams streams on one agent, the rotation's spread and the agent's RSS with them open;
 * - `citadel ca` RSS with --scale-namespaces namespaces of 5 ServiceAccounts each cached (bench/scale.ts).
 *
 *   node dist/bench/footprint.js [--starts 5] [--key-types ecdsa-p256,rsa-2048] [--rows startup,anchor,fanout,scale]
 *                                [--sds-streams 1000] [--sds-clients 1] [--scale-namespaces 1000] [--main-js dist/src/cli/main.js]
 *                                [--agent-js dist/bundle/agent.mjs] [--agent-node-flags '--max-semi-space-size=1']
 *                                [--out bench/results] [--istioclient PATH]
 *
 * --main-js measures another build of citadel (e.g. a worktree of an older commit) with everything else equal;
 * --agent-js what runs the agent: by default the bundle the agent image runs, or a main.js (an older build, or
 * this one unbundled).
 * Writes bench/results/footprint-<date>.json and prints the markdown.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs as parseCliArgs } from 'node:util';
import { startControlPlane } from '../test/harness/cluster.js';
import { startPod } from '../test/harness/kubelet.js';
import { connectCluster } from '../test/harness/test-cluster.js';
import { measureAgentStartup, measureSdsFanout, type AgentContext, type AgentStartup, type AgentTarget, type SdsFanout } from './agent.js';
import { writeCaMaterial } from './ca-material.js';
import type { BenchKeyType } from './crypto-bound.js';
import { measureCaAtScale, populate, type CaAtScale } from './scale.js';
import { spread, type Spread } from './spread.js';
import { startCitadelCa, type RunningCa } from './servers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TRUST_DOMAIN = 'cluster.local';
const CA_NAMESPACE = 'citadel-system';
type Row = 'startup' | 'anchor' | 'fanout' | 'scale';

interface Options {
  starts: number;
  keyTypes: BenchKeyType[];
  rows: Row[];
  sdsStreams: number;
  /** Client processes the SDS streams come from. */
  sdsClients: number;
  scaleNamespaces: number;
  mainJs: string;
  agentJs: string;
  /** Node flags for the agent, space-separated. */
  agentNodeFlags: string[];
  outDir: string;
  /** Istio's client binary; default: from scripts/provision-compat.sh. */
  istioClient?: string;
}

interface StartupRow {
  keyType: BenchKeyType;
  envoyHoldsCertMs: Spread;
  agentReadyMs: Spread;
  agentRssMb: Spread;
  agentCpuMs: Spread;
  runs: AgentStartup[];
}

interface AnchorRow {
  keyType: BenchKeyType;
  /** istioclient spawn to its answer with the certificate chain, ms. */
  certificateMs: Spread;
  peakRssMb: Spread;
}

interface Report {
  date: string;
  machine: Record<string, string | number>;
  options: Omit<Options, 'outDir'>;
  startup: StartupRow[];
  anchor: AnchorRow[];
  fanout?: SdsFanout;
  caAtScale?: CaAtScale;
  errors: string[];
}

function parseArgs(argv: string[]): Options {
  const { values: v } = parseCliArgs({
    args: argv,
    options: {
      starts: { type: 'string', default: '5' },
      'key-types': { type: 'string', default: 'ecdsa-p256,rsa-2048' },
      rows: { type: 'string', default: 'startup,anchor,fanout,scale' },
      'sds-streams': { type: 'string', default: '1000' },
      'sds-clients': { type: 'string', default: '1' },
      'scale-namespaces': { type: 'string', default: '1000' },
      'main-js': { type: 'string', default: path.join(ROOT, 'dist', 'src', 'cli', 'main.js') },
      'agent-js': { type: 'string', default: path.join(ROOT, 'dist', 'bundle', 'agent.mjs') },
      'agent-node-flags': { type: 'string', default: '' },
      out: { type: 'string', default: path.join(ROOT, 'bench', 'results') },
      istioclient: { type: 'string' },
    },
  });
  const o: Options = {
    starts: Number(v.starts),
    keyTypes: v['key-types'].split(',') as BenchKeyType[],
    rows: v.rows.split(',') as Row[],
    sdsStreams: Number(v['sds-streams']),
    sdsClients: Number(v['sds-clients']),
    scaleNamespaces: Number(v['scale-namespaces']),
    mainJs: path.resolve(v['main-js']),
    agentJs: path.resolve(v['agent-js']),
    agentNodeFlags: v['agent-node-flags'].split(/\s+/).filter(Boolean),
    outDir: path.resolve(v.out),
    ...(v.istioclient ? { istioClient: path.resolve(v.istioclient) } : {}),
  };
  if (!Number.isInteger(o.starts) || o.starts < 1) throw new Error('--starts: a positive integer');
  for (const r of o.rows) if (!['startup', 'anchor', 'fanout', 'scale'].includes(r)) throw new Error(`--rows: unknown ${r}`);
  for (const k of o.keyTypes) if (k !== 'rsa-2048' && k !== 'ecdsa-p256') throw new Error(`--key-types: ${k} is not rsa-2048 or ecdsa-p256`);
  return o;
}

const say = (line: string) => process.stderr.write(`[footprint] ${line}\n`);
const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
const fs0 = (s: Spread) => `${f0(s.median)} / ${f0(s.p90)}`;

/** Istio's client from scripts/provision-compat.sh (cached; cold, it builds for minutes with progress on stderr). */
function istioClientBinary(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('bash', [path.join(ROOT, 'scripts', 'provision-compat.sh')], { cwd: ROOT, timeout: 30 * 60_000 }, (err, stdout) => {
      const bin = /^ISTIOCLIENT=(.+)$/m.exec(stdout)?.[1];
      if (err || !bin) reject(new Error(`scripts/provision-compat.sh failed: ${err?.message ?? 'no ISTIOCLIENT'}`));
      else resolve(bin);
    });
    child.stderr?.pipe(process.stderr);
  });
}

/** Runs Istio's client once under GNU time: ms to the certificate and peak RSS (MiB). Throws when no chain came back. */
function runAnchor(istioClient: string, a: { caAddr: string; serverName: string; rootCert: string; tokenPath: string; namespace: string; serviceAccount: string; keyType: BenchKeyType }): Promise<{ ms: number; rssMb: number }> {
  const args = [
    '-f', '%M', istioClient,
    '-ca-addr', a.caAddr, '-ca-san', a.serverName, '-root-cert', a.rootCert, '-token-file', a.tokenPath,
    '-trust-domain', TRUST_DOMAIN, '-namespace', a.namespace, '-service-account', a.serviceAccount,
    '-key', a.keyType === 'rsa-2048' ? 'rsa' : 'ecdsa-p256', '-ttl', '1h',
  ];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile('/usr/bin/time', args, { timeout: 60_000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const ms = performance.now() - started;
      if (err) return reject(new Error(`istioclient failed (GNU time at /usr/bin/time is needed for its RSS): ${err.message}\n${stderr.slice(-2000)}`));
      const result = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { certChain?: string[] | null; error?: string };
      if (!result.certChain?.length) return reject(new Error(`istioclient got no certificate: ${result.error ?? stdout}`));
      const kb = Number(stderr.trim().split('\n').pop());
      resolve({ ms, rssMb: kb / 1024 });
    });
  });
}

async function main(): Promise<number> {
  const keepAlive = setInterval(() => {}, 60_000);
  const o = parseArgs(process.argv.slice(2));
  const istioClient = o.rows.includes('anchor') ? (o.istioClient ?? (say('istioclient (scripts/provision-compat.sh; cold: minutes)'), await istioClientBinary())) : '';
  say('starting the control plane (etcd + kube-apiserver)');
  const cp = await startControlPlane({ log: (l) => say(l) });
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-footprint-'));
  const report: Report = {
    date: new Date().toISOString(),
    machine: {
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      node: process.version,
      citadel: o.mainJs,
      agent: [...o.agentNodeFlags, o.agentJs].join(' '),
      loadAverage1mAtStart: Number(os.loadavg()[0]!.toFixed(2)),
    },
    options: { starts: o.starts, keyTypes: o.keyTypes, rows: o.rows, sdsStreams: o.sdsStreams, sdsClients: o.sdsClients, scaleNamespaces: o.scaleNamespaces, mainJs: o.mainJs, agentJs: o.agentJs, agentNodeFlags: o.agentNodeFlags },
    startup: [],
    anchor: [],
    errors: [],
  };
  const startCa = async (keyType: BenchKeyType): Promise<RunningCa> => {
    const material = await writeCaMaterial(path.join(workDir, `ca-${keyType}-${Date.now()}`), keyType, TRUST_DOMAIN);
    return startCitadelCa({ node: process.execPath, mainJs: o.mainJs, kubeconfig: cp.info.kubeconfigPath, namespace: CA_NAMESPACE, material, logDir: workDir, trustDomain: TRUST_DOMAIN });
  };
  try {
    const cluster = connectCluster(cp.info);
    await cluster.kube().core.createNamespace({ body: { metadata: { name: CA_NAMESPACE } } }).catch(() => undefined);
    const namespace = await cluster.createNamespace('footprint');
    const ctx: AgentContext = { cluster, namespace, node: process.execPath, mainJs: o.mainJs, agentJs: o.agentJs, agentNodeFlags: o.agentNodeFlags, logDir: workDir };

    for (const keyType of o.keyTypes) {
      if (!o.rows.some((r) => r === 'startup' || r === 'anchor' || (r === 'fanout' && keyType === 'ecdsa-p256'))) continue;
      const ca = await startCa(keyType);
      const target: AgentTarget = { caAddr: ca.addr, caServerName: ca.serverName, rootCertFile: ca.rootCaFile, trustDomain: TRUST_DOMAIN };
      try {
        if (o.rows.includes('startup')) {
          const runs: AgentStartup[] = [];
          for (let i = 0; i < o.starts; i++) {
            try {
              const a = await measureAgentStartup(ctx, target, keyType);
              runs.push(a);
              say(`${keyType} start ${i + 1}/${o.starts}: ready ${f0(a.agentReadyMs)} ms, Envoy holds it at ${f0(a.envoyFirstCertMs)} ms, agent CPU ${f0(a.agentCpuMs)} ms, RSS ${f0(a.agentRssMb)} MiB`);
            } catch (err) {
              report.errors.push(`startup ${keyType}: ${(err as Error).message.split('\n')[0]}`);
            }
          }
          if (runs.length) {
            report.startup.push({
              keyType,
              envoyHoldsCertMs: spread(runs.map((r) => r.envoyFirstCertMs)),
              agentReadyMs: spread(runs.map((r) => r.agentReadyMs)),
              agentRssMb: spread(runs.map((r) => r.agentRssMb)),
              agentCpuMs: spread(runs.map((r) => r.agentCpuMs)),
              runs,
            });
          }
        }
        if (o.rows.includes('anchor')) {
          const pod = await startPod(cluster, { namespace, serviceAccount: 'anchor', watchRootCert: false, tokenExpirationSeconds: 7200 });
          try {
            const samples: { ms: number; rssMb: number }[] = [];
            for (let i = 0; i < o.starts; i++) {
              try {
                const s = await runAnchor(istioClient, { caAddr: ca.addr, serverName: ca.serverName, rootCert: ca.rootCaFile, tokenPath: pod.tokenPath, namespace, serviceAccount: 'anchor', keyType });
                samples.push(s);
                say(`${keyType} anchor ${i + 1}/${o.starts}: certificate at ${f0(s.ms)} ms, peak RSS ${f0(s.rssMb)} MiB`);
              } catch (err) {
                report.errors.push(`anchor ${keyType}: ${(err as Error).message.split('\n')[0]}`);
              }
            }
            if (samples.length) report.anchor.push({ keyType, certificateMs: spread(samples.map((s) => s.ms)), peakRssMb: spread(samples.map((s) => s.rssMb)) });
          } finally {
            await pod.delete();
          }
        }
        if (o.rows.includes('fanout') && keyType === 'ecdsa-p256' && o.sdsStreams > 0) {
          try {
            say(`SDS fan-out: ${o.sdsStreams} streams on one agent, waiting for its rotation`);
            report.fanout = await measureSdsFanout(ctx, target, { streams: o.sdsStreams, channels: 10, clientProcesses: o.sdsClients, certTtl: '20s', timeoutMs: 60_000 });
            const f = report.fanout;
            say(`  rotation reached the last stream ${f0(f.rotationSpreadMs)} ms after the first (agent CPU ${f0(f.agentRotationCpuMs)} ms); agent RSS ${f0(f.agentRssMb)} MiB (idle ${f0(f.agentRssIdleMb)})`);
          } catch (err) {
            report.errors.push(`fan-out: ${(err as Error).message.split('\n')[0]}`);
          }
        }
      } finally {
        await ca.stop();
      }
    }

    if (o.rows.includes('scale') && o.scaleNamespaces > 0) {
      say(`citadel ca at scale: creating ${o.scaleNamespaces} namespaces with 5 ServiceAccounts each`);
      try {
        const populated = await populate(cluster, 'scale', o.scaleNamespaces, 5);
        report.caAtScale = await measureCaAtScale(cluster, populated, o.scaleNamespaces * 5, () => startCa('ecdsa-p256'));
        say(`  CA RSS ${f0(report.caAtScale.caRssMb)} MiB (peak ${f0(report.caAtScale.caPeakRssMb)})`);
      } catch (err) {
        report.errors.push(`CA at scale: ${(err as Error).message.split('\n')[0]}`);
      }
    }
  } finally {
    await cp.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  report.machine.loadAverage1mAtEnd = Number(os.loadavg()[0]!.toFixed(2));
  fs.mkdirSync(o.outDir, { recursive: true });
  const file = path.join(o.outDir, `footprint-${report.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(renderMarkdown(report));
  say(`wrote ${path.relative(ROOT, file)}`);
  clearInterval(keepAlive);
  return report.errors.length ? 1 : 0;
}

export function renderMarkdown(r: Report): string {
  const m = r.machine;
  const lines = [`Measured ${r.date} on ${m.cpuModel} (${m.cores} cores), Node ${m.node}; load average ${m.loadAverage1mAtStart} at start, ${m.loadAverage1mAtEnd} at end. median / p90 of ${r.options.starts} runs each.`, ''];
  if (r.startup.length || r.anchor.length) {
    lines.push('| workload key | citadel agent: Envoy holds cert ms | agent ready ms | agent CPU by then ms | agent RSS MiB | anchor (Istio client): certificate ms | anchor peak RSS MiB |');
    lines.push('|---|---:|---:|---:|---:|---:|---:|');
    for (const k of r.options.keyTypes) {
      const s = r.startup.find((x) => x.keyType === k);
      const a = r.anchor.find((x) => x.keyType === k);
      lines.push(`| ${k} | ${s ? fs0(s.envoyHoldsCertMs) : '-'} | ${s ? fs0(s.agentReadyMs) : '-'} | ${s?.agentCpuMs ? fs0(s.agentCpuMs) : '-'} | ${s ? fs0(s.agentRssMb) : '-'} | ${a ? fs0(a.certificateMs) : '-'} | ${a ? fs0(a.peakRssMb) : '-'} |`);
    }
  }
  if (r.fanout) {
    const f = r.fanout;
    lines.push('', `SDS fan-out: ${f.streams} streams on one agent: rotation reached the last stream ${f0(f.rotationSpreadMs)} ms after the first (the agent used ${f0(f.agentRotationCpuMs)} ms of CPU for it; the streams came from ${f.clientProcesses} client processes); agent RSS ${f0(f.agentRssMb)} MiB with the streams open (${f0(f.agentRssIdleMb)} MiB before).`);
  }
  if (r.caAtScale) {
    const c = r.caAtScale;
    lines.push('', `citadel ca with ${c.namespaces} namespaces and ${c.serviceAccounts} ServiceAccounts cached: RSS ${f0(c.caRssMb)} MiB (peak ${f0(c.caPeakRssMb)} MiB); every namespace had istio-ca-root-cert ${f0(c.readyToAllConfigMapsMs)} ms after ready.`);
  }
  if (r.errors.length) lines.push('', 'Errors:', ...r.errors.map((e) => `- ${e}`));
  return `${lines.join('\n')}\n`;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[footprint] failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
