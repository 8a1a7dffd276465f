/**
 * The real Workload API clients, built by scripts/provision-workload-api.sh (cached; a cold build takes minutes):
 *   - spiffeclient (test/workload-api/go/spiffeclient): our program on go-spiffe v2;
 *   - spiffe-helper: the SPIFFE project's file-writing helper.
 * spiffeclient finds the agent through SPIFFE_ENDPOINT_SOCKET, as applications do.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startProcess, type ManagedProcess } from '../harness/process.js';
import { runProvisionScript } from '../support/build.js';

export interface WorkloadApiTools {
  readonly spiffeClient: string;
  readonly spiffeHelper: string;
}

let provisioned: Promise<WorkloadApiTools> | undefined;

/** Runs scripts/provision-workload-api.sh once per test process. Throws with its log. */
export function provisionWorkloadApiTools(): Promise<WorkloadApiTools> {
  provisioned ??= runProvisionScript('provision-workload-api.sh', ['SPIFFECLIENT', 'SPIFFE_HELPER']).then((v) => ({ spiffeClient: v.SPIFFECLIENT, spiffeHelper: v.SPIFFE_HELPER }));
  return provisioned;
}

/** The environment of an application in the pod whose agent listens on `socketPath`. */
export function workloadEnv(socketPath: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, SPIFFE_ENDPOINT_SOCKET: `unix://${path.resolve(socketPath)}` };
}

/** Runs a one-shot spiffeclient subcommand and returns the JSON lines it printed. Rejects with its stderr. */
export function runSpiffeClient(binary: string, socketPath: string, args: readonly string[], timeoutMs = 60_000): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    execFile(binary, [...args], { env: workloadEnv(socketPath), timeout: timeoutMs, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`spiffeclient ${args.join(' ')} failed: ${err.message}\nstdout: ${stdout}\nstderr: ${stderr.slice(-4000)}`));
      resolve(stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>));
    });
  });
}

/** Starts `spiffeclient serve` (mTLS HTTPS on the pod's SVID) and resolves with its port once it listens. */
export async function startSpiffeServer(binary: string, o: { socketPath: string; allowTrustDomain: string; logPath: string }): Promise<{ proc: ManagedProcess; port: number }> {
  const proc = await startProcess({
    name: 'spiffeclient serve',
    command: binary,
    args: ['serve', '-allow-td', o.allowTrustDomain, '-timeout', '10m'],
    env: workloadEnv(o.socketPath),
    logPath: o.logPath,
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /"listening":"[^"]*:(\d+)"/.exec(fs.existsSync(o.logPath) ? fs.readFileSync(o.logPath, 'utf8') : '');
    if (m) return { proc, port: Number(m[1]) };
    if (!proc.running() || Date.now() > deadline) {
      await proc.stop();
      throw new Error(`spiffeclient serve did not listen:\n${proc.tail(20)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
