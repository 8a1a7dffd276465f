/**
 * The controllers against the real apiserver, running as the citadel ServiceAccount with exactly
 * deploy/base/rbac.yaml (see test/support/citadel-rbac.ts): root ConfigMaps and ServiceAccount secrets.
 * The controllers here only serve namespaces carrying this file's run label, so CA processes started by other
 * test files (with their own roots) cannot fight over the same objects.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { startControllers, type Controllers } from '../../src/controllers/index.js';
import type { KubeClients } from '../../src/kube/client.js';
import { silentLogger } from '../../src/log.js';
import { parseCertificates } from '../../src/pki/index.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { createTestAuthority, type TestAuthority } from '../support/test-authority.js';
import { unlessNotFound, waitFor } from '../support/wait.js';

const run = promisify(execFile);
const CM = 'istio-ca-root-cert';
const RUN_LABEL = 'citadel-controllers-test';
const CERT_TTL_MS = 10_000;

let cluster: TestCluster;
let admin: KubeClients;
let ca: TestAuthority;
let controllers: Controllers;
let registry: Registry;
let runId: string;
let tmp: string;

const readCm = (namespace: string) => unlessNotFound(admin.core.readNamespacedConfigMap({ name: CM, namespace }));
const readSecret = (namespace: string, name: string) => unlessNotFound(admin.core.readNamespacedSecret({ name, namespace }));

const decoded = (data: Record<string, string> | undefined, key: string) => Buffer.from(data?.[key] ?? '', 'base64').toString('utf8');

const served = (prefix: string, labels: Record<string, string> = {}) => cluster.createNamespace(prefix, { [RUN_LABEL]: runId, ...labels });

async function metricValue(name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { labels: Record<string, string | number>; value: number }[];
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((a, v) => a + v.value, 0);
}

beforeAll(async () => {
  cluster = getCluster();
  admin = cluster.kube();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-ctrl-'));
  const caNamespace = await cluster.createNamespace('ctrl-ca');
  runId = caNamespace;
  const { kube } = await citadelClients(cluster, caNamespace);
  ca = await createTestAuthority();
  registry = new Registry();
  controllers = startControllers({
    kube,
    ca,
    clock: systemClock,
    log: silentLogger,
    registry,
    namespace: caNamespace,
    trustDomain: 'cluster.local',
    identity: 'replica-a',
    saSecrets: 'labeled',
    namespaceSelector: `${RUN_LABEL}=${runId}`,
    leaseDurationMs: 3000,
    renewDeadlineMs: 2000,
    retryPeriodMs: 500,
    workloadCertTtlMs: CERT_TTL_MS,
    gracePeriodRatio: 0.5,
  });
  await controllers.synced();
  await waitFor('leadership', async () => controllers.isLeader());
});

afterAll(async () => {
  await controllers?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('root ConfigMap controller', () => {
  it('gives a new namespace the ConfigMap with the trust bundle and labels; skips unselected namespaces', async () => {
    const ns = await served('ctrl-new');
    const other = await cluster.createNamespace('ctrl-unselected');
    const cm = await waitFor('ConfigMap in the new namespace', async () => readCm(ns));
    expect(cm.data).toEqual({ 'root-cert.pem': ca.trustBundlePem() });
    expect(cm.metadata?.labels).toMatchObject({ 'istio.io/config': 'true', 'app.kubernetes.io/managed-by': 'citadel' });
    // The controller takes namespaces in the order it hears of them (one informer, a FIFO queue) and decides a
    // skip without a request: once a selected namespace created after the unselected one has its ConfigMap, the
    // unselected one has been passed over.
    const later = await served('ctrl-later');
    await waitFor('ConfigMap in a namespace created after the unselected one', async () => readCm(later));
    expect(await readCm(other)).toBeUndefined();
  });

  it('recreates a deleted ConfigMap', async () => {
    const ns = await served('ctrl-del');
    const first = await waitFor('ConfigMap', async () => readCm(ns));
    await admin.core.deleteNamespacedConfigMap({ name: CM, namespace: ns });
    const again = await waitFor('recreated ConfigMap', async () => {
      const cm = await readCm(ns);
      return cm && cm.metadata?.uid !== first.metadata?.uid ? cm : undefined;
    });
    expect(again.data?.['root-cert.pem']).toBe(ca.trustBundlePem());
  });

  it('repairs an edited root-cert.pem and keeps an extra key', async () => {
    const ns = await served('ctrl-edit');
    const cm = await waitFor('ConfigMap', async () => readCm(ns));
    await admin.core.replaceNamespacedConfigMap({
      name: CM,
      namespace: ns,
      body: { ...cm, data: { 'root-cert.pem': 'tampered', 'extra.txt': 'keep me' } },
    });
    const repaired = await waitFor('repaired ConfigMap', async () => {
      const now = await readCm(ns);
      return now?.data?.['root-cert.pem'] === ca.trustBundlePem() ? now : undefined;
    });
    expect(repaired.data?.['extra.txt']).toBe('keep me');
  });

  it('puts the new bundle into every namespace after a root change', async () => {
    const namespaces = await Promise.all([1, 2, 3].map(() => served('ctrl-rot')));
    await Promise.all(namespaces.map((ns) => waitFor(`ConfigMap in ${ns}`, async () => readCm(ns))));
    const before = ca.trustBundlePem();
    await ca.rotateRoot({ keepOld: true });
    const after = ca.trustBundlePem();
    expect(parseCertificates(after)).toHaveLength(parseCertificates(before).length + 1);
    await Promise.all(namespaces.map((ns) => waitFor(`new bundle in ${ns}`, async () => (await readCm(ns))?.data?.['root-cert.pem'] === after)));
  });
});

describe('ServiceAccount secret controller', () => {
  let labelled: string;
  let unlabelled: string;
  let foreign: string;

  beforeAll(async () => {
    labelled = await served('ctrl-sa', { 'citadel.io/sa-secrets': 'enabled' });
    unlabelled = await served('ctrl-nosa');
    // Labelled for secrets but outside this CA's --namespace-selector: not ours to touch.
    foreign = await cluster.createNamespace('ctrl-foreign', { 'citadel.io/sa-secrets': 'enabled' });
    for (const ns of [labelled, unlabelled, foreign]) await cluster.createServiceAccount(ns, 'cart');
  });

  async function secretOf(namespace: string, sa: string) {
    return waitFor(`secret istio.${sa} in ${namespace}`, async () => {
      const s = await readSecret(namespace, `istio.${sa}`);
      return s?.data?.['cert-chain.pem'] ? s : undefined;
    });
  }

  /** Checks with openssl: chains to root-cert.pem, carries exactly the SPIFFE ID, and key.pem is its key. */
  async function verifyWithOpenssl(namespace: string, sa: string, data: Record<string, string>) {
    const dir = fs.mkdtempSync(path.join(tmp, 'sa-'));
    const file = (name: string) => path.join(dir, name);
    for (const key of ['key.pem', 'cert-chain.pem', 'root-cert.pem']) fs.writeFileSync(file(key), decoded(data, key), { mode: 0o600 });
    const verify = await run('openssl', ['verify', '-CAfile', file('root-cert.pem'), file('cert-chain.pem')]);
    expect(verify.stdout.trim()).toBe(`${file('cert-chain.pem')}: OK`);
    const san = await run('openssl', ['x509', '-in', file('cert-chain.pem'), '-noout', '-ext', 'subjectAltName']);
    expect(san.stdout).toContain(`URI:spiffe://cluster.local/ns/${namespace}/sa/${sa}`);
    expect(san.stdout.match(/URI:/g)).toHaveLength(1);
    const fromKey = await run('openssl', ['pkey', '-in', file('key.pem'), '-pubout']);
    const fromCert = await run('openssl', ['x509', '-in', file('cert-chain.pem'), '-noout', '-pubkey']);
    expect(fromKey.stdout).toBe(fromCert.stdout);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  it('creates istio.<sa> for ServiceAccounts of labelled, selected namespaces only, verifiable with openssl', async () => {
    const secret = await secretOf(labelled, 'cart');
    expect(secret.type).toBe('istio.io/key-and-cert');
    expect(secret.metadata?.ownerReferences).toEqual([
      expect.objectContaining({ apiVersion: 'v1', kind: 'ServiceAccount', name: 'cart' }),
    ]);
    const sa = await admin.core.readNamespacedServiceAccount({ name: 'cart', namespace: labelled });
    expect(secret.metadata?.ownerReferences?.[0]?.uid).toBe(sa.metadata?.uid);
    await verifyWithOpenssl(labelled, 'cart', secret.data!);
    // The namespace's default ServiceAccount (made by the harness) gets one too.
    await secretOf(labelled, 'default');
    for (const ns of [unlabelled, foreign]) {
      expect(await readSecret(ns, 'istio.cart')).toBeUndefined();
      expect(await readSecret(ns, 'istio.default')).toBeUndefined();
    }
  });

  it('rotates the certificate when it nears expiry (10 s TTL, ratio 0.5)', async () => {
    const first = await secretOf(labelled, 'cart');
    const firstCert = parseCertificates(decoded(first.data, 'cert-chain.pem'))[0]!;
    const rotated = await waitFor('a rotated certificate', async () => {
      const s = await readSecret(labelled, 'istio.cart');
      const cert = s && parseCertificates(decoded(s.data, 'cert-chain.pem'))[0];
      return cert && cert.serialHex !== firstCert.serialHex ? s : undefined;
    }, { timeoutMs: 20_000 });
    const cert = parseCertificates(decoded(rotated.data, 'cert-chain.pem'))[0]!;
    expect(cert.notAfter).toBeGreaterThan(firstCert.notAfter);
    expect(rotated.metadata?.uid).toBe(first.metadata?.uid);
    await verifyWithOpenssl(labelled, 'cart', rotated.data!);
  });

  it('recreates a deleted secret and repairs a tampered one', async () => {
    await cluster.createServiceAccount(labelled, 'orders');
    const first = await secretOf(labelled, 'orders');
    await admin.core.deleteNamespacedSecret({ name: 'istio.orders', namespace: labelled });
    const again = await waitFor('recreated secret', async () => {
      const s = await readSecret(labelled, 'istio.orders');
      return s && s.metadata?.uid !== first.metadata?.uid && s.data?.['key.pem'] ? s : undefined;
    });
    // Tamper: put the cart secret's key in. The controller must notice the key no longer matches the certificate.
    const cart = await secretOf(labelled, 'cart');
    await admin.core.replaceNamespacedSecret({
      name: 'istio.orders',
      namespace: labelled,
      body: { ...again, data: { ...again.data, 'key.pem': cart.data!['key.pem']! } },
    });
    const repaired = await waitFor('repaired secret', async () => {
      const s = await readSecret(labelled, 'istio.orders');
      return s && s.data?.['key.pem'] !== cart.data!['key.pem'] ? s : undefined;
    });
    await verifyWithOpenssl(labelled, 'orders', repaired.data!);
  });

  it('deletes the secret with its ServiceAccount', async () => {
    await cluster.createServiceAccount(labelled, 'payments');
    await secretOf(labelled, 'payments');
    await admin.core.deleteNamespacedServiceAccount({ name: 'payments', namespace: labelled });
    await waitFor('secret deleted', async () => (await readSecret(labelled, 'istio.payments')) === undefined);
  });
});

describe('RBAC', () => {
  it('deploy/base/rbac.yaml is sufficient: no request of the controllers was forbidden', async () => {
    expect(await metricValue('citadel_controller_errors_total', { reason: 'http_403' })).toBe(0);
    expect(await metricValue('citadel_controller_writes_total', { action: 'create', outcome: 'created' })).toBeGreaterThan(0);
    expect(await metricValue('citadel_leader', {})).toBe(1);
  });
});
