/**
 * deploy/ end to end on the real apiserver: `citadel ca` out of cluster with the token of the manifest's
 * ServiceAccount (so exactly the RBAC of deploy/base/rbac.yaml), and the mTLS example's workloads as local
 * processes built from their Deployments (Pods from the templates, Pod-bound istio-ca tokens, agents, real
 * Envoys with the example's own bootstrap files, the example's app). Then the same thing as a user runs it:
 * `node dist/scripts/demo.js --once` with its own control plane.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, type TestCluster } from '../harness/index.js';
import { ensureBuilt } from '../support/build.js';
import { CITADEL_MAIN, startDemo, type DemoReport, type RunningDemo } from '../../scripts/demo-run.js';
import { REPO_ROOT } from '../../scripts/mtls-example.js';

const DEMO_MAIN = path.join(REPO_ROOT, 'dist', 'scripts', 'demo.js');

/** The demo script and the harness it starts are compiled too. */
const DEMO_BUILD = { sources: ['src', 'scripts', 'test/harness'], outputs: [CITADEL_MAIN, DEMO_MAIN] };

function openssl(args: string[], input?: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('openssl', args, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` }));
    // openssl may exit without reading stdin; a late write must not become an unhandled EPIPE.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

describe('deploy/examples/mtls on the real apiserver, with citadel ca and real Envoys', () => {
  let cluster: TestCluster;
  let workDir: string;
  let demo: RunningDemo;
  let report: DemoReport;

  beforeAll(async () => {
    await ensureBuilt(DEMO_BUILD);
    cluster = getCluster();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-e2e-demo-'));
    // The control plane is shared with other test files, whose CAs manage their own namespaces: keep this CA's
    // root ConfigMaps to the example's namespaces and leave ServiceAccount Secrets (label-selected) alone.
    demo = await startDemo({
      cluster, workDir, log: (l) => console.log(`[demo] ${l}`),
      caFlags: ['--namespace-selector', 'app.kubernetes.io/part-of=citadel-example-mtls', '--sa-secrets', 'off'],
    });
    report = await demo.report();
  }, 300_000);

  afterAll(async () => {
    await demo?.stop();
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('gives each workload a certificate for exactly its ServiceAccount, which openssl verifies against the namespace root', async () => {
    expect(report.workloads.map((w) => [w.name, w.certificate.spiffeId])).toEqual([
      ['datastore', 'spiffe://cluster.local/ns/datastore/sa/datastore'],
      ['photo-backend', 'spiffe://cluster.local/ns/photo/sa/photo-backend'],
      ['photo-frontend', 'spiffe://cluster.local/ns/photo/sa/photo-frontend'],
    ]);
    for (const w of report.workloads) {
      // The chain Envoy holds (from its config dump; keys are redacted there) against the ConfigMap's root.
      const dump = await (await fetch(`${w.envoyAdmin}/config_dump?resource=dynamic_active_secrets`)).json() as {
        configs: Array<{ name: string; secret?: { tls_certificate?: { certificate_chain?: { inline_bytes?: string } } } }>;
      };
      const chainB64 = dump.configs.find((c) => c.name === 'default')?.secret?.tls_certificate?.certificate_chain?.inline_bytes;
      expect(chainB64, `${w.name}: Envoy holds a "default" secret`).toBeDefined();
      const chain = Buffer.from(chainB64!, 'base64').toString('utf8');
      const cm = await cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: w.namespace });
      const dir = fs.mkdtempSync(path.join(workDir, 'verify-'));
      const blocks = chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
      fs.writeFileSync(path.join(dir, 'leaf.pem'), `${blocks[0]}\n`);
      fs.writeFileSync(path.join(dir, 'untrusted.pem'), `${blocks.slice(1).join('\n')}\n`);
      fs.writeFileSync(path.join(dir, 'root.pem'), cm.data!['root-cert.pem']!);
      const verify = await openssl(['verify', '-CAfile', path.join(dir, 'root.pem'),
        ...(blocks.length > 1 ? ['-untrusted', path.join(dir, 'untrusted.pem')] : []), path.join(dir, 'leaf.pem')]);
      expect(verify.out.trim(), `${w.name}: openssl verify`).toMatch(/: OK$/);
      const text = await openssl(['x509', '-noout', '-ext', 'subjectAltName', '-serial', '-in', path.join(dir, 'leaf.pem')]);
      expect(text.out).toContain(`URI:${w.certificate.spiffeId}`);
      expect(text.out.toLowerCase().replace(/^serial=0*/m, 'serial=')).toContain(`serial=${w.certificate.serial.toLowerCase().replace(/^0+/, '')}`);
    }
  });

  it('lets photo-frontend GET photo-backend and photo-backend call datastore over mTLS, each seeing the verified caller', () => {
    const call = (from: string, to: string) => report.calls.find((c) => c.from === from && c.to === to && c.method === 'GET')!;
    expect(call('photo-frontend', 'photo-backend')).toMatchObject({
      outcome: 'allowed', status: 200, peerSawCaller: 'spiffe://cluster.local/ns/photo/sa/photo-frontend',
    });
    expect(call('photo-backend', 'datastore')).toMatchObject({
      outcome: 'allowed', status: 200, peerSawCaller: 'spiffe://cluster.local/ns/photo/sa/photo-backend',
    });
  });

  it("refuses photo-frontend's POST with a 403 from photo-backend's RBAC filter, as the AuthorizationPolicy says", () => {
    const post = report.calls.find((c) => c.from === 'photo-frontend' && c.to === 'photo-backend' && c.method === 'POST')!;
    expect(post).toMatchObject({ outcome: 'refused', status: 403, path: '/apis/photos' });
    expect(post.reason).toMatch(/http\.inbound\.rbac\.allow_\.denied \+1/);
    expect(post.reason).toMatch(/RBAC: access denied/);
  });

  it('publishes the compiled policies in each namespace and marks them compiled', async () => {
    for (const [namespace, policy] of [['photo', 'photo-backend-api'], ['datastore', 'datastore']] as const) {
      const cm = await cluster.kube().core.readNamespacedConfigMap({ name: 'citadel-authz', namespace });
      expect(cm.data?.['authz.json']).toContain(`ns[${namespace}]-policy[${policy}]-rule[0]`);
      const res = await cluster.kubectl(['get', 'authorizationpolicy', policy, '-n', namespace, '-o', 'jsonpath={.status.conditions[0].status}']);
      expect(res.stdout).toBe('True');
    }
  });

  it("refuses photo-frontend -> datastore at the TLS handshake, by datastore's SAN matcher", () => {
    const refused = report.calls.find((c) => c.from === 'photo-frontend' && c.to === 'datastore')!;
    expect(refused.outcome).toBe('refused');
    expect(refused.status).toBe(503);
    expect(refused.reason).toMatch(/ssl\.fail_verify_san \+\d/);
    expect(report.ok).toBe(true);
  });

  // The CA process was given only the ServiceAccount's kubeconfig, so whatever it wrote, RBAC allowed that account.
  it('runs the CA as the manifest ServiceAccount: it holds the leader Lease and wrote the root ConfigMaps', async () => {
    const lease = await cluster.kubectl(['get', 'lease', 'citadel-leader', '-n', 'citadel-system', '-o', 'jsonpath={.spec.holderIdentity}']);
    // POD_NAME comes from the Deployment's fieldRef (the local runner names the replica citadel-local; the CA may add a suffix).
    expect(lease.stdout).toMatch(/^citadel-local(-|$)/);
    for (const namespace of ['photo', 'datastore']) {
      const cm = await cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace });
      expect(cm.metadata?.labels?.['app.kubernetes.io/managed-by']).toBe('citadel');
      expect(cm.data?.['root-cert.pem']).toMatch(/BEGIN CERTIFICATE/);
    }
  });

  it('keeps refusing and allowing on a second round (the report can be run again)', async () => {
    const again = await demo.report();
    expect(again.calls.map((c) => c.outcome)).toEqual(['allowed', 'refused', 'allowed', 'refused']);
    expect(again.workloads.map((w) => w.certificate.serial)).toEqual(report.workloads.map((w) => w.certificate.serial));
  });
});

interface DemoRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Command lines of every process the demo started (its direct children). */
  readonly children: readonly string[];
  /** Those still alive (same pid and start time) 5 s after the demo exited. */
  readonly survivors: readonly string[];
  /** What the demo left in its TMPDIR. */
  readonly leftovers: readonly string[];
}

/**
 * Runs `node dist/scripts/demo.js ...args` with its own TMPDIR; `interruptWhen` sends SIGINT once stdout matches.
 * Tracks the demo's children by pid and start time (pids get reused on a busy machine, e.g. after the demo's short
 * kubectl and openssl runs), so it can tell afterwards whether any outlived it.
 */
async function runDemoCli(args: string[], interruptWhen?: RegExp): Promise<DemoRun> {
  await ensureBuilt(DEMO_BUILD);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-demo-cli-'));
  const child = spawn(process.execPath, [DEMO_MAIN, ...args], {
    cwd: REPO_ROOT, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let interrupted = false;
  child.stdout.on('data', (c) => {
    stdout += c;
    if (interruptWhen && !interrupted && interruptWhen.test(stdout)) {
      interrupted = true;
      child.kill('SIGINT');
    }
  });
  child.stderr.on('data', (c) => (stderr += c));
  const identity = (pid: string): { parent: number; start: string; cmd: string } | undefined => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      return { parent: Number(fields[1]), start: fields[19]!, cmd };
    } catch {
      return undefined; // gone already
    }
  };
  const children = new Map<string, string>(); // "pid start" -> command line
  const watch = setInterval(() => {
    for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      const id = identity(pid);
      const key = `${pid} ${id?.start}`;
      // A zombie (exited, not yet reaped) has an empty command line: keep what was seen while it ran.
      if (id && id.parent === child.pid && (id.cmd || !children.has(key))) children.set(key, id.cmd);
    }
  }, 200);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, sig) => resolve([c, sig])));
  clearInterval(watch);
  // The harness reaper's watchdog (`node -e`) exits a moment after the demo, once its pipe closes: allow 5 s.
  const alive = () => [...children].filter(([key]) => {
    const [pid, start] = key.split(' ');
    return identity(pid!)?.start === start;
  }).map(([key, cmd]) => `${key.split(' ')[0]}: ${cmd.slice(0, 120)}`);
  let survivors = alive();
  for (let i = 0; i < 50 && survivors.length; i++) {
    await new Promise((r) => setTimeout(r, 100));
    survivors = alive();
  }
  const leftovers = fs.readdirSync(tmp);
  fs.rmSync(tmp, { recursive: true, force: true });
  return { code, signal, stdout, stderr, children: [...children.values()], survivors, leftovers };
}

/** The demo started the whole cast: etcd, kube-apiserver, the CA, and an agent, an Envoy and an app per workload. */
function expectFullCast(run: DemoRun): void {
  const all = run.children.join('\n');
  const count = (re: RegExp) => run.children.filter((c) => re.test(c)).length;
  expect(count(/\/(etcd|kube-apiserver) /), all).toBe(2);
  expect(count(/main\.js ca /), all).toBe(1);
  expect(count(/main\.js agent /), all).toBe(3);
  expect(count(/envoy\s+-c /), all).toBe(3);
  expect(count(/app\.mjs/), all).toBe(3);
}

describe('npm run demo', () => {
  it('--once: prints the report, exits 0, and leaves no process and no temp dir behind', { timeout: 420_000 }, async () => {
    const run = await runDemoCli(['--once']);
    expect(run.code, `demo failed:\n${run.stderr}\n${run.stdout}`).toBe(0);
    expect(run.stderr).toMatch(/\[demo\] starting the local control plane/);
    expect(run.stderr).toMatch(/\[demo\] citadel ca is ready/);
    for (const id of ['ns/photo/sa/photo-frontend', 'ns/photo/sa/photo-backend', 'ns/datastore/sa/datastore']) {
      expect(run.stdout).toContain(`spiffe://cluster.local/${id}`);
    }
    expect(run.stdout).toMatch(/serial [0-9a-f]+, expires \d{4}-/);
    expect(run.stdout).toMatch(/photo-frontend -> photo-backend\s+GET \/apis\/photos\s+ALLOWED/);
    expect(run.stdout).toMatch(/photo-frontend -> photo-backend\s+POST \/apis\/photos\s+REFUSED \(as the policy says\)/);
    expect(run.stdout).toMatch(/403: RBAC: access denied/);
    expect(run.stdout).toMatch(/photo-backend -> datastore\s+GET \/\s+ALLOWED/);
    expect(run.stdout).toMatch(/photo-frontend -> datastore\s+GET \/\s+REFUSED \(as the policy says\)/);
    expect(run.stdout).toMatch(/fail_verify_san/);
    expectFullCast(run);
    expect(run.survivors, 'processes the demo left running').toEqual([]);
    expect(run.leftovers, 'temp dirs the demo left behind').toEqual([]);
  });

  it('without --once: keeps running after the report until Ctrl-C, then stops everything', { timeout: 420_000 }, async () => {
    const run = await runDemoCli([], /Running until Ctrl-C/);
    expect(run.code, `demo failed:\n${run.stderr}\n${run.stdout}`).toBe(0);
    expect(run.stdout).toMatch(/All 4 calls behaved as the policy says/);
    expect(run.stdout).toMatch(/curl http:\/\/127\.\d+\.\d+\.\d+:8080\/call\/datastore/);
    expect(run.stderr).toMatch(/SIGINT: shutting down/);
    expect(run.stderr).toMatch(/stopped; nothing left running/);
    expectFullCast(run);
    expect(run.survivors, 'processes the demo left running').toEqual([]);
    expect(run.leftovers, 'temp dirs the demo left behind').toEqual([]);
  });
});
