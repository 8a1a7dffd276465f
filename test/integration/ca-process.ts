/**
 * Runs the real `citadel ca` (node dist/src/cli/main.js ca ...) for integration tests: builds dist when it is
 * older than the sources, spawns the CA on loopback ports it picks itself (:0), reads its JSON logs, and calls it
 * over real gRPC+TLS with src/grpc/client.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createCaClient } from '../../src/grpc/client.js';
import { createCsr, generateKeyPair, type KeyType } from '../../src/pki/index.js';
import { openssl } from '../harness/openssl.js';
import { CITADEL_MAIN, REPO_ROOT } from '../support/build.js';
import type { KeyObject } from 'node:crypto';


export { ensureBuilt } from '../support/build.js';

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface CaProcess {
  readonly child: ChildProcess;
  readonly grpcPort: number;
  readonly monitoringPort: number;
  /** Every JSON log line so far. */
  logs(): LogLine[];
  /** Raw stderr so far. */
  stderr(): string;
  /** Resolves with the first log line matching, polling up to `timeoutMs`. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  metrics(): Promise<string>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

/** Spawns `citadel ca` with `args` (plus loopback :0 addresses unless given). Does not wait for readiness. */
export function spawnCa(args: readonly string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CITADEL_MAIN, 'ca', ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString('utf8')));
  child.stdout!.on('data', () => undefined);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, exited };
}

const parseLogs = (text: string): LogLine[] =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as LogLine];
      } catch {
        return [];
      }
    });

/** Starts the CA and waits for its "serving" log line (ports). Throws with its stderr if it exits first. */
export async function startCa(opts: { kubeconfig: string; namespace: string; cacertsDir?: string; controllers?: boolean; args?: readonly string[] }): Promise<CaProcess> {
  const cacertsDir = opts.cacertsDir ?? path.join(REPO_ROOT, '.citadel', 'no-cacerts');
  const args = [
    '--kubeconfig', opts.kubeconfig,
    '--namespace', opts.namespace,
    '--grpc-address', '127.0.0.1:0',
    '--monitoring-address', '127.0.0.1:0',
    '--cacerts-dir', cacertsDir,
    `--controllers=${opts.controllers ?? false}`,
    ...(opts.args ?? []),
  ];
  const { child, stderr, exited } = spawnCa(args);
  const logs = () => parseLogs(stderr());
  let exitCode: number | null | undefined;
  void exited.then((c) => (exitCode = c));
  const waitForLog = async (pred: (l: LogLine) => boolean, timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = logs().find(pred);
      if (hit) return hit;
      if (exitCode !== undefined) throw new Error(`citadel ca exited with ${exitCode}:\n${stderr()}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for a log line; stderr:\n${stderr().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const serving = await waitForLog((l) => l.msg === 'citadel ca serving');
  const monitoringPort = serving.monitoringPort as number;
  return {
    child,
    grpcPort: serving.grpcPort as number,
    monitoringPort,
    logs,
    stderr,
    waitForLog,
    async metrics() {
      const res = await fetch(`http://127.0.0.1:${monitoringPort}/metrics`);
      return res.text();
    },
    async stop() {
      if (exitCode === undefined) child.kill('SIGTERM');
      return exited;
    },
    exited,
  };
}

/** Value of a metric line (`name{labels} value`), 0 when absent. */
export function metricValue(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

export interface Csr {
  key: KeyObject;
  csr: string;
}

export async function makeCsr(spiffeId: string, keyType: KeyType = 'ecdsa-p256'): Promise<Csr> {
  const { privateKey } = await generateKeyPair(keyType);
  return { key: privateKey, csr: createCsr({ key: privateKey, spiffeId }) };
}

/** One CreateCertificate call over TLS. */
export async function requestCert(opts: {
  port: number;
  namespace: string;
  rootCaPem: string;
  csr: string;
  token?: string;
  ttlSeconds?: number;
  clientCertChainPem?: string;
  clientKeyPem?: string;
}): Promise<string[]> {
  const client = createCaClient({
    address: `127.0.0.1:${opts.port}`,
    rootCaPem: opts.rootCaPem,
    serverName: `citadel.${opts.namespace}.svc`,
    clientCertChainPem: opts.clientCertChainPem,
    clientKeyPem: opts.clientKeyPem,
  });
  try {
    return await client.createCertificate({ csr: opts.csr, validityDurationSeconds: opts.ttlSeconds ?? 0, bearerToken: opts.token });
  } finally {
    client.close();
  }
}

/**
 * Checks a CreateCertificate answer ([leaf, intermediates..., root bundle]) with `openssl verify`, independently of
 * src/pki; the files go to a fresh directory under `tmpDir`. Resolves with openssl's output.
 * @throws Error with openssl's stderr when the chain does not verify.
 */
export async function opensslVerifyChain(chain: readonly string[], tmpDir: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(tmpDir, 'verify-'));
  fs.writeFileSync(path.join(dir, 'leaf.pem'), chain[0]!);
  fs.writeFileSync(path.join(dir, 'bundle.pem'), chain[chain.length - 1]!);
  const args = ['verify', '-CAfile', path.join(dir, 'bundle.pem')];
  if (chain.length > 2) {
    fs.writeFileSync(path.join(dir, 'inter.pem'), chain.slice(1, -1).join(''));
    args.push('-untrusted', path.join(dir, 'inter.pem'));
  }
  return openssl([...args, path.join(dir, 'leaf.pem')]);
}
