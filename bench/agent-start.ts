/**
 * What `citadel agent` costs to start, with nothing else in the way: each build given is spawned in a fresh
 * directory with no CA to answer (so no CSR) and no Envoy, alternating builds, `--runs` times; at its
 * "agent running" log line its CPU so far and RSS are read, and its RSS again 1.5 s later. The figure that
 * separates module loading (bundled or not, docs/footprint.md) from the rest of the start.
 *
 *   node dist/bench/agent-start.js [--runs 10] [--agents dist/bundle/agent.mjs,dist/src/cli/main.js]
 *                                  [--node-flags=--max-semi-space-size=1]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { agentArgv } from './agent.js';
import { spread } from './spread.js';
import { sampleProcess } from './procstat.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Sample {
  cpuMs: number;
  rssMb: number;
  rssLaterMb: number;
}

/** Starts the agent from `js` once and samples it at "agent running". */
async function startOnce(js: string, nodeFlags: readonly string[]): Promise<Sample> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-start-'));
  const child = spawn(process.execPath, [...nodeFlags, ...agentArgv(js), '--ca-address', '127.0.0.1:1', '--status-address', '127.0.0.1:0', '--sds-socket', path.join(dir, 'sds.sock')], {
    cwd: dir,
    env: { PATH: process.env.PATH, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    const atRunning = await new Promise<{ cpuMs: number; rssMb: number }>((resolve, reject) => {
      let log = '';
      child.once('exit', (code) => reject(new Error(`agent ${js} exited (${code}) before running:\n${log.slice(-2000)}`)));
      child.stderr!.on('data', (chunk: Buffer) => {
        if (log.includes('"agent running"')) return;
        log += chunk.toString();
        if (log.includes('"agent running"')) {
          const s = sampleProcess(child.pid!);
          resolve({ cpuMs: s.cpuSeconds * 1000, rssMb: s.rssBytes / 2 ** 20 });
        }
      });
    });
    await new Promise((r) => setTimeout(r, 1500));
    return { ...atRunning, rssLaterMb: sampleProcess(child.pid!).rssBytes / 2 ** 20 };
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '10' },
      agents: { type: 'string', default: ['dist/bundle/agent.mjs', 'dist/src/cli/main.js'].join(',') },
      'node-flags': { type: 'string', default: '' },
    },
  });
  const agents = values.agents.split(',').map((a) => path.resolve(ROOT, a));
  const nodeFlags = values['node-flags'].split(/\s+/).filter(Boolean);
  const samples = new Map<string, Sample[]>(agents.map((a) => [a, []]));
  const loadAtStart = os.loadavg()[0]!;
  for (let i = 0; i < Number(values.runs); i++) for (const a of agents) samples.get(a)!.push(await startOnce(a, nodeFlags));
  process.stdout.write(`load average ${loadAtStart.toFixed(1)} at start, ${os.loadavg()[0]!.toFixed(1)} at end; median / p90 of ${values.runs} starts each${nodeFlags.length ? `, node ${nodeFlags.join(' ')}` : ''}\n\n`);
  process.stdout.write('| agent | CPU to "agent running" ms | RSS then MiB | RSS 1.5 s later MiB |\n|---|---:|---:|---:|\n');
  const f = (xs: number[]) => {
    const s = spread(xs);
    return `${s.median.toFixed(0)} / ${s.p90.toFixed(0)}`;
  };
  for (const [a, xs] of samples) process.stdout.write(`| ${path.relative(ROOT, a)} | ${f(xs.map((x) => x.cpuMs))} | ${f(xs.map((x) => x.rssMb))} | ${f(xs.map((x) => x.rssLaterMb))} |\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`[agent-start] failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
