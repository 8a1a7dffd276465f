/**
 * Authorization must never hold up trust distribution: controllers whose ServiceAccount may not list
 * AuthorizationPolicies (deploy/base/rbac.yaml without its security.istio.io rules, as on a cluster where the
 * operator left them out) still write every root ConfigMap, while the policy informer keeps failing and says so.
 */
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { startControllers, type Controllers } from '../../src/controllers/index.js';
import { connectKube } from '../../src/kube/client.js';
import { silentLogger } from '../../src/log.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { rbacFor } from '../support/citadel-rbac.js';
import { createTestAuthority } from '../support/test-authority.js';
import { unlessNotFound, waitFor } from '../support/wait.js';

const RUN_LABEL = 'citadel-authz-forbidden-test';

let cluster: TestCluster;
let controllers: Controllers;
let registry: Registry;
let runId: string;

beforeAll(async () => {
  cluster = getCluster();
  runId = await cluster.createNamespace('authz-forbidden-ca');
  // The rule for AuthorizationPolicies and their status removed from the CA's ClusterRole.
  const rbac = rbacFor(runId).replace(/ {2}- apiGroups: \["security\.istio\.io"\]\n(?: {4}.*\n)+/g, '');
  expect(rbac).not.toContain('security.istio.io');
  const res = await cluster.kubectl(['apply', '-f', '-'], { input: rbac });
  expect(res.code, res.stderr).toBe(0);
  registry = new Registry();
  controllers = startControllers({
    kube: connectKube(await cluster.serviceAccountKubeconfig(runId, 'citadel')), ca: await createTestAuthority(), clock: systemClock,
    log: silentLogger, registry, namespace: runId, trustDomain: 'cluster.local', saSecrets: 'off',
    namespaceSelector: `${RUN_LABEL}=${runId}`, leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500,
  });
});

afterAll(async () => {
  await controllers?.stop();
});

describe('controllers without access to AuthorizationPolicies', () => {
  it('still publish root ConfigMaps; the policy informer reports 403s', async () => {
    await controllers.synced();
    const ns = await cluster.createNamespace('authz-forbidden', { [RUN_LABEL]: runId });
    const cm = await waitFor('root ConfigMap', () => unlessNotFound(cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns })));
    expect(cm.data?.['root-cert.pem']).toMatch(/BEGIN CERTIFICATE/);
    await waitFor('informer 403 counted', async () => {
      const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'citadel_controller_errors_total');
      return ((metric?.values ?? []) as { labels: Record<string, string> }[]).some((v) => v.labels.controller === 'informer/authorizationpolicies' && v.labels.reason === 'http_403');
    });
    // Without its policies the namespace gets no citadel-authz: pods that mount it wait rather than run unguarded.
    expect(await unlessNotFound(cluster.kube().core.readNamespacedConfigMap({ name: 'citadel-authz', namespace: ns }))).toBeUndefined();
  });
});
