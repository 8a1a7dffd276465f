/**
 * The real control plane for tests, the demo and `npm run dev-cluster`: etcd and kube-apiserver on free
 * loopback ports in a fresh temp dir, with RBAC on, a ServiceAccount token issuer (TokenRequest, TokenReview,
 * tokens bound to Pods), a throwaway CA made with openssl and an admin (system:masters) kubeconfig.
 *
 * Deliberately absent: kube-controller-manager, scheduler, kubelet. So namespaces are never finalised
 * (deletion stays Terminating), nothing is garbage-collected, no `default` ServiceAccount appears by itself
 * and Pods stay Pending. test-cluster.ts and kubelet.ts stand in for the bits tests need.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createCa, createRsaKeyPair, issueLeaf, type CaFiles } from './openssl.js';
import { freePorts } from './ports.js';
import { startProcess, type ManagedProcess } from './process.js';
import { trackDir, untrackDir } from './reaper.js';
import { writeKubeconfig } from './kubeconfig.js';
import { loadTools, type Tools } from './tools.js';

/** Everything a test process needs to reach the control plane. Plain data: it crosses vitest's provide()/inject(). */
export interface ClusterInfo {
  /** The temp dir holding certificates, kubeconfigs, logs and etcd's data; removed on stop. */
  readonly dir: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** The admin kubeconfig (user `citadel-admin`, group system:masters). */
  readonly kubeconfigPath: string;
  /** The CA that signed the apiserver's serving certificate and that the apiserver trusts for client certs. */
  readonly caPem: string;
  readonly caCertPath: string;
  readonly caKeyPath: string;
  readonly serviceAccountIssuer: string;
  /** The audiences the apiserver accepts; the first is the default for tokens requested without audiences. */
  readonly apiAudiences: readonly string[];
  readonly etcdEndpoint: string;
  readonly apiserverLogPath: string;
  readonly etcdLogPath: string;
  readonly tools: Tools;
}

export interface ControlPlane {
  readonly info: ClusterInfo;
  readonly etcd: ManagedProcess;
  /** The running apiserver (a new process after restartApiserver). */
  readonly apiserver: ManagedProcess;
  /**
   * Ends the apiserver (SIGKILL, or SIGTERM for a graceful shutdown), keeps it down `downMs`, starts it again with
   * the same flags and waits for /readyz. Resolves with how long the old process took to exit and how long the
   * apiserver was unavailable in all (ms).
   */
  restartApiserver(opts: { signal: 'SIGKILL' | 'SIGTERM'; downMs?: number }): Promise<{ exitedMs: number; unavailableMs: number }>;
  /** Stops the apiserver, then etcd (SIGTERM, SIGKILL after a grace period), and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions {
  tools?: Tools;
  /** Progress lines (what is starting, how long it took). */
  log?: (line: string) => void;
  /** How long to wait for the apiserver's /readyz (default 90 s: two busy cores). */
  readyTimeoutMs?: number;
  /** Parent of the temp dir (default os.tmpdir()). */
  parentDir?: string;
  /** --api-audiences (default DEFAULT_API_AUDIENCES). */
  apiAudiences?: readonly string[];
  /** More kube-apiserver flags, e.g. `--watch-cache=false` for watches served by etcd itself. */
  apiserverArgs?: readonly string[];
}

export const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';
/**
 * The apiserver's own audiences, as on real clusters: just the issuer. `istio-ca` is deliberately not among
 * them: a TokenReview that names `istio-ca` authenticates istio-ca tokens regardless, and leaving it out means an
 * istio-ca token cannot be used to call the apiserver (nor passes a review that names no audience).
 */
/** Gates for PodCertificateRequest and ClusterTrustBundle (both beta and off by default in 1.36). */
export const POD_CERTIFICATE_FEATURE_GATES: readonly string[] = ['PodCertificateRequest=true', 'ClusterTrustBundle=true', 'ClusterTrustBundleProjection=true'];
/** The beta resources, which a 1.36 apiserver serves only when asked. */
export const POD_CERTIFICATE_RUNTIME_CONFIG: readonly string[] = [
  'certificates.k8s.io/v1beta1/podcertificaterequests=true',
  'certificates.k8s.io/v1beta1/clustertrustbundles=true',
];

export const DEFAULT_API_AUDIENCES: readonly string[] = [SERVICE_ACCOUNT_ISSUER];

/**
 * Starts etcd and kube-apiserver and waits until /readyz passes. Retries with new ports if one was taken
 * in the meantime. Throws (with the component's log tail) if a component exits or does not become ready.
 */
export async function startControlPlane(opts: StartControlPlaneOptions = {}): Promise<ControlPlane> {
  const tools = opts.tools ?? loadTools();
  const log = opts.log ?? (() => {});
  let lastError: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(tools, log, opts);
    } catch (err) {
      lastError = err;
      if (!(err instanceof PortTakenError)) throw err;
      log(`a port was taken before we could bind it; retrying (${attempt}/3)`);
    }
  }
  throw lastError;
}

class PortTakenError extends Error {}

async function startOnce(tools: Tools, log: (line: string) => void, opts: StartControlPlaneOptions): Promise<ControlPlane> {
  const started = Date.now();
  const apiAudiences = opts.apiAudiences ?? DEFAULT_API_AUDIENCES;
  const dir = fs.mkdtempSync(path.join(opts.parentDir ?? os.tmpdir(), 'citadel-cp-'));
  trackDir(dir);
  let etcd: ManagedProcess | undefined;
  let apiserver: ManagedProcess | undefined;
  let removed = false;
  const cleanup = async () => {
    await apiserver?.stop(10_000);
    await etcd?.stop(5_000);
    if (!removed) {
      removed = true;
      fs.rmSync(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  };
  try {
    const pki = path.join(dir, 'pki');
    fs.mkdirSync(pki, { mode: 0o700 });
    const [etcdClientPort, etcdPeerPort, apiPort] = (await freePorts(3)) as [number, number, number];
    const server = `https://127.0.0.1:${apiPort}`;

    const ca = await createCa(pki, 'ca', 'citadel-test-cluster-ca');
    const [serving, admin, saKeys] = await Promise.all([
      issueLeaf({ ca, dir: pki, name: 'apiserver', commonName: 'kube-apiserver', usage: 'server',
        subjectAltNames: ['IP:127.0.0.1', 'DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default',
          'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local', 'IP:10.96.0.1'] }),
      issueLeaf({ ca, dir: pki, name: 'admin', commonName: 'citadel-admin', organizations: ['system:masters'], usage: 'client' }),
      createRsaKeyPair(pki, 'sa'),
    ]);
    const caPem = fs.readFileSync(ca.certPath, 'utf8');
    const kubeconfigPath = writeKubeconfig(path.join(dir, 'admin.kubeconfig'), {
      server, caPem, userName: 'citadel-admin',
      user: { clientCertificatePem: fs.readFileSync(admin.certPath, 'utf8'), clientKeyPem: fs.readFileSync(admin.keyPath, 'utf8') },
    });

    const etcdEndpoint = `http://127.0.0.1:${etcdClientPort}`;
    const etcdPeer = `http://127.0.0.1:${etcdPeerPort}`;
    const etcdLogPath = path.join(dir, 'etcd.log');
    etcd = await startProcess({
      name: 'etcd', command: tools.etcd, logPath: etcdLogPath, cwd: dir,
      args: ['--name', 'citadel', '--data-dir', path.join(dir, 'etcd'),
        '--listen-client-urls', etcdEndpoint, '--advertise-client-urls', etcdEndpoint,
        '--listen-peer-urls', etcdPeer, '--initial-advertise-peer-urls', etcdPeer,
        '--initial-cluster', `citadel=${etcdPeer}`, '--log-level', 'warn',
        // Test data is thrown away: skip fsync, it only costs time on a shared disk.
        '--unsafe-no-fsync'],
    });
    await waitUntil('etcd', etcd, opts.readyTimeoutMs ?? 30_000, async () => {
      const body = await httpGet(`${etcdEndpoint}/health`);
      return body !== undefined && body.includes('"health":"true"');
    });
    log(`etcd ${tools.etcdVersion} ready on ${etcdEndpoint}`);

    const apiserverLogPath = path.join(dir, 'kube-apiserver.log');
    const launchApiserver = async () => {
      const proc = await startProcess({
        name: 'kube-apiserver', command: tools.kubeApiserver, logPath: apiserverLogPath, cwd: dir,
        args: [
          `--etcd-servers=${etcdEndpoint}`,
          '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', `--secure-port=${apiPort}`,
          `--cert-dir=${path.join(dir, 'apiserver')}`,
          `--tls-cert-file=${serving.certPath}`, `--tls-private-key-file=${serving.keyPath}`,
          `--client-ca-file=${ca.certPath}`,
          '--authorization-mode=Node,RBAC',
          // Kubelet-native certificates (docs/pod-certificates.md): the beta APIs are off by default in 1.36, and
          // NodeRestriction is what ties a PodCertificateRequest to the requesting node's own pods.
          '--enable-admission-plugins=NodeRestriction',
          `--feature-gates=${POD_CERTIFICATE_FEATURE_GATES.join(',')}`,
          `--runtime-config=${POD_CERTIFICATE_RUNTIME_CONFIG.join(',')}`,
          `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
          `--service-account-key-file=${saKeys.publicKeyPath}`,
          `--service-account-signing-key-file=${saKeys.keyPath}`,
          `--api-audiences=${apiAudiences.join(',')}`,
          '--service-cluster-ip-range=10.96.0.0/16',
          '--profiling=false',
          '--v=1',
          ...(opts.apiserverArgs ?? []),
        ],
      });
      apiserver = proc;
      await waitUntil('kube-apiserver', proc, opts.readyTimeoutMs ?? 90_000, async () => {
        const body = await httpsGet(`${server}/readyz`, ca, path.join(pki, 'admin'));
        return body === 'ok';
      });
      return proc;
    };
    await launchApiserver();
    log(`kube-apiserver ${tools.kubernetesVersion} ready on ${server} (control plane up in ${((Date.now() - started) / 1000).toFixed(1)}s)`);
    await applyCrds(tools, kubeconfigPath);

    const info: ClusterInfo = {
      dir, server, kubeconfigPath, caPem, caCertPath: ca.certPath, caKeyPath: ca.keyPath,
      serviceAccountIssuer: SERVICE_ACCOUNT_ISSUER, apiAudiences: [...apiAudiences],
      etcdEndpoint, apiserverLogPath, etcdLogPath, tools,
    };
    const etcdProcess = etcd;
    let stopping: Promise<void> | undefined;
    return {
      info,
      etcd: etcdProcess,
      get apiserver() {
        return apiserver!;
      },
      async restartApiserver({ signal, downMs = 0 }) {
        const down = Date.now();
        if (signal === 'SIGKILL') await apiserver!.kill();
        else await apiserver!.stop(30_000);
        const exitedMs = Date.now() - down;
        await new Promise((r) => setTimeout(r, downMs));
        await launchApiserver();
        return { exitedMs, unavailableMs: Date.now() - down };
      },
      stop: () => (stopping ??= cleanup()),
    };
  } catch (err) {
    const taken = [etcd, apiserver].some((p) => p && /address already in use/i.test(p.tail(200)));
    await cleanup();
    if (taken) throw new PortTakenError(String(err));
    throw err;
  }
}

/** deploy/crds, found from test/harness/ or from its compiled copy under dist/. */
const CRDS_DIR = ((here) => [path.join(here, '../../deploy/crds'), path.join(here, '../../../deploy/crds')].find((p) => fs.existsSync(p)))(
  path.dirname(fileURLToPath(import.meta.url)),
);

/** Applies deploy/crds (Istio's AuthorizationPolicy) as an operator would, and waits until it is served. */
async function applyCrds(tools: Tools, kubeconfigPath: string): Promise<void> {
  if (!CRDS_DIR) throw new Error('deploy/crds not found above test/harness');
  const run = promisify(execFile);
  const kubectl = (...args: string[]) => run(tools.kubectl, ['--kubeconfig', kubeconfigPath, ...args], { timeout: 60_000 });
  await kubectl('apply', '-k', CRDS_DIR);
  await kubectl('wait', '--for=condition=Established', '--timeout=60s', 'crd', '-l', 'app.kubernetes.io/part-of=citadel');
}

/** Polls `probe` every 250 ms until it returns true; throws with the log tail if `proc` exits or time runs out. */
async function waitUntil(name: string, proc: ManagedProcess, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.running()) {
      throw new Error(`${name} exited (${await proc.exited}) before it was ready; last log lines (${proc.logPath}):\n${proc.tail()}`);
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(`${name} not ready after ${timeoutMs} ms; last log lines (${proc.logPath}):\n${proc.tail()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function httpGet(url: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}

function httpsGet(url: string, ca: CaFiles, clientStem: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = https.get(url, {
      ca: fs.readFileSync(ca.certPath),
      cert: fs.readFileSync(`${clientStem}.crt`),
      key: fs.readFileSync(`${clientStem}.key`),
      timeout: 5000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : undefined));
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}
