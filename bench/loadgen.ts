/**
 * Runs the Go load generator (bench/go/loadgen) once and returns its JSON result. The same binary is used for
 * every CA under test, so the client's cost is the same for all of them.
 */
import { execFile } from 'node:child_process';
import type { BenchKeyType } from './crypto-bound.js';

export interface LoadgenResult {
  label?: string;
  target: string;
  keyType: string;
  concurrency: number;
  connections: number;
  identities: number;
  requests: number;
  ok: number;
  errors: number;
  errorsByCode: Record<string, number>;
  firstError?: string;
  warmupOk: number;
  durationS: number;
  certsPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  csrPrepS: number;
  /** CPU seconds over the measured phase per name given in cpuPids, plus `loadgen` itself. */
  cpuSeconds: Record<string, number>;
}

export interface LoadgenOptions {
  binary: string;
  addr: string;
  serverName: string;
  rootCaFile: string;
  /** JSON file of [{token, spiffeId}] (see bench/go/loadgen). */
  identitiesFile: string;
  keyType: BenchKeyType;
  concurrency: number;
  durationMs: number;
  warmupMs: number;
  csrPool?: number;
  label?: string;
  /** Processes whose CPU time over the measured phase the loadgen reads from /proc, by name. */
  cpuPids?: Record<string, number>;
}

/** Runs one load phase. Rejects with the loadgen's stderr when it exits non-zero (e.g. the first checked call failed). */
export function runLoadgen(o: LoadgenOptions): Promise<LoadgenResult> {
  const args = [
    '-addr', o.addr,
    '-server-name', o.serverName,
    '-root-ca', o.rootCaFile,
    '-identities', o.identitiesFile,
    '-key-type', o.keyType,
    '-concurrency', String(o.concurrency),
    '-duration', `${o.durationMs}ms`,
    '-warmup', `${o.warmupMs}ms`,
    '-csr-pool', String(o.csrPool ?? 64),
    '-label', o.label ?? '',
    '-cpu-pids', Object.entries(o.cpuPids ?? {}).map(([name, pid]) => `${name}=${pid}`).join(','),
  ];
  return new Promise((resolve, reject) => {
    execFile(o.binary, args, { maxBuffer: 16 << 20, timeout: o.durationMs + o.warmupMs + 120_000 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`loadgen ${o.label ?? ''} failed: ${stderr.trim() || err.message}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop()!) as LoadgenResult);
      } catch (e) {
        reject(new Error(`loadgen printed no JSON: ${stdout.slice(0, 500)} ${(e as Error).message}`));
      }
    });
  });
}
