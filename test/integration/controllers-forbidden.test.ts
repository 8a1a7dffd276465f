/**
 * A permanent error does not make the controllers spin: a ValidatingAdmissionPolicy forbids (HTTP 403) creating
 * ConfigMaps in one namespace; the root ConfigMap controller retries that namespace with exponential backoff
 * (a handful of attempts in seconds, not hundreds), keeps serving other namespaces, and converges once the
 * policy is gone. Runs as the citadel ServiceAccount with deploy/base/rbac.yaml, like the other controller tests.
 */
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { startControllers, type Controllers } from '../../src/controllers/index.js';
import type { KubeClients } from '../../src/kube/client.js';
import { silentLogger } from '../../src/log.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { createTestAuthority, type TestAuthority } from '../support/test-authority.js';
import { unlessNotFound, waitFor } from '../support/wait.js';

const CM = 'istio-ca-root-cert';
const RUN_LABEL = 'citadel-forbidden-test';
const DENY_LABEL = 'citadel-test-deny-configmaps';

let cluster: TestCluster;
let admin: KubeClients;
let ca: TestAuthority;
let controllers: Controllers;
let registry: Registry;
let runId: string;
let policyName: string;

const readCm = (namespace: string) => unlessNotFound(admin.core.readNamespacedConfigMap({ name: CM, namespace }));

async function forbiddenAttempts(): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'citadel_controller_errors_total');
  return ((metric?.values ?? []) as { labels: Record<string, string>; value: number }[])
    .filter((v) => v.labels.controller === 'root-configmap' && v.labels.reason === 'http_403')
    .reduce((a, v) => a + v.value, 0);
}

async function kubectlOk(args: string[], input?: string): Promise<void> {
  const res = await cluster.kubectl(args, { input });
  if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr}`);
}

beforeAll(async () => {
  cluster = getCluster();
  admin = cluster.kube();
  runId = await cluster.createNamespace('ctrl-forbid');
  policyName = `deny-configmaps-${runId}`;
  await kubectlOk(['apply', '-f', '-'], `
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: ${policyName}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["configmaps"]
  validations:
    - expression: "false"
      reason: Forbidden
      message: ConfigMaps may not be created here (test policy)
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: ${policyName}
spec:
  policyName: ${policyName}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        ${DENY_LABEL}: "${runId}"
`);
  const { kube } = await citadelClients(cluster, runId);
  ca = await createTestAuthority();
  registry = new Registry();
  controllers = startControllers({
    kube,
    ca,
    clock: systemClock,
    log: silentLogger,
    registry,
    namespace: runId,
    trustDomain: 'cluster.local',
    saSecrets: 'off',
    namespaceSelector: `${RUN_LABEL}=${runId}`,
    leaseDurationMs: 3000,
    renewDeadlineMs: 2000,
    retryPeriodMs: 500,
  });
  await controllers.synced();
  await waitFor('leadership', async () => controllers.isLeader());
});

afterAll(async () => {
  await controllers?.stop();
  await cluster?.kubectl(['delete', 'validatingadmissionpolicybinding,validatingadmissionpolicy', policyName, '--ignore-not-found']);
});

describe('a forbidden write', () => {
  it('is retried with backoff, does not hold up other namespaces, and converges once allowed', async () => {
    // A namespace the policy covers, not yet served: wait until the policy is in force (it compiles asynchronously).
    const denied = await cluster.createNamespace('ctrl-denied', { [DENY_LABEL]: runId });
    await waitFor('the policy to deny', async () => {
      try {
        await admin.core.createNamespacedConfigMap({ namespace: denied, body: { metadata: { name: 'probe' } } });
        await admin.core.deleteNamespacedConfigMap({ name: 'probe', namespace: denied });
        return false;
      } catch (err) {
        return (err as { code?: number }).code === 403;
      }
    });

    const ns = await admin.core.readNamespace({ name: denied });
    await admin.core.replaceNamespace({ name: denied, body: { ...ns, metadata: { ...ns.metadata, labels: { ...ns.metadata?.labels, [RUN_LABEL]: runId } } } });
    const fine = await cluster.createNamespace('ctrl-allowed', { [RUN_LABEL]: runId });
    await waitFor('the allowed namespace to be served', async () => readCm(fine));

    // Backoff 100, 200, 400, 800 ms...: the third, fourth and fifth attempts come at least 1.4 s after the second;
    // a spinning loop would make them at once.
    await waitFor('a second forbidden attempt', async () => (await forbiddenAttempts()) >= 2, { intervalMs: 10 });
    const start = Date.now();
    await waitFor('a fifth forbidden attempt', async () => (await forbiddenAttempts()) >= 5, { intervalMs: 10 });
    expect(Date.now() - start).toBeGreaterThanOrEqual(1300);
    expect(await readCm(denied)).toBeUndefined();

    await kubectlOk(['delete', 'validatingadmissionpolicybinding', policyName]);
    // The next retry (at most ~6.4 s away by now) succeeds.
    const cm = await waitFor('the ConfigMap once allowed', async () => readCm(denied), { timeoutMs: 20_000 });
    expect(cm.data?.['root-cert.pem']).toBe(ca.trustBundlePem());
  });
});
