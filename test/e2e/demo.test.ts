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
import { CITADEL_MAIN, startDemo, type DemoReport, type RunningDemo } from '../../scripts/demo-run.js';
import { REPO_ROOT } from '../../scripts/mtls-example.js';

const DEMO_MAIN = path.join(REPO_ROOT, 'dist', 'scripts', 'demo.js');

/** Compiles the repo if a source file is newer than its compiled file (the tests spawn dist/, as users do). */
async function ensureBuilt(): Promise<void> {
  const stale = (dir: string): boolean => fs.readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true }).some((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return stale(rel);
    if (!e.name.endsWith('.ts')) return false;
    const out = path.join(REPO_ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
    return !fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(path.join(REPO_ROOT, rel)).mtimeMs;
  });
  if (!['src', 'scripts', 'test/harness'].some(stale)) return;
  // Type errors elsewhere in the tree do not stop tsc from emitting; the files we need are checked below.
  await new Promise<void>((resolve) => {
    execFile(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'],
      { cwd: REPO_ROOT, timeout: 240_000 }, () => resolve());
  });
  for (const f of [CITADEL_MAIN, DEMO_MAIN]) if (!fs.existsSync(f)) throw new Error(`${f} missing after tsc`);
}

function openssl(args: string[], input?: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('openssl', args, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` }));
    child.stdin?.end(input ?? '');
  });
}

describe('deploy/examples/mtls on the real apiserver, with citadel ca and real Envoys', () => {
  let cluster: TestCluster;
  let workDir: string;
  let demo: RunningDemo;
  let report: DemoReport;

  beforeAll(async () => {
    await ensureBuilt();
    cluster = getCluster();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-e2e-demo-'));
    // The control plane is shared with other test files: keep this CA's root ConfigMaps to the example's namespaces.
    demo = await startDemo({
      cluster, workDir, log: (l) => console.log(`[demo] ${l}`),
      caFlags: ['--namespace-selector', 'app.kubernetes.io/part-of=citadel-example-mtls'],
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

  it('lets photo-frontend call photo-backend and photo-backend call datastore over mTLS, each seeing the verified caller', () => {
    const call = (from: string, to: string) => report.calls.find((c) => c.from === from && c.to === to)!;
    expect(call('photo-frontend', 'photo-backend')).toMatchObject({
      outcome: 'allowed', status: 200, peerSawCaller: 'spiffe://cluster.local/ns/photo/sa/photo-frontend',
    });
    expect(call('photo-backend', 'datastore')).toMatchObject({
      outcome: 'allowed', status: 200, peerSawCaller: 'spiffe://cluster.local/ns/photo/sa/photo-backend',
    });
  });

  it("refuses photo-frontend -> datastore at the TLS handshake, by datastore's SAN matcher", () => {
    const refused = report.calls.find((c) => c.from === 'photo-frontend' && c.to === 'datastore')!;
    expect(refused.outcome).toBe('refused');
    expect(refused.status).toBe(503);
    expect(refused.reason).toMatch(/ssl\.fail_verify_san \+\d/);
    expect(report.ok).toBe(true);
  });

  it('keeps refusing and allowing on a second round (the report can be run again)', async () => {
    const again = await demo.report();
    expect(again.calls.map((c) => c.outcome)).toEqual(['allowed', 'allowed', 'refused']);
    expect(again.workloads.map((w) => w.certificate.serial)).toEqual(report.workloads.map((w) => w.certificate.serial));
  });
});

describe('npm run demo -- --once', () => {
  it('prints the report, exits 0, and leaves no process and no temp dir behind', { timeout: 420_000 }, async () => {
    await ensureBuilt();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-demo-cli-'));
    const child = spawn(process.execPath, [DEMO_MAIN, '--once'], {
      cwd: REPO_ROOT, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    // Everything the demo starts is its child; remember each one (pid + start time, as pids get reused on a busy
    // machine, e.g. after the demo's short kubectl and openssl runs) to check afterwards that none outlived it.
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
        // A zombie (exited, not yet reaped) has an empty command line: keep what was seen while it ran.
        if (id && id.parent === child.pid && (id.cmd || !children.has(`${pid} ${id.start}`))) children.set(`${pid} ${id.start}`, id.cmd);
      }
    }, 200);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearInterval(watch);

    expect(code, `demo failed:\n${stderr}\n${stdout}`).toBe(0);
    expect(stderr).toMatch(/\[demo\] starting the local control plane/);
    expect(stderr).toMatch(/\[demo\] citadel ca is ready/);
    for (const id of ['ns/photo/sa/photo-frontend', 'ns/photo/sa/photo-backend', 'ns/datastore/sa/datastore']) {
      expect(stdout).toContain(`spiffe://cluster.local/${id}`);
    }
    expect(stdout).toMatch(/serial [0-9a-f]+, expires \d{4}-/);
    expect(stdout).toMatch(/photo-frontend -> photo-backend\s+ALLOWED/);
    expect(stdout).toMatch(/photo-backend -> datastore\s+ALLOWED/);
    expect(stdout).toMatch(/photo-frontend -> datastore\s+REFUSED \(as the policy says\)/);
    expect(stdout).toMatch(/fail_verify_san/);

    // etcd, kube-apiserver, the CA, 3 agents, 3 Envoys, 3 apps.
    const long = [...children.values()];
    expect(long.filter((c) => c.includes('main.js ca')), long.join('\n')).toHaveLength(1);
    expect(long.filter((c) => /\/(etcd|kube-apiserver) /.test(c)), long.join('\n')).toHaveLength(2);
    expect(long.filter((c) => c.includes('main.js agent')), long.join('\n')).toHaveLength(3);
    expect(long.filter((c) => c.includes('app.mjs')), long.join('\n')).toHaveLength(3);
    expect(long.filter((c) => /envoy\s+-c/.test(c)), long.join('\n')).toHaveLength(3);
    // The harness reaper's watchdog (`node -e`) exits a moment after the demo, once its pipe closes: allow 5 s.
    const survivors = () => [...children].filter(([key]) => {
      const [pid, start] = key.split(' ');
      return identity(pid!)?.start === start;
    }).map(([key, cmd]) => `${key.split(' ')[0]}: ${cmd.slice(0, 120)}`);
    let alive = survivors();
    for (let i = 0; i < 50 && alive.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      alive = survivors();
    }
    expect(alive, 'processes the demo left running').toEqual([]);
    expect(fs.readdirSync(tmp), 'temp dirs the demo left behind').toEqual([]);
    fs.rmSync(tmp, { recursive: true, force: true });
  });
});
