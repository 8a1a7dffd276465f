/**
 * Istio's own code for the compatibility tests, built by scripts/provision-compat.sh (cached; a cold build takes
 * minutes, a warm one only hashes the sources):
 *   - istioclient (test/compat/go/istioclient): Istio's agent-side CA client and key/CSR generation;
 *   - istioca (bench/go/istioca): Istio's CA gRPC server with the KubeJWT and client-certificate authenticators.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { startProcess, type ManagedProcess } from '../harness/process.js';
import { runProvisionScript } from '../support/build.js';

export interface CompatTools {
  readonly istioClient: string;
  readonly istioCa: string;
}

let provisioned: Promise<CompatTools> | undefined;

/** Runs scripts/provision-compat.sh once per test process and returns the binaries it names. Throws with its log. */
export function provisionCompatTools(): Promise<CompatTools> {
  provisioned ??= runProvisionScript('provision-compat.sh', ['ISTIOCLIENT', 'ISTIOCA']).then((v) => ({ istioClient: v.ISTIOCLIENT, istioCa: v.ISTIOCA }));
  return provisioned;
}

/** One CSRSign outcome as istioclient prints it; `code` is the gRPC status name in Istio's error text. */
export interface IstioClientResult {
  certChain: string[] | null;
  error?: string;
  code?: string;
  renewal?: IstioClientResult;
}

export interface IstioClientOptions {
  caAddress: string;
  caServerName: string;
  rootCertPath: string;
  /** The JWT file; omitted: no token (Istio's client then sends no authorization header). */
  tokenPath?: string;
  trustDomain?: string;
  /** The identity the CSR asks for (pilot-agent's POD_NAMESPACE and SERVICE_ACCOUNT). */
  namespace: string;
  serviceAccount: string;
  /** rsa (pilot-agent's default, 2048 bits), ecdsa-p256 or ecdsa-p384. */
  key?: 'rsa' | 'ecdsa-p256' | 'ecdsa-p384';
  ttl?: string;
  /** Renew once with the issued certificate as TLS client certificate and no token. */
  renew?: boolean;
}

/** Asks a CA for a certificate with Istio's own agent code; throws only when istioclient itself fails. */
export function runIstioClient(binary: string, o: IstioClientOptions): Promise<IstioClientResult> {
  const args = [
    '-ca-addr', o.caAddress,
    '-ca-san', o.caServerName,
    '-root-cert', o.rootCertPath,
    '-token-file', o.tokenPath ?? '',
    '-trust-domain', o.trustDomain ?? 'cluster.local',
    '-namespace', o.namespace,
    '-service-account', o.serviceAccount,
    '-key', o.key ?? 'rsa',
    '-ttl', o.ttl ?? '1h',
    ...(o.renew ? ['-renew'] : []),
  ];
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: 60_000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        if (err) throw err;
        resolve(JSON.parse(line) as IstioClientResult);
      } catch (e) {
        reject(new Error(`istioclient ${args.join(' ')} failed: ${(e as Error).message}\nstdout: ${stdout}\nstderr: ${stderr.slice(-4000)}`));
      }
    });
  });
}

export interface IstioCaFiles {
  caCert: string;
  caKey: string;
  certChain: string;
  rootCert: string;
}

export interface RunningIstioCa {
  readonly proc: ManagedProcess;
  /** 127.0.0.1:<port> */
  readonly address: string;
  /** The DNS SAN of its serving certificate (istiod's Service name). */
  readonly serverName: string;
  stop(): Promise<void>;
}

/**
 * Starts Istio's CA server (plugged-in mode with `files`) reviewing tokens against the apiserver of `kubeconfig`
 * and resolves with its address once it printed its ready line.
 */
export async function startIstioCa(binary: string, o: { kubeconfig: string; files: IstioCaFiles; trustDomain?: string; logPath: string }): Promise<RunningIstioCa> {
  const serverName = 'istiod.istio-system.svc';
  const proc = await startProcess({
    name: 'istioca',
    command: binary,
    args: [
      '-addr', '127.0.0.1:0',
      '-kubeconfig', o.kubeconfig,
      '-trust-domain', o.trustDomain ?? 'cluster.local',
      '-ca-cert', o.files.caCert,
      '-ca-key', o.files.caKey,
      '-cert-chain', o.files.certChain,
      '-root-cert', o.files.rootCert,
      '-server-name', serverName,
    ],
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
    logPath: o.logPath,
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /"addr":"([^"]+)"/.exec(fs.existsSync(o.logPath) ? fs.readFileSync(o.logPath, 'utf8') : '');
    if (m) return { proc, address: m[1]!, serverName, stop: () => proc.stop(5000) };
    if (!proc.running() || Date.now() > deadline) {
      await proc.stop();
      throw new Error(`istioca did not print its ready line (exit ${proc.running() ? 'none' : await proc.exited}):\n${proc.tail(40)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
