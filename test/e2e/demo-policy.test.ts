/**
 * The example's policy with real Envoys, independent of the CA and the agent's CA client: certificates from
 * an openssl CA, served to each Envoy by citadel's own SDS server (src/cli/agent-socket.ts over a SecretStore),
 * with the example's AuthorizationPolicies compiled (src/authz) and served over ECDS on the same socket, the
 * example's Envoy bootstraps (local rewrite) and the example's app with the env of its Deployment.
 * test/e2e/demo.test.ts runs the same with citadel ca and citadel agent; this one pins down what the
 * manifests alone decide.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster } from '../harness/index.js';
import { openssl } from '../harness/openssl.js';
import { startProcess, type ManagedProcess } from '../harness/process.js';
import { startAgentSocket, type AgentSocket } from '../../src/cli/agent-socket.js';
import { SecretStore } from '../../src/agent/secret-store.js';
import { watchAuthzFiles, type AuthzFiles } from '../../src/agent/authz/config-source.js';
import { createEcdsService } from '../../src/agent/authz/ecds-service.js';
import { compileNamespace } from '../../src/authz/compile.js';
import type { AuthorizationPolicyObject } from '../../src/authz/types.js';
import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import {
  APP_FILE, EXAMPLE_DIR, bootstrapPath, containerEnv, containerOf, localAddress, localBootstrap, loopbackSubnet,
  type DeploymentJson,
} from '../../scripts/mtls-example.js';

const NAMES = ['datastore', 'photo-backend', 'photo-frontend'] as const;
type Name = (typeof NAMES)[number];

let dir: string;
const processes: ManagedProcess[] = [];
const servers: AgentSocket[] = [];
const authzFiles: AuthzFiles[] = [];
const address = loopbackSubnet();
const ip = Object.fromEntries(NAMES.map((n, i) => [n, address(11 + i)])) as Record<Name, string>;

async function call(from: Name, to: Name, request = 'path=/apis/photos'): Promise<{ status: number; body: { ok: boolean; status?: number; response?: { caller?: string } | string } }> {
  const res = await fetch(`http://${ip[from]}:8080/call/${to}?${request}`, { signal: AbortSignal.timeout(15_000) });
  return { status: res.status, body: await res.json() as never };
}

async function stat(name: Name, filter: string): Promise<number> {
  const text = await (await fetch(`http://${ip[name]}:15000/stats?filter=${encodeURIComponent(filter)}`)).text();
  return text.split('\n').reduce((sum, l) => sum + Number(/:\s*(\d+)$/.exec(l)?.[1] ?? 0), 0);
}

async function until(what: string, probe: () => Promise<boolean>, proc: ManagedProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (!proc.running() || Date.now() > deadline) throw new Error(`${what} not ready:\n${proc.tail()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-policy-'));
  const cluster = getCluster();
  // The example's objects as kubectl would send them (no server round trip needed for the templates).
  const res = await cluster.kubectl(['apply', '--dry-run=client', '-o', 'json', '-k', EXAMPLE_DIR]);
  expect(res.code, res.stderr).toBe(0);
  const items = JSON.parse(res.stdout).items as Array<DeploymentJson & { kind: string }>;
  const deployments = items.filter((o) => o.kind === 'Deployment');
  const policies = items.filter((o) => o.kind === 'AuthorizationPolicy') as unknown as AuthorizationPolicyObject[];

  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'root.key', '-out', 'root.pem',
    '-days', '1', '-subj', '/O=policy-test/CN=root', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  const peers = Object.fromEntries(deployments.map((d) => [`${d.metadata.name}.${d.metadata.namespace}.svc.cluster.local`, ip[d.metadata.name as Name]]));

  for (const d of deployments) {
    const name = d.metadata.name as Name;
    const spiffeId = `spiffe://cluster.local/ns/${d.metadata.namespace}/sa/${d.spec.template.spec.serviceAccountName}`;
    fs.writeFileSync(path.join(dir, `${name}.ext`), [
      `subjectAltName=critical,URI:${spiffeId}`, 'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth,clientAuth', 'basicConstraints=critical,CA:false', ''].join('\n'));
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/O=policy-test'], dir);
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'root.pem', '-CAkey', 'root.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);

    const store = new SecretStore({ clock: systemClock, log: silentLogger });
    store.setTlsCertificate('default', fs.readFileSync(path.join(dir, `${name}.pem`), 'utf8'), fs.readFileSync(path.join(dir, `${name}.key`), 'utf8'));
    store.setValidationContext('ROOTCA', fs.readFileSync(path.join(dir, 'root.pem'), 'utf8'));
    // What the CA would publish for the namespace and the kubelet would mount, with the pod's labels.
    const authzDir = path.join(dir, `${name}-authz`);
    fs.mkdirSync(authzDir);
    const compiled = compileNamespace({ namespace: d.metadata.namespace, trustDomain: 'cluster.local', policies }).document;
    fs.writeFileSync(path.join(authzDir, 'authz.json'), JSON.stringify(compiled));
    fs.writeFileSync(path.join(authzDir, 'labels'), Object.entries(d.spec.template.metadata?.labels ?? {}).map(([k, v]) => `${k}=${JSON.stringify(v)}\n`).join(''));
    const authz = watchAuthzFiles({ policyFile: path.join(authzDir, 'authz.json'), labelsFile: path.join(authzDir, 'labels'), clock: systemClock, log: silentLogger });
    await authz.start();
    authzFiles.push(authz);
    const sds = await startAgentSocket({
      socketPath: path.join(dir, `${name}.sock`), store, log: silentLogger,
      ecds: { service: createEcdsService({ source: authz, log: silentLogger }), log: silentLogger },
    });
    servers.push(sds);

    const bootstrap = path.join(dir, `${name}-envoy.yaml`);
    fs.writeFileSync(bootstrap, localBootstrap(fs.readFileSync(bootstrapPath(name), 'utf8'), { self: ip[name], peers, sdsSocket: sds.socketPath }));
    const envoy = await startProcess({ name: `${name}-envoy`, command: cluster.info.tools.envoy, logPath: path.join(dir, `${name}-envoy.log`),
      args: ['-c', bootstrap, '--disable-hot-restart', '--concurrency', '1', '-l', 'info'] });
    processes.push(envoy);
    const appEnv = containerEnv(containerOf(d, 'app'), { name: `${name}-0`, namespace: d.metadata.namespace, serviceAccount: name });
    const app = await startProcess({ name: `${name}-app`, command: process.execPath, args: [APP_FILE], logPath: path.join(dir, `${name}-app.log`),
      env: { PATH: process.env.PATH, ...Object.fromEntries(Object.entries(appEnv).map(([k, v]) => [k, localAddress(v, ip[name])])) } });
    processes.push(app);
    await until(`${name} Envoy`, async () => (await (await fetch(`http://${ip[name]}:15000/ready`)).text()).trim() === 'LIVE', envoy);
    await until(`${name} app`, async () => (await fetch(`http://${ip[name]}:8080/healthz`)).ok, app);
  }
}, 180_000);

afterAll(async () => {
  for (const p of processes.reverse()) await p.stop();
  for (const s of servers) await s.stop();
  for (const a of authzFiles) a.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the example policy, with real Envoys and certificates from SDS', () => {
  it('photo-frontend -> photo-backend: mTLS, and the backend sees the frontend verified SPIFFE ID', async () => {
    const res = await call('photo-frontend', 'photo-backend');
    expect(res.status).toBe(200);
    expect(res.body.response).toEqual({ workload: 'photo-backend', caller: 'spiffe://cluster.local/ns/photo/sa/photo-frontend', method: 'GET', path: '/apis/photos' });
  });

  it("photo-frontend POST to photo-backend: 403 from photo-backend's RBAC filter; the app never sees it", async () => {
    const denied = await stat('photo-backend', '^http\\.inbound\\.rbac\\.allow_\\.denied$');
    const res = await call('photo-frontend', 'photo-backend', 'method=POST&path=/apis/photos');
    expect(res.body).toMatchObject({ ok: false, status: 403, response: 'RBAC: access denied' });
    expect(await stat('photo-backend', '^http\\.inbound\\.rbac\\.allow_\\.denied$')).toBe(denied + 1);
    // A GET outside /apis/* is refused the same way.
    expect((await call('photo-frontend', 'photo-backend', 'path=/admin')).body).toMatchObject({ status: 403 });
  });

  it('photo-backend -> datastore: mTLS, and datastore sees the backend', async () => {
    const res = await call('photo-backend', 'datastore', 'path=/');
    expect(res.status).toBe(200);
    expect(res.body.response).toEqual({ workload: 'datastore', caller: 'spiffe://cluster.local/ns/photo/sa/photo-backend', method: 'GET', path: '/' });
  });

  it("photo-frontend -> datastore: refused in the handshake by datastore's SAN matcher; the app never sees it", async () => {
    const sanBefore = await stat('datastore', '^listener\\.inbound\\.ssl\\.fail_verify_san$');
    const requestsBefore = await stat('datastore', '^http\\.inbound\\.downstream_rq_total$');
    const res = await call('photo-frontend', 'datastore');
    expect(res.status).toBe(502);
    expect(res.body).toMatchObject({ ok: false, status: 503 });
    expect(await stat('datastore', '^listener\\.inbound\\.ssl\\.fail_verify_san$')).toBe(sanBefore + 1);
    expect(await stat('datastore', '^http\\.inbound\\.downstream_rq_total$')).toBe(requestsBefore);
  });

  it('a client without any certificate gets nowhere either', async () => {
    const noCertBefore = await stat('datastore', '^listener\\.inbound\\.ssl\\.fail_verify_no_cert$');
    const tls = await import('node:tls');
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: ip.datastore, port: 15006, rejectUnauthorized: false }, () => {
        socket.write('GET / HTTP/1.1\r\nhost: datastore\r\n\r\n');
      });
      socket.on('data', (d) => resolve(`data: ${String(d).split('\r\n')[0]}`));
      socket.on('error', (e) => resolve(`error: ${e.message}`));
      socket.on('close', () => resolve('closed'));
    });
    expect(outcome).not.toMatch(/^data:/);
    expect(await stat('datastore', '^listener\\.inbound\\.ssl\\.fail_verify_no_cert$')).toBe(noCertBefore + 1);
  });
});
