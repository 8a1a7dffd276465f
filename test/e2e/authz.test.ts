/**
 * Authorization end to end: AuthorizationPolicies on the real apiserver, compiled by the CA's controllers (as the
 * citadel ServiceAccount, with deploy/base/rbac.yaml) into the namespace's citadel-authz ConfigMap, mounted into a
 * simulated pod with its labels, read by `citadel agent` (file-mounted certificates, so no CA signing is involved)
 * and served over ECDS to a real Envoy, which allows or refuses mTLS HTTP requests from clients holding certificates
 * for different SPIFFE IDs.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { startControllers, type Controllers } from '../../src/controllers/index.js';
import { silentLogger } from '../../src/log.js';
import { generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, privateKeyToPem, type Signer } from '../../src/pki/index.js';
import { getCluster, startPod, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { AUTHZ_RELATIVE_DIR } from '../harness/kubelet.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { createTestAuthority } from '../support/test-authority.js';
import { ensureBuilt, eventually } from './support/agent-env.js';
import { startSidecar, type Sidecar } from './support/sidecar.js';

const RUN_LABEL = 'citadel-authz-e2e';
const TD = 'cluster.local';

interface Identity { cert: string; key: string }
interface Reply { status: number; body: string; localPort?: number }

let cluster: TestCluster;
let controllers: Controllers;
let ns: string;
let other: string;
let root: Signer & { pem: string };
let pod: SimulatedPod;
let sidecar: Sidecar;
let app: http.Server;
let logDir: string;
const ids: Record<'frontend' | 'intruder' | 'foreign', Identity> = {} as never;

async function leaf(spiffeId: string): Promise<Identity> {
  const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
  const cert = issueWorkloadCertificate({ signer: root, publicKey, spiffeId, ttlMs: 3_600_000, now: Date.now() });
  return { cert: cert.pem, key: privateKeyToPem(privateKey) };
}

/** One mTLS request to the pod's Envoy, as `who`; `agent` to reuse a keep-alive connection. */
function call(who: Identity, method: string, urlPath: string, agent?: https.Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: sidecar.inboundPort, method, path: urlPath, cert: who.cert, key: who.key, ca: root.pem,
      checkServerIdentity: () => undefined, agent: agent ?? false, timeout: 5000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, localPort: res.socket?.localPort }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function apply(name: string, spec: object, namespace = ns): Promise<void> {
  const doc = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec };
  const res = await cluster.kubectl(['apply', '-f', '-'], { input: JSON.stringify(doc) });
  if (res.code !== 0) throw new Error(`kubectl apply failed: ${res.stderr}`);
}

async function remove(name: string): Promise<void> {
  await cluster.kubectl(['delete', 'authorizationpolicy', name, '-n', ns, '--ignore-not-found']);
}

/** Waits until `probe` gives `status` (policies travel CA -> ConfigMap -> pod file -> agent -> Envoy). */
async function until(status: number, probe: () => Promise<Reply>, what: string): Promise<number> {
  const start = Date.now();
  await eventually(`${what} -> ${status}`, async () => (await probe()).status === status, { timeoutMs: 20_000, intervalMs: 100 });
  return Date.now() - start;
}

async function stat(name: string): Promise<number> {
  return (await sidecar.envoy.stats(`^${name.replace(/\./g, '\\.')}$`))[name] ?? 0;
}

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
  const caNamespace = await cluster.createNamespace('authz-ca');
  const { kube } = await citadelClients(cluster, caNamespace);
  controllers = startControllers({
    kube, ca: await createTestAuthority(), clock: systemClock, log: silentLogger, registry: new Registry(),
    namespace: caNamespace, trustDomain: TD, saSecrets: 'off', namespaceSelector: `${RUN_LABEL}=${caNamespace}`,
    leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500,
  });
  ns = await cluster.createNamespace('authz', { [RUN_LABEL]: caNamespace });
  other = await cluster.createNamespace('authz-other', { [RUN_LABEL]: caNamespace });

  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const rootCert = issueCaCertificate({ key: privateKey, organization: 'authz-e2e', commonName: 'authz-e2e root', trustDomain: TD, ttlMs: 86_400_000, now: Date.now() });
  root = { cert: parseCertificate(rootCert.pem), key: privateKey, pem: rootCert.pem };
  ids.frontend = await leaf(`spiffe://${TD}/ns/${ns}/sa/frontend`);
  ids.intruder = await leaf(`spiffe://${TD}/ns/${ns}/sa/intruder`);
  ids.foreign = await leaf(`spiffe://${TD}/ns/${other}/sa/frontend`);

  app = http.createServer((req, res) => res.end(`app saw ${req.method} ${req.url}`));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as { port: number }).port;

  pod = await startPod(cluster, {
    namespace: ns, serviceAccount: 'api', labels: { app: 'api' },
    configMapMounts: [{ configMap: 'citadel-authz', dir: AUTHZ_RELATIVE_DIR }],
  });
  const certs = path.join(pod.root, 'etc', 'certs');
  fs.mkdirSync(certs, { recursive: true });
  const own = await leaf(`spiffe://${TD}/ns/${ns}/sa/api`);
  fs.writeFileSync(path.join(certs, 'root-cert.pem'), root.pem);
  fs.writeFileSync(path.join(certs, 'key.pem'), own.key, { mode: 0o600 });
  fs.writeFileSync(path.join(certs, 'cert-chain.pem'), own.cert);
  await pod.waitForMounts();
  logDir = fs.mkdtempSync('/tmp/authz-logs-');
  sidecar = await startSidecar({
    name: 'authz-api', root: pod.root, logDir,
    inbound: { appPort, allowedClientIds: [], allowedClientPrefix: `spiffe://${TD}/`, authz: { workloadPort: 8080 } },
  });
}, 180_000);

afterAll(async () => {
  await sidecar?.stop();
  await pod?.delete();
  await controllers?.stop();
  app?.close();
  if (logDir) fs.rmSync(logDir, { recursive: true, force: true });
});

describe('AuthorizationPolicy -> CA -> ConfigMap -> agent -> ECDS -> Envoy RBAC', () => {
  it('with no policy, every mesh identity is allowed (Istio: no ALLOW policy means allow)', async () => {
    expect(await call(ids.intruder, 'POST', '/anything')).toMatchObject({ status: 200, body: 'app saw POST /anything' });
  });

  it('ALLOW by principal, method and path: one GET allowed, everything else 403 from RBAC', async () => {
    await apply('api-viewer', {
      selector: { matchLabels: { app: 'api' } },
      rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/frontend`] } }], to: [{ operation: { methods: ['GET'], paths: ['/api/*'] } }] }],
    });
    await until(403, () => call(ids.intruder, 'GET', '/api/photos'), 'intruder GET');
    expect(await call(ids.frontend, 'GET', '/api/photos')).toMatchObject({ status: 200, body: 'app saw GET /api/photos' });
    const denied = await stat('http.inbound.rbac.allow_.denied');
    const post = await call(ids.frontend, 'POST', '/api/photos');
    expect(post).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect(await stat('http.inbound.rbac.allow_.denied')).toBe(denied + 1);
    expect((await call(ids.frontend, 'GET', '/admin')).status).toBe(403);
    // Path normalisation: a dot segment does not smuggle a request past the prefix.
    expect((await call(ids.frontend, 'GET', '/api/../admin')).status).toBe(403);
    expect((await call(ids.foreign, 'GET', '/api/photos')).status).toBe(403);
    const { body } = await sidecar.envoy.admin('/config_dump?resource=ecds_filters');
    expect(body).toContain(`ns[${ns}]-policy[api-viewer]-rule[0]`);
  });

  it('ALLOW by namespace and DENY by path: DENY wins, and the not-forms work', async () => {
    await apply('api-viewer', { selector: { matchLabels: { app: 'api' } }, rules: [{ from: [{ source: { namespaces: [other] } }], to: [{ operation: { notMethods: ['DELETE'] } }] }] });
    await apply('no-secrets', { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/api/secret*'] } }] }] });
    await until(200, () => call(ids.foreign, 'POST', '/api/x'), 'foreign POST');
    await until(403, () => call(ids.foreign, 'GET', '/api/secret/1'), 'foreign GET secret');
    expect(await stat('http.inbound.rbac.deny_.denied')).toBeGreaterThan(0);
    expect((await call(ids.foreign, 'DELETE', '/api/x')).status).toBe(403);
    expect((await call(ids.frontend, 'GET', '/api/x')).status).toBe(403);
    await remove('no-secrets');
    await until(200, () => call(ids.foreign, 'GET', '/api/secret/1'), 'foreign GET secret after the DENY is gone');
  });

  it('ports name the workload port the listener fronts (8080 here)', async () => {
    await apply('api-viewer', { rules: [{ to: [{ operation: { ports: ['9090'] } }] }] });
    await until(403, () => call(ids.frontend, 'GET', '/p'), 'port 9090 only');
    await apply('api-viewer', { rules: [{ to: [{ operation: { ports: ['8080'] } }] }] });
    await until(200, () => call(ids.frontend, 'GET', '/p'), 'port 8080');
  });

  it('a change reaches a running pod within seconds, on the same keep-alive connection', async () => {
    await apply('api-viewer', { rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/frontend`] } }] }] });
    await until(200, () => call(ids.frontend, 'GET', '/live'), 'frontend allowed');
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await call(ids.frontend, 'GET', '/live', agent);
      expect(first.status).toBe(200);
      await apply('api-viewer', { rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/someone-else`] } }] }] });
      const closeMs = await until(403, () => call(ids.frontend, 'GET', '/live', agent), 'frontend refused on its open connection');
      await apply('api-viewer', { rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/frontend`] } }] }] });
      const openMs = await until(200, () => call(ids.frontend, 'GET', '/live', agent), 'frontend allowed again');
      const last = await call(ids.frontend, 'GET', '/live', agent);
      console.log(`[authz] policy change to enforcement: ${closeMs} ms (deny), ${openMs} ms (allow)`);
      expect(Math.max(closeMs, openMs)).toBeLessThan(10_000);
      // Every request went over the one connection: the pushes did not drop it.
      expect(last.localPort).toBe(first.localPort);
    } finally {
      agent.destroy();
    }
  });

  it('keeps citadel-authz right like the root ConfigMap: recreated when deleted, repaired when edited', async () => {
    const { core } = cluster.kube();
    const read = () => core.readNamespacedConfigMap({ name: 'citadel-authz', namespace: ns });
    const good = (await read()).data!['authz.json']!;
    expect(good).toContain(`ns[${ns}]-policy[api-viewer]-rule[0]`);
    await core.deleteNamespacedConfigMap({ name: 'citadel-authz', namespace: ns });
    await eventually('recreated', async () => (await read().catch(() => undefined))?.data?.['authz.json'] === good);
    const cm = await read();
    await core.replaceNamespacedConfigMap({ name: 'citadel-authz', namespace: ns, body: { ...cm, data: { 'authz.json': '{"version":1,"namespace":"x","selectors":[]}', extra: 'kept' } } });
    await eventually('repaired', async () => (await read()).data?.['authz.json'] === good);
    expect((await read()).data?.extra).toBe('kept');
  });

  it('a policy the compiler cannot express fails closed and says so on its status', async () => {
    await remove('api-viewer');
    await until(200, () => call(ids.frontend, 'GET', '/when'), 'no policy');
    await apply('header-gated', { rules: [{ when: [{ key: 'request.headers[x-token]', values: ['let-me-in'] }] }] });
    await until(403, () => call(ids.frontend, 'GET', '/when'), 'the only rule is dropped: deny all');
    const status = await eventually('status condition', async () => {
      const res = await cluster.kubectl(['get', 'authorizationpolicy', 'header-gated', '-n', ns, '-o', 'json']);
      const conditions = (JSON.parse(res.stdout) as { status?: { conditions?: Array<Record<string, unknown>> } }).status?.conditions;
      return conditions?.find((c) => c.type === 'citadel.io/Compiled');
    });
    expect(status).toMatchObject({ status: 'False', reason: 'PartlyUnsupported', message: 'rule 0: when not supported; the rule is dropped (it allows nothing)', observedGeneration: 1 });
    await remove('header-gated');
  });
});
