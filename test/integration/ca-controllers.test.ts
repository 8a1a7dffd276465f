/**
 * `citadel ca` with its controllers wired in (as deployed): the leader writes the root ConfigMap, shares the CA's
 * /metrics registry, and rotates the self-signed root; the new root reaches the ConfigMap next to the old one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCertificates } from '../../src/pki/index.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { retryUntilPasses } from '../support/wait.js';
import { ensureBuilt, metricValue, startCa, type CaProcess } from './ca-process.js';

let cluster: TestCluster;
let ca: CaProcess | undefined;

/** Retries a block of assertions until the CA has converged. */
const eventually = <T>(fn: () => Promise<T>, timeoutMs = 30_000) => retryUntilPasses(fn, { timeoutMs, intervalMs: 250 });

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
}, 180_000);

afterAll(async () => {
  await ca?.stop();
});

describe('citadel ca with controllers', () => {
  it('publishes the trust bundle through the leader and rotates the self-signed root into it', async () => {
    const ns = await cluster.createNamespace('ca-ctl');
    const { kubeconfig } = await citadelClients(cluster, ns);
    // Only namespaces carrying this label, so this CA does not fight other tests' controllers.
    const label = `citadel-test-${ns}`.slice(0, 63);
    const target = await cluster.createNamespace('ca-ctl-target', { [label]: 'yes' });
    // Root life = 100 s + Istio's 2 min backdating = 220 s; at 41% a rotation is due about 10 s after creation.
    ca = await startCa({
      kubeconfig,
      namespace: ns,
      controllers: true,
      args: [
        '--sa-secrets', 'off', '--namespace-selector', `${label}=yes`,
        '--lease-duration', '3s', '--lease-renew-deadline', '2s', '--lease-retry-period', '500ms',
        '--self-signed-ca-cert-ttl', '100s', '--self-signed-root-grace-percent', '41', '--self-signed-root-check-interval', '1s', '--self-signed-root-publish-delay', '2s',
      ],
    });
    const core = cluster.kube().core;
    const secretRoots = async () => {
      const s = await core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns });
      return parseCertificates(Buffer.from(s.data!['root-cert.pem']!, 'base64').toString('utf8')).map((c) => c.serialHex);
    };
    const configMapRoots = async () => {
      const cm = await core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: target });
      return parseCertificates(cm.data!['root-cert.pem']!).map((c) => c.serialHex);
    };
    const first = await secretRoots();
    expect(first).toHaveLength(1);
    await eventually(async () => expect(await configMapRoots()).toEqual(first));
    // One registry: the controllers' metrics are on the CA's /metrics.
    const m = await ca.metrics();
    expect(metricValue(m, 'citadel_leader')).toBe(1);
    expect(m).toContain('citadel_server_root_cert_expiry_timestamp');

    // The leader rotates the root (same key); the ConfigMap then holds the new root and the old one.
    await eventually(async () => {
      const roots = await secretRoots();
      expect(roots.length).toBeGreaterThanOrEqual(2);
      expect(roots).toContain(first[0]);
    }, 40_000);
    // Published first (the current root still signs), then it signs.
    await ca.waitForLog((l) => l.msg === 'published the next self-signed root; it signs once the publish delay has passed');
    await ca.waitForLog((l) => l.msg === 'rotated the self-signed root (same key)', 30_000);
    const published = ca.logs().findIndex((l) => l.msg.startsWith('published the next'));
    const rotated = ca.logs().findIndex((l) => l.msg.startsWith('rotated the self-signed root'));
    expect(published).toBeLessThan(rotated);
    await eventually(async () => {
      const cmRoots = await configMapRoots();
      expect(cmRoots.length).toBeGreaterThanOrEqual(2);
      expect(cmRoots).toContain(first[0]);
    });
    // A namespace without the label gets nothing.
    await expect(core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns })).rejects.toMatchObject({ code: 404 });
  }, 90_000);
});
