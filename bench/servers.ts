/**
 * The CAs under test, each started as its own process on loopback with the same signing material and the
 * same kubeconfig: `citadel ca` (our build, dist/src/cli/main.js) and the Istio anchor (bench/go/istioca).
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { freePorts } from '../test/harness/ports.js';
import { startProcess, type ManagedProcess } from '../test/harness/process.js';
import type { CaMaterial } from './ca-material.js';

export interface RunningCa {
  /** Row label: `citadel`, `istio` or `istio+cache`. */
  readonly name: string;
  readonly process: ManagedProcess;
  /** host:port of the CSR API. */
  readonly addr: string;
  /** The DNS name on the serving certificate (the loadgen's TLS server name). */
  readonly serverName: string;
  /** Roots that verify the serving certificate. */
  readonly rootCaFile: string;
  stop(): Promise<void>;
}

export interface CitadelCaOptions {
  /** node binary (process.execPath). */
  node: string;
  /** dist/src/cli/main.js */
  mainJs: string;
  kubeconfig: string;
  namespace: string;
  material: CaMaterial;
  logDir: string;
  trustDomain: string;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=...']. */
  nodeFlags?: readonly string[];
  /** Extra `citadel ca` flags. */
  extraArgs?: readonly string[];
  readyTimeoutMs?: number;
}

/**
 * Starts `citadel ca` with the material as its cacerts dir and waits for /readyz. Throws with the log tail
 * if it exits or is not ready in time.
 */
export async function startCitadelCa(o: CitadelCaOptions): Promise<RunningCa> {
  const [grpcPort, monPort] = (await freePorts(2)) as [number, number];
  const logPath = path.join(o.logDir, `citadel-ca-${o.material.keyType}-${Date.now()}.log`);
  const proc = await startProcess({
    name: 'citadel ca',
    command: o.node,
    logPath,
    args: [
      ...(o.nodeFlags ?? []),
      o.mainJs, 'ca',
      '--kubeconfig', o.kubeconfig,
      '--namespace', o.namespace,
      '--trust-domain', o.trustDomain,
      '--cacerts-dir', o.material.dir,
      '--grpc-address', `127.0.0.1:${grpcPort}`,
      '--monitoring-address', `127.0.0.1:${monPort}`,
      // The per-identity issuance limit (default 20/s, burst 200) would cap a load test of 8 identities;
      // Istio has no such limit, so lift it for the comparison.
      '--csr-rate-limit-qps', '1000000',
      '--csr-rate-limit-burst', '10000000',
      ...(o.extraArgs ?? []),
    ],
    // Default log level (info): one audit line per certificate, as deployed.
    env: { ...process.env },
  });
  await waitReady(proc, o.readyTimeoutMs ?? 60_000, async () => (await httpStatus(`http://127.0.0.1:${monPort}/readyz`)) === 200);
  return {
    name: 'citadel',
    process: proc,
    addr: `127.0.0.1:${grpcPort}`,
    serverName: `citadel.${o.namespace}.svc`,
    rootCaFile: o.material.rootCert,
    // Longer than citadel's own --shutdown-grace (10 s), so a slow drain is seen as such and not cut by SIGKILL.
    stop: () => proc.stop(15_000),
  };
}

export interface IstioCaOptions {
  binary: string;
  kubeconfig: string;
  material: CaMaterial;
  logDir: string;
  trustDomain: string;
  /** 0: Istio's behaviour (every request does a TokenReview). */
  tokenCacheTtlMs: number;
  readyTimeoutMs?: number;
}

/** Starts the Istio anchor with the same material (plugged-in mode) and waits for its ready line. */
export async function startIstioCa(o: IstioCaOptions): Promise<RunningCa> {
  const name = o.tokenCacheTtlMs > 0 ? 'istio+cache' : 'istio';
  const logPath = path.join(o.logDir, `istioca-${o.material.keyType}-${name}-${Date.now()}.log`);
  const proc = await startProcess({
    name,
    command: o.binary,
    logPath,
    args: [
      '-addr', '127.0.0.1:0',
      '-kubeconfig', o.kubeconfig,
      '-trust-domain', o.trustDomain,
      '-ca-cert', o.material.caCert,
      '-ca-key', o.material.caKey,
      '-cert-chain', o.material.certChain,
      '-root-cert', o.material.rootCert,
      '-token-cache-ttl', `${o.tokenCacheTtlMs}ms`,
    ],
  });
  let addr = '';
  await waitReady(proc, o.readyTimeoutMs ?? 30_000, async () => {
    const m = /"addr":"([^"]+)"/.exec(fs.readFileSync(logPath, 'utf8'));
    if (m) addr = m[1]!;
    return addr !== '';
  });
  return {
    name,
    process: proc,
    addr,
    serverName: 'istiod.istio-system.svc',
    rootCaFile: o.material.rootCert,
    stop: () => proc.stop(5_000),
  };
}

async function waitReady(proc: ManagedProcess, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.running()) throw new Error(`${proc.name} exited (${await proc.exited}) before it was ready:\n${proc.tail()}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`${proc.name} not ready after ${timeoutMs} ms:\n${proc.tail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function httpStatus(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}

export interface TransportFloorOptions {
  node: string;
  /** dist/bench/transport-floor.js */
  script: string;
  material: CaMaterial;
  /** The one identity the load will use (the constant answer's leaf carries it). */
  spiffeId: string;
  logDir: string;
}

/** Starts bench/transport-floor (citadel's gRPC layer answering a constant chain) and waits for its ready line. */
export async function startTransportFloor(o: TransportFloorOptions): Promise<RunningCa> {
  const [port] = (await freePorts(1)) as [number];
  const serverName = 'floor.bench.svc';
  const logPath = path.join(o.logDir, `transport-floor-${o.material.keyType}-${Date.now()}.log`);
  const proc = await startProcess({
    name: 'transport floor',
    command: o.node,
    logPath,
    args: [o.script, '--port', String(port), '--cacerts', o.material.dir, '--spiffe-id', o.spiffeId, '--server-name', serverName],
  });
  await waitReady(proc, 30_000, async () => fs.readFileSync(logPath, 'utf8').includes('"ready":true'));
  return { name: 'transport floor', process: proc, addr: `127.0.0.1:${port}`, serverName, rootCaFile: o.material.rootCert, stop: () => proc.stop(5_000) };
}
