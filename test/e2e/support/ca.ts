/**
 * The real `citadel ca` for the agent e2e tests: plugged-in key material made by `citadel pki create-ca` (so the
 * test knows the root and can restart the CA with the same keys), the admin kubeconfig for TokenReviews, loopback
 * ports, and by default no controllers (the tests write each pod's root-cert.pem themselves, and other test
 * files' CAs must not fight over the cluster-wide istio-ca-root-cert ConfigMaps; a test that turns them on
 * restricts them with --namespace-selector).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { freePorts } from '../../harness/index.js';
import { startProcess, type ManagedProcess } from '../../harness/process.js';
import type { TestCluster } from '../../harness/test-cluster.js';
import { CITADEL_MAIN, eventually, httpGet } from './agent-env.js';

/**
 * A namespace for a test's CA and a workload namespace only that CA writes to: `selectorArgs` (--namespace-selector
 * on a label fresh to this call) keep the CA out of other tests' namespaces and theirs out of this one.
 */
export async function scopedNamespaces(cluster: TestCluster, name: string, labels: Record<string, string> = {}): Promise<{ caNs: string; ns: string; selectorArgs: string[] }> {
  const label = `citadel-e2e-${name}-${randomBytes(4).toString('hex')}`;
  const caNs = await cluster.createNamespace(`${name}-ca`);
  const ns = await cluster.createNamespace(name, { ...labels, [label]: 'yes' });
  return { caNs, ns, selectorArgs: ['--namespace-selector', label] };
}

export interface RunningCa {
  /** 127.0.0.1:<port> of the CSR API. */
  readonly grpcAddress: string;
  /** The name in the CA's serving certificate (citadel.<namespace>.svc): the agents' --ca-server-name. */
  readonly serverName: string;
  readonly monitoringUrl: string;
  /** PEM of the root (cacerts root-cert.pem); empty for a self-signed CA (its root is in istio-ca-secret). */
  readonly rootPem: string;
  readonly cacertsDir: string;
  proc: ManagedProcess;
  running(): boolean;
  stop(): Promise<void>;
  /** Starts it again on the same ports with the same keys. */
  start(): Promise<void>;
}

/** Runs `citadel ARGS` to completion (e.g. the pki tools). */
export function runCitadel(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CITADEL_MAIN, ...args], (err, _stdout, stderr) => (err ? reject(new Error(`citadel ${args.join(' ')}: ${stderr}`)) : resolve()));
  });
}

/** `citadel pki create-ca --out dir`: a new root and an intermediate in Istio's cacerts layout. */
export const createCaMaterial = (dir: string): Promise<void> => runCitadel(['pki', 'create-ca', '--out', dir]);

/**
 * Makes CA material in `workDir/cacerts` (unless `selfSigned`: then the CA makes istio-ca-secret) and starts the CA
 * in `namespace`; resolves once /readyz is 200.
 */
export async function startCa(opts: {
  kubeconfigPath: string;
  namespace: string;
  workDir: string;
  controllers?: boolean;
  selfSigned?: boolean;
  extraArgs?: readonly string[];
  /** Use this replica name (--pod-name, log file `<name>.log`); default `ca`. */
  name?: string;
  /** Key material another replica already uses (default: new material in `workDir/cacerts`). */
  cacertsDir?: string;
}): Promise<RunningCa> {
  const cacertsDir = opts.cacertsDir ?? path.join(opts.workDir, 'cacerts');
  if (!opts.selfSigned && !opts.cacertsDir) await createCaMaterial(cacertsDir);
  const name = opts.name ?? 'ca';
  const [grpcPort, monPort] = await freePorts(2);
  const grpcAddress = `127.0.0.1:${grpcPort}`;
  const monitoringUrl = `http://127.0.0.1:${monPort}`;
  const launch = async () => {
    const proc = await startProcess({
      name: `citadel ${name}`,
      command: process.execPath,
      args: [
        CITADEL_MAIN, 'ca',
        '--kubeconfig', opts.kubeconfigPath,
        '--namespace', opts.namespace,
        '--grpc-address', grpcAddress,
        '--monitoring-address', `127.0.0.1:${monPort}`,
        '--cacerts-dir', cacertsDir,
        '--controllers', String(opts.controllers ?? false),
        '--shutdown-grace', '1s',
        ...(opts.name ? ['--pod-name', opts.name] : []),
        ...(opts.extraArgs ?? []),
      ],
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      logPath: path.join(opts.workDir, `${name}.log`),
    });
    await eventually('citadel ca /readyz', async () => {
      if (!proc.running()) throw new Error(`citadel ca exited (${await proc.exited})\n${proc.tail()}`);
      return (await httpGet(`${monitoringUrl}/readyz`)).status === 200;
    }, { timeoutMs: 60_000, context: () => proc.tail(30) });
    return proc;
  };
  const ca: RunningCa = {
    grpcAddress,
    serverName: `citadel.${opts.namespace}.svc`,
    monitoringUrl,
    rootPem: opts.selfSigned ? '' : fs.readFileSync(path.join(cacertsDir, 'root-cert.pem'), 'utf8'),
    cacertsDir,
    proc: await launch(),
    running: () => ca.proc.running(),
    stop: () => ca.proc.stop(5000),
    async start() {
      ca.proc = await launch();
    },
  };
  return ca;
}
