/**
 * `citadel agent` runs in every pod, so every module it loads costs start-up time and memory times the number of
 * pods. This runs the built agent under a module-load trace (node's module.registerHooks, which sees both import
 * and require) through start-up, its first CA attempt and a clean shutdown, and fails when it loads what only the
 * CA or the pki commands need; and the same of what went into the agent's bundle.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_BUNDLE, CITADEL_MAIN, ensureBuilt, ensureBundled } from '../../support/build.js';

const TRACE = `
import { registerHooks } from 'node:module';
import { writeFileSync } from 'node:fs';
const loaded = new Set();
registerHooks({ load(url, context, next) { loaded.add(url); return next(url, context); } });
process.on('exit', () => writeFileSync(process.env.MODULE_TRACE_OUT, JSON.stringify([...loaded])));
`;

/** What the agent must never load: the Kubernetes client, the CA's and the pki CLI's code, unused metric extras. */
const FORBIDDEN: readonly [string, RegExp][] = [
  ['@kubernetes/client-node', /\/node_modules\/@kubernetes\/client-node\//],
  ['undici (only the Kubernetes client uses it)', /\/node_modules\/undici\//],
  ['src/kube', /\/dist\/src\/kube\//],
  ['src/controllers', /\/dist\/src\/controllers\//],
  ['src/ca', /\/dist\/src\/ca\//],
  ['the ca and pki commands', /\/dist\/src\/cli\/(ca|pki)\.js$/],
  ["prom-client's index (default metrics, cluster, pushgateway)", /\/node_modules\/prom-client\/index\.js$/],
  ['@opentelemetry/api', /\/node_modules\/@opentelemetry\//],
  ['@grpc/grpc-js-xds (its protos are generated into proto/descriptors)', /\/node_modules\/@grpc\/grpc-js-xds\//],
];

describe('citadel agent start-up', () => {
  let dir: string;
  beforeAll(async () => {
    await ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'citadel-agent-modules-'));
  }, 180_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads only what the agent needs', async () => {
    const hook = join(dir, 'trace.mjs');
    const out = join(dir, 'loaded.json');
    writeFileSync(hook, TRACE);
    // No CA answers on port 1 and there is no root file: the agent starts, serves SDS, and retries the CA.
    const child = spawn(process.execPath, ['--import', hook, CITADEL_MAIN, 'agent', '--ca-address', '127.0.0.1:1', '--status-address', '127.0.0.1:0', '--sds-socket', join(dir, 'sds.sock')], {
      cwd: dir,
      env: { PATH: process.env.PATH, MODULE_TRACE_OUT: out, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        // Running, and the first CA attempt has failed: everything start-up and an attempt load is loaded.
        if (/"agent running"/.test(log) && /cannot get a workload certificate/.test(log)) resolve();
      });
      void exited.then((code) => reject(new Error(`agent exited (${code}) before it was running:\n${log}`)));
    });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);

    const loaded = JSON.parse(readFileSync(out, 'utf8')) as string[];
    // The trace sees the agent's own modules and its gRPC library, so an empty list cannot pass.
    expect(loaded.some((u) => u.endsWith('/dist/src/cli/agent.js'))).toBe(true);
    expect(loaded.some((u) => u.includes('/node_modules/@grpc/grpc-js/'))).toBe(true);
    const offenders = FORBIDDEN.flatMap(([what, pattern]) => {
      const hits = loaded.filter((u) => pattern.test(u));
      return hits.length ? [`${what}: ${hits.slice(0, 3).join(', ')}`] : [];
    });
    expect(offenders).toEqual([]);
  });

  it('bundles only what the agent needs (dist/bundle/agent.mjs, what the agent image runs)', async () => {
    await ensureBundled();
    // esbuild's list of the files it put into the bundle (scripts/bundle.ts), relative to the repository.
    const inputs = (JSON.parse(readFileSync(AGENT_BUNDLE.replace(/\.mjs$/, '.inputs.json'), 'utf8')) as string[]).map((f) => `/${f}`);
    expect(inputs.some((f) => f.endsWith('/dist/src/cli/agent-run.js'))).toBe(true);
    expect(inputs.some((f) => f.includes('/node_modules/@grpc/grpc-js/'))).toBe(true);
    const offenders = FORBIDDEN.flatMap(([what, pattern]) => {
      const hits = inputs.filter((f) => pattern.test(f));
      return hits.length ? [`${what}: ${hits.slice(0, 3).join(', ')}`] : [];
    });
    expect(offenders).toEqual([]);
  }, 180_000);
});
