/**
 * Runs deploy/ on a control plane without a kubelet: `citadel ca` out of cluster with its manifest's
 * ServiceAccount token, and the mTLS example's three workloads as local processes (agent + real Envoy + app per
 * pod), each built from its Deployment as stored in the apiserver. Used by scripts/demo.ts and
 * test/e2e/demo.test.ts; it never starts or stops the control plane itself.
 */
import type { V1PodSpec } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startPod, type SimulatedPod } from '../test/harness/kubelet.js';
import { startProcess, type ManagedProcess } from '../test/harness/process.js';
import type { TestCluster } from '../test/harness/test-cluster.js';
import {
  APP_FILE, DEPLOY_DIR, EXAMPLE_LABEL, REPO_ROOT, bootstrapPath, containerEnv, containerOf, localAddress,
  localBootstrap, loopbackSubnet, type ContainerJson, type DeploymentJson,
} from './mtls-example.js';

export const CITADEL_MAIN = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const CA_NAMESPACE = 'citadel-system';
const CA_SERVICE_ACCOUNT = 'citadel';

export interface DemoDeps {
  readonly cluster: TestCluster;
  /** Logs and generated files go here (must exist; the caller removes it). */
  readonly workDir: string;
  /** Progress lines. */
  readonly log: (line: string) => void;
  /** Extra flags for `citadel ca` (tests narrow the namespaces the CA writes into on a shared control plane). */
  readonly caFlags?: readonly string[];
  /** Loopback addresses for this run (default: a random 127.X.Y.0/24). */
  readonly address?: (host: number) => string;
  /** How long to wait for each component to become ready (default 90 s: two busy cores). */
  readonly readyTimeoutMs?: number;
  /** Aborting it (Ctrl-C while starting) stops what was started and makes startDemo throw. */
  readonly signal?: AbortSignal;
}

export interface WorkloadInfo {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly pod: string;
  readonly address: string;
  /** http://<address>:15000 */
  readonly envoyAdmin: string;
  /** http://<address>:8080 */
  readonly app: string;
}

export interface CertificateInfo {
  readonly spiffeId: string;
  readonly serial: string;
  readonly expires: string;
}

export interface CallResult {
  readonly from: string;
  readonly to: string;
  readonly method: string;
  readonly path: string;
  readonly expected: 'allowed' | 'refused';
  readonly outcome: 'allowed' | 'refused';
  /** HTTP status Envoy (or the peer app) answered with. */
  readonly status?: number;
  /** The caller's SPIFFE ID as the peer's Envoy verified it (allowed calls). */
  readonly peerSawCaller?: string;
  /** Why it was refused: the server Envoy's RBAC or handshake counters and the client Envoy's answer. */
  readonly reason?: string;
}

export interface DemoReport {
  readonly caAddress: string;
  readonly trustDomain: string;
  /** The roots Envoy trusts (ROOTCA from the agent), as its /certs lists them. */
  readonly trustBundle: ReadonlyArray<{ readonly serial: string; readonly expires: string }>;
  readonly workloads: ReadonlyArray<WorkloadInfo & { readonly certificate: CertificateInfo }>;
  readonly calls: readonly CallResult[];
  /** True when every call went as the policy says. */
  readonly ok: boolean;
}

export interface RunningDemo {
  readonly caAddress: string;
  readonly workloads: readonly WorkloadInfo[];
  /** Every process the demo started (CA, agents, Envoys, apps). */
  readonly processes: readonly ManagedProcess[];
  /** Makes the four calls (PATHS) and reads each Envoy's certificate; can be run again. */
  report(): Promise<DemoReport>;
  /** Stops every process and deletes the Pods, in reverse order of start. Idempotent. */
  stop(): Promise<void>;
}

/**
 * The calls the example's policy allows and refuses: the AuthorizationPolicies in deploy/examples/mtls/authz.yaml
 * and the SAN lists in deploy/examples/mtls/envoy/*.yaml.
 */
export const PATHS = [
  { from: 'photo-frontend', to: 'photo-backend', method: 'GET', path: '/apis/photos', expected: 'allowed' },
  { from: 'photo-frontend', to: 'photo-backend', method: 'POST', path: '/apis/photos', expected: 'refused' },
  { from: 'photo-backend', to: 'datastore', method: 'GET', path: '/', expected: 'allowed' },
  { from: 'photo-frontend', to: 'datastore', method: 'GET', path: '/', expected: 'refused' },
] as const;

/** Runs `kubectl`; throws with its output on a non-zero exit. */
async function kubectl(cluster: TestCluster, args: string[], input?: string): Promise<string> {
  const res = await cluster.kubectl(args, { input, timeoutMs: 60_000 });
  if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${res.code}):\n${res.stderr}${res.stdout}`);
  return res.stdout;
}

/**
 * `kubectl apply -k deploy/`: CRDs and Namespaces first (the AuthorizationPolicies need their CRD served, and a
 * failure is then about the objects, not their order), then all. Throws if the apiserver refuses anything.
 */
export async function applyDeploy(cluster: TestCluster, dir = DEPLOY_DIR): Promise<void> {
  const docs = (await kubectl(cluster, ['kustomize', dir])).split(/^---$/m);
  await kubectl(cluster, ['apply', '-f', '-'], docs.filter((d) => /^kind: (Namespace|CustomResourceDefinition)$/m.test(d)).join('\n---\n'));
  await kubectl(cluster, ['wait', '--for=condition=Established', '--timeout=60s', 'crd', '-l', 'app.kubernetes.io/part-of=citadel']);
  await kubectl(cluster, ['apply', '-k', dir]);
}

async function getJson<T>(cluster: TestCluster, args: string[]): Promise<T> {
  return JSON.parse(await kubectl(cluster, ['get', ...args, '-o', 'json'])) as T;
}

/** Polls `probe` until it returns true; throws naming `what` (and the log tail of `proc`) on exit or timeout. */
async function waitFor(what: string, timeoutMs: number, probe: () => Promise<boolean>, proc?: ManagedProcess, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal?.aborted) throw new Error(`${what}: interrupted`);
    if (proc && !proc.running()) throw new Error(`${what}: ${proc.name} exited (${await proc.exited}); last log lines (${proc.logPath}):\n${proc.tail()}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms${proc ? `; last log lines (${proc.logPath}):\n${proc.tail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function httpGet(url: string, timeoutMs = 10_000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

/** A clean environment for a child: PATH and HOME from ours, then exactly the variables given. */
function childEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...vars };
}

/** Starts the CA and the three workloads; throws (after stopping what it started) if any part fails to start. */
export async function startDemo(deps: DemoDeps): Promise<RunningDemo> {
  const { cluster, workDir, log } = deps;
  const address = deps.address ?? loopbackSubnet();
  const readyTimeoutMs = deps.readyTimeoutMs ?? 90_000;
  const logs = path.join(workDir, 'logs');
  fs.mkdirSync(logs, { recursive: true });
  if (!fs.existsSync(CITADEL_MAIN)) throw new Error(`${CITADEL_MAIN} is missing: run \`npm run build\` first`);

  const processes: ManagedProcess[] = [];
  const pods: SimulatedPod[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    // Apps and Envoys first, then agents, then the CA: the reverse of the order they depend on each other.
    for (const p of [...processes].reverse()) await p.stop(5_000);
    await Promise.all(pods.map((p) => p.delete().catch(() => {})));
  })());
  const start = async (name: string, command: string, args: string[], opts: { cwd?: string; env: NodeJS.ProcessEnv }) => {
    if (deps.signal?.aborted) throw new Error(`interrupted before starting ${name}`);
    const proc = await startProcess({ name, command, args, logPath: path.join(logs, `${name}.log`), cwd: opts.cwd, env: opts.env });
    processes.push(proc);
    return proc;
  };

  try {
    log('applying deploy/ (kubectl apply -k deploy/: the CA in citadel-system, the example in photo and datastore)');
    await applyDeploy(cluster);

    // The CA, from its Deployment: same args and env, with the token of the manifest's ServiceAccount.
    const caDeployment = await getJson<DeploymentJson>(cluster, ['deployment', 'citadel', '-n', CA_NAMESPACE]);
    const caContainer = containerOf(caDeployment, 'ca');
    const caServiceAccount = caDeployment.spec.template.spec.serviceAccountName ?? 'default';
    if (caServiceAccount !== CA_SERVICE_ACCOUNT) throw new Error(`the CA Deployment runs as ${caServiceAccount}, expected ${CA_SERVICE_ACCOUNT}`);
    const caAddress = `${address(10)}:15012`;
    const caMonitoring = `${address(10)}:15014`;
    const kubeconfig = await cluster.serviceAccountKubeconfig(CA_NAMESPACE, caServiceAccount);
    const caArgs = [
      'ca', ...(caContainer.args ?? []),
      '--kubeconfig', kubeconfig,
      '--grpc-address', caAddress,
      '--monitoring-address', caMonitoring,
      // No plugged-in CA locally: a directory that does not exist means "self-signed", as an absent Secret does.
      '--cacerts-dir', path.join(workDir, 'cacerts'),
      ...(deps.caFlags ?? []),
    ];
    const caEnv = containerEnv(caContainer, { name: 'citadel-local', namespace: CA_NAMESPACE, serviceAccount: caServiceAccount });
    log(`starting citadel ca on ${caAddress} as ServiceAccount ${CA_NAMESPACE}/${caServiceAccount} (RBAC from deploy/base/rbac.yaml)`);
    const ca = await start('citadel-ca', process.execPath, [CITADEL_MAIN, ...caArgs], { env: childEnv(caEnv) });
    await waitFor('citadel ca /readyz', readyTimeoutMs, async () => (await httpGet(`http://${caMonitoring}/readyz`, 2000)).status === 200, ca, deps.signal);
    log('citadel ca is ready');

    // The workloads, from their Deployments.
    const list = await getJson<{ items: DeploymentJson[] }>(cluster, ['deployments', '-A', '-l', EXAMPLE_LABEL]);
    const deployments = list.items.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    if (deployments.length === 0) throw new Error(`no Deployments labelled ${EXAMPLE_LABEL}`);
    const addressOf = new Map(deployments.map((d, i) => [d.metadata.name, address(11 + i)]));
    const peers = Object.fromEntries(deployments.map((d) => [`${d.metadata.name}.${d.metadata.namespace}.svc.cluster.local`, addressOf.get(d.metadata.name)!]));

    const workloads: WorkloadInfo[] = [];
    const ready: Array<Promise<void>> = [];
    for (const d of deployments) {
      const { name, namespace } = d.metadata;
      const ip = addressOf.get(name)!;
      const template = d.spec.template;
      const serviceAccount = template.spec.serviceAccountName ?? 'default';
      log(`${name}: creating its Pod from the Deployment's template and the pod's token and root certificate files`);
      const agentContainer = containerOf(d, 'citadel-agent');
      const pod = await startPod(cluster, {
        namespace, serviceAccount, name: `${name}-${randomBytes(3).toString('hex')}`,
        labels: template.metadata?.labels ?? {}, podSpec: template.spec as unknown as V1PodSpec,
        configMapMounts: configMapMounts(template.spec, agentContainer),
      });
      pods.push(pod);
      // As the kubelet does, the pod starts only once the ConfigMaps it mounts exist.
      await pod.waitForRootCert({ timeoutMs: readyTimeoutMs });
      await pod.waitForMounts({ timeoutMs: readyTimeoutMs });
      const podRef = { name: pod.name, namespace, serviceAccount };

      const agentEnv = containerEnv(agentContainer, podRef);
      // In the cluster the agent dials the Service name and checks that name in the CA's certificate; here it
      // dials the CA's loopback address and still checks the in-cluster name.
      const caHost = (agentEnv.CA_ADDR ?? 'citadel.citadel-system.svc:15012').replace(/:\d+$/, '');
      const agent = await start(`${name}-agent`, process.execPath,
        [CITADEL_MAIN, 'agent', ...(agentContainer.args ?? []), '--status-address', `${ip}:15020`],
        { cwd: pod.root, env: childEnv({ ...agentEnv, CA_ADDR: caAddress, ISTIOD_SAN: caHost }) });

      const envoyContainer = containerOf(d, 'envoy');
      const bootstrapFile = path.join(workDir, `${name}-envoy.yaml`);
      fs.writeFileSync(bootstrapFile, localBootstrap(fs.readFileSync(bootstrapPath(name), 'utf8'), { self: ip, peers, sdsSocket: pod.sdsSocketPath }));
      const envoyArgs = (envoyContainer.args ?? []).map((a) => (a === '/etc/envoy/envoy.yaml' ? bootstrapFile : a));
      if (!envoyArgs.includes(bootstrapFile)) throw new Error(`${name}: the envoy container does not read /etc/envoy/envoy.yaml`);
      const envoy = await start(`${name}-envoy`, cluster.info.tools.envoy, [...envoyArgs, '--concurrency', '1'], { env: childEnv({}) });

      const appContainer = containerOf(d, 'app');
      const appEnv = Object.fromEntries(Object.entries(containerEnv(appContainer, podRef)).map(([k, v]) => [k, localAddress(v, ip)]));
      if (appContainer.command?.join(' ') !== 'node /app/app.mjs') throw new Error(`${name}: unexpected app command ${appContainer.command?.join(' ')}`);
      const app = await start(`${name}-app`, process.execPath, [APP_FILE], { env: childEnv(appEnv) });

      log(`${name}: agent, Envoy and app started on ${ip} (waiting for the certificate)`);
      const info: WorkloadInfo = { name, namespace, serviceAccount, pod: pod.name, address: ip, envoyAdmin: `http://${ip}:15000`, app: `http://${ip}:8080` };
      workloads.push(info);
      ready.push((async () => {
        await waitFor(`${name} agent /readyz`, readyTimeoutMs, async () => (await httpGet(`http://${ip}:15020/readyz`, 2000)).status === 200, agent, deps.signal);
        await waitFor(`${name} Envoy /ready`, readyTimeoutMs, async () => (await httpGet(`${info.envoyAdmin}/ready`, 2000)).text.trim() === 'LIVE', envoy, deps.signal);
        await waitFor(`${name} app`, readyTimeoutMs, async () => (await httpGet(`${info.app}/healthz`, 2000)).status === 200, app, deps.signal);
        log(`${name}: ready (Envoy holds its certificate)`);
      })());
    }
    await Promise.all(ready);

    return {
      caAddress,
      workloads,
      processes,
      report: () => buildReport(caAddress, workloads),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The ConfigMap volumes the agent container mounts (other than the root certificate, which the simulator always
 * provides), at the container's mount paths under the pod root, so the agent's default paths resolve as in the pod.
 */
function configMapMounts(spec: DeploymentJson['spec']['template']['spec'], container: ContainerJson): Array<{ configMap: string; dir: string }> {
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name as string, v]));
  return ((container.volumeMounts ?? []) as Array<{ name: string; mountPath: string }>).flatMap((m) => {
    const configMap = (volumes.get(m.name)?.configMap as { name?: string } | undefined)?.name;
    return configMap && configMap !== 'istio-ca-root-cert' ? [{ configMap, dir: m.mountPath.replace(/^\/+/, '') }] : [];
  });
}

interface EnvoyCertDetail { serial_number?: string; expiration_time?: string; subject_alt_names?: Array<{ uri?: string }> }
type EnvoyCerts = { certificates?: Array<{ cert_chain?: EnvoyCertDetail[]; ca_cert?: EnvoyCertDetail[] }> };

/** The CA certificates an Envoy trusts (its ROOTCA), from admin /certs. */
export async function envoyTrustBundle(adminUrl: string): Promise<Array<{ serial: string; expires: string }>> {
  const body = JSON.parse((await httpGet(`${adminUrl}/certs`)).text) as EnvoyCerts;
  const seen = new Map<string, string>();
  for (const entry of body.certificates ?? []) {
    for (const ca of entry.ca_cert ?? []) if (ca.serial_number && ca.expiration_time) seen.set(ca.serial_number, ca.expiration_time);
  }
  return [...seen].map(([serial, expires]) => ({ serial, expires }));
}

/** The workload certificate Envoy serves, from its admin /certs. Throws if Envoy holds none with a SPIFFE ID. */
export async function envoyCertificate(adminUrl: string): Promise<CertificateInfo> {
  const body = JSON.parse((await httpGet(`${adminUrl}/certs`)).text) as EnvoyCerts;
  for (const entry of body.certificates ?? []) {
    const leaf = entry.cert_chain?.[0];
    const uri = leaf?.subject_alt_names?.find((s) => s.uri?.startsWith('spiffe://'))?.uri;
    if (leaf && uri && leaf.serial_number && leaf.expiration_time) return { spiffeId: uri, serial: leaf.serial_number, expires: leaf.expiration_time };
  }
  throw new Error(`${adminUrl}/certs lists no certificate with a SPIFFE ID`);
}

/** Sum of the counters whose names match `regex` in an Envoy's stats. */
async function counter(adminUrl: string, regex: string): Promise<number> {
  const text = (await httpGet(`${adminUrl}/stats?filter=${encodeURIComponent(regex)}`)).text;
  return text.split('\n').reduce((sum, line) => sum + (Number(/:\s*(\d+)$/.exec(line)?.[1] ?? 0)), 0);
}

/** Sum of the listener counters `ssl.<name>` in an Envoy's stats (e.g. fail_verify_san). */
const listenerSslCounter = (adminUrl: string, name: string) => counter(adminUrl, `^listener\\..*ssl\\.${name}$`);
/** Requests the inbound RBAC filters denied (`allow_` or `deny_` rules). */
const rbacDenied = (adminUrl: string, action: 'allow' | 'deny') => counter(adminUrl, `^http\\.inbound\\.rbac\\.${action}_\\.denied$`);

async function buildReport(caAddress: string, workloads: readonly WorkloadInfo[]): Promise<DemoReport> {
  const byName = new Map(workloads.map((w) => [w.name, w]));
  const withCerts = await Promise.all(workloads.map(async (w) => ({ ...w, certificate: await envoyCertificate(w.envoyAdmin) })));
  const calls: CallResult[] = [];
  for (const p of PATHS) {
    const from = byName.get(p.from)!;
    const to = byName.get(p.to)!;
    const counters = async () => ({
      san: await listenerSslCounter(to.envoyAdmin, 'fail_verify_san'),
      error: await listenerSslCounter(to.envoyAdmin, 'fail_verify_error'),
      allow: await rbacDenied(to.envoyAdmin, 'allow'),
      deny: await rbacDenied(to.envoyAdmin, 'deny'),
    });
    const before = await counters();
    const res = await httpGet(`${from.app}/call/${p.to}?method=${p.method}&path=${encodeURIComponent(p.path)}`);
    let body: { ok?: boolean; status?: number; response?: unknown; error?: string } = {};
    try {
      body = JSON.parse(res.text);
    } catch {
      // left empty: reported as refused with the raw text below
    }
    if (body.ok === true) {
      const peer = body.response as { workload?: string; caller?: string } | undefined;
      calls.push({ ...p, outcome: 'allowed', status: body.status, peerSawCaller: peer?.caller ?? undefined });
      continue;
    }
    const after = await counters();
    const rbac = after.allow > before.allow ? `http.inbound.rbac.allow_.denied +${after.allow - before.allow}`
      : after.deny > before.deny ? `http.inbound.rbac.deny_.denied +${after.deny - before.deny}` : undefined;
    const serverSide = rbac
      ? `${p.to}'s Envoy refused the request: no AuthorizationPolicy allows ${p.method} ${p.path} from ${p.from} (${rbac})`
      : after.san > before.san
      ? `${p.to}'s Envoy rejected the client certificate: ${p.from}'s SPIFFE ID is not in its allow-list (ssl.fail_verify_san +${after.san - before.san})`
      : after.error > before.error
        ? `${p.to}'s Envoy could not verify the client certificate chain (ssl.fail_verify_error +${after.error - before.error})`
        : `${p.to}'s Envoy recorded no handshake failure`;
    const clientSide = typeof body.response === 'string' ? body.response : body.error ?? res.text.trim();
    calls.push({ ...p, outcome: 'refused', status: body.status, reason: `${serverSide};\n${p.from}'s Envoy answered ${body.status ?? '-'}: ${clientSide}` });
  }
  const first = withCerts[0]?.certificate.spiffeId ?? 'spiffe://cluster.local/';
  return {
    caAddress,
    trustDomain: /^spiffe:\/\/([^/]+)/.exec(first)?.[1] ?? 'cluster.local',
    trustBundle: workloads[0] ? await envoyTrustBundle(workloads[0].envoyAdmin) : [],
    workloads: withCerts,
    calls,
    ok: calls.every((c) => c.outcome === c.expected),
  };
}

/** The report as the demo prints it. */
export function formatReport(report: DemoReport): string {
  const pad = (s: string, n: number) => s.padEnd(n);
  const width = Math.max(...report.workloads.map((w) => w.name.length));
  const lines = [
    '',
    `citadel demo: ${report.workloads.length} workloads, citadel ca at ${report.caAddress}, trust domain ${report.trustDomain}`,
    '',
    `Trust bundle (ROOTCA, from the istio-ca-root-cert ConfigMap via the agent): ${report.trustBundle.length} root(s)`,
    ...report.trustBundle.map((r) => `  serial ${r.serial}, expires ${r.expires}`),
    '',
    'Workload certificates (as each Envoy holds them, from its admin /certs):',
    ...report.workloads.map((w) => `  ${pad(w.name, width)}  ${w.certificate.spiffeId}`
      + `\n  ${pad('', width)}  serial ${w.certificate.serial}, expires ${w.certificate.expires}`),
    '',
    'Calls (app -> its Envoy -> mTLS -> peer Envoy (RBAC) -> peer app):',
  ];
  const requestWidth = Math.max(...report.calls.map((c) => `${c.method} ${c.path}`.length));
  const indent = pad('', 2 * width + 4 + 2 + requestWidth);
  for (const c of report.calls) {
    const verdict = c.outcome === c.expected ? (c.outcome === 'allowed' ? 'ALLOWED' : 'REFUSED (as the policy says)') : `UNEXPECTED: ${c.outcome}, policy says ${c.expected}`;
    lines.push(`  ${pad(`${c.from} -> ${c.to}`, 2 * width + 4)}  ${pad(`${c.method} ${c.path}`, requestWidth)}  ${verdict}`);
    if (c.outcome === 'allowed') lines.push(`  ${indent}  HTTP ${c.status}; ${c.to} saw the caller as ${c.peerSawCaller ?? '(no client certificate)'}`);
    else for (const part of (c.reason ?? '').split('\n')) lines.push(`  ${indent}  ${part}`);
  }
  lines.push('', report.ok ? `All ${report.calls.length} calls behaved as the policy says.` : 'Some calls did NOT behave as the policy says.', '');
  return lines.join('\n');
}
