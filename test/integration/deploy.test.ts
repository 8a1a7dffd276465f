/**
 * deploy/ against the real kube-apiserver: every object of deploy/base and deploy/examples/* passes the
 * apiserver's validation and admission (server-side dry run, Pod Security "restricted" included), then applies
 * for real, and a second apply changes nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getCluster, type TestCluster } from '../harness/index.js';
import { DEPLOY_DIR, EXAMPLE_DIR, EXAMPLE_LABEL } from '../../scripts/mtls-example.js';

const BASE_DIR = path.join(DEPLOY_DIR, 'base');
const WORKLOAD_API_DIR = path.join(DEPLOY_DIR, 'examples', 'workload-api');
// kubectl's JSON output, read field by field in the assertions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

let cluster: TestCluster;
beforeAll(() => {
  cluster = getCluster();
});

async function kubectlOk(args: string[], input?: string): Promise<string> {
  const res = await cluster.kubectl(args, { input, timeoutMs: 60_000 });
  if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${res.code}):\n${res.stderr}\n${res.stdout}`);
  return `${res.stdout}${res.stderr}`;
}

/** `kubectl kustomize dir` split into documents. */
async function build(dir: string): Promise<string[]> {
  const out = await kubectlOk(['kustomize', dir]);
  return out.split(/^---$/m).map((d) => d.trim()).filter(Boolean);
}

/**
 * A server-side dry run cannot create namespaces, so objects inside a namespace the same apply would create are
 * rejected ("namespaces ... not found"). Create just the Namespace objects first, then dry-run everything.
 */
async function applyNamespaces(dir: string): Promise<void> {
  const namespaces = (await build(dir)).filter((d) => /^kind: Namespace$/m.test(d));
  await kubectlOk(['apply', '-f', '-'], namespaces.join('\n---\n'));
}

describe.each([
  ['deploy/base', BASE_DIR],
  ['deploy/examples/mtls', EXAMPLE_DIR],
  ['deploy/examples/workload-api', WORKLOAD_API_DIR],
  ['deploy/examples/pod-certificates', path.join(DEPLOY_DIR, 'examples/pod-certificates')],
  ['deploy (both)', DEPLOY_DIR],
])('%s', (label, dir) => {
  it('passes a server-side dry run with no warnings, applies, and re-applies as a no-op', async () => {
    await applyNamespaces(dir);
    const dry = await kubectlOk(['apply', '--dry-run=server', '-k', dir]);
    expect(dry).toMatch(/\(server dry run\)/);
    // Pod Security "restricted" is only a warning for Deployment templates; a warning means a pod would be refused.
    expect(dry, `${label}: warnings from the apiserver`).not.toMatch(/Warning:/);

    await kubectlOk(['apply', '-k', dir]);
    const docs = await build(dir);
    const listed = JSON.parse(await cluster.kubectl(['get', '-k', dir, '-o', 'json']).then((r) => r.stdout)) as { items: unknown[] };
    expect(listed.items).toHaveLength(docs.length);

    // `kubectl diff` exits 0 only when the live objects already match the manifests (server-side dry run again).
    const diff = await cluster.kubectl(['diff', '-k', dir], { timeoutMs: 60_000 });
    expect(diff.stderr).toBe('');
    expect(diff.code, diff.stdout).toBe(0);
  });
});

describe('deploy/base', () => {
  it('runs citadel ca hardened: 2 replicas, non-root, read-only root, no capabilities, probes on 15014, optional cacerts', async () => {
    await applyNamespaces(BASE_DIR);
    await kubectlOk(['apply', '-k', BASE_DIR]);
    const deploy = JSON.parse(await kubectlOk(['get', 'deployment', 'citadel', '-n', 'citadel-system', '-o', 'json']));
    const pod = deploy.spec.template.spec;
    const ca = pod.containers.find((c: { name: string }) => c.name === 'ca');
    expect(deploy.spec.replicas).toBe(2);
    expect(pod.serviceAccountName).toBe('citadel');
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(ca.image).toBe('citadel-ca:dev');
    expect(ca.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(ca.livenessProbe.httpGet).toMatchObject({ path: '/healthz', port: 'http-monitoring' });
    expect(ca.readinessProbe.httpGet).toMatchObject({ path: '/readyz', port: 'http-monitoring' });
    expect(ca.resources.requests).toBeDefined();
    expect(ca.resources.limits).toBeDefined();
    expect(ca.env).toContainEqual({ name: 'POD_NAMESPACE', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } } });
    expect(ca.volumeMounts).toContainEqual({ name: 'cacerts', mountPath: '/etc/cacerts', readOnly: true });
    expect(pod.volumes.find((v: { name: string }) => v.name === 'cacerts').secret).toMatchObject({ secretName: 'cacerts', optional: true });

    const svc = JSON.parse(await kubectlOk(['get', 'service', 'citadel', '-n', 'citadel-system', '-o', 'json']));
    expect(svc.spec.ports.map((p: { name: string; port: number }) => [p.name, p.port])).toEqual([['grpc-tls', 15012], ['http-monitoring', 15014]]);
    const pdb = JSON.parse(await kubectlOk(['get', 'pdb', 'citadel', '-n', 'citadel-system', '-o', 'json']));
    expect(pdb.spec.selector.matchLabels).toEqual(deploy.spec.selector.matchLabels);
  });

  it('keeps rbac.yaml as the one source of the CA ServiceAccount and its roles', () => {
    const kustomization = fs.readFileSync(path.join(BASE_DIR, 'kustomization.yaml'), 'utf8');
    expect(kustomization).toMatch(/^\s+- rbac\.yaml$/m);
    expect(fs.readFileSync(path.join(BASE_DIR, 'rbac.yaml'), 'utf8')).toMatch(/kind: ServiceAccount[\s\S]*name: citadel\b/);
  });
});

describe('deploy/examples/mtls', () => {
  it('gives every workload its own ServiceAccount, the agent, Envoy, the istio-ca token, the root ConfigMap and (where it takes calls) its policies', async () => {
    await applyNamespaces(EXAMPLE_DIR);
    await kubectlOk(['apply', '-k', EXAMPLE_DIR]);
    const list = JSON.parse(await kubectlOk(['get', 'deployments', '-A', '-l', EXAMPLE_LABEL, '-o', 'json']));
    const byName = new Map<string, Json>(
      list.items.map((d: { metadata: { name: string } }) => [d.metadata.name, d]));
    expect([...byName.keys()].sort()).toEqual(['datastore', 'photo-backend', 'photo-frontend']);
    expect(byName.get('datastore')!.metadata.namespace).toBe('datastore');
    expect(byName.get('photo-frontend')!.metadata.namespace).toBe('photo');

    for (const [name, d] of byName) {
      const pod = d.spec.template.spec;
      expect(pod.serviceAccountName).toBe(name);
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(pod.containers.map((c: { name: string }) => c.name)).toEqual(['app', 'citadel-agent', 'envoy']);
      const agent = pod.containers[1];
      expect(agent.image).toBe('citadel-agent:dev');
      expect(agent.env).toContainEqual({ name: 'CA_ADDR', value: 'citadel.citadel-system.svc:15012' });
      expect(agent.env).toContainEqual({ name: 'SERVICE_ACCOUNT', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.serviceAccountName' } } });
      const mounts = (c: { volumeMounts: Array<{ name: string; mountPath: string }> }) =>
        Object.fromEntries(c.volumeMounts.map((m) => [m.mountPath, m.name]));
      // Workloads that take calls enforce AuthorizationPolicies: the agent reads the compiled policies and the pod's
      // labels from the paths it defaults to (--authz-policy-file, --pod-labels-file).
      const authorizes = name !== 'photo-frontend';
      expect(mounts(agent)).toEqual({
        '/var/run/secrets/workload-spiffe-uds': 'workload-socket',
        '/var/run/secrets/tokens': 'istio-token',
        '/var/run/secrets/istio': 'istiod-ca-cert',
        ...(authorizes ? { '/var/run/secrets/citadel/authz': 'citadel-authz', '/etc/istio/pod': 'podinfo' } : {}),
      });
      expect(mounts(pod.containers[2])['/var/run/secrets/workload-spiffe-uds']).toBe('workload-socket');
      const volume = (v: string) => pod.volumes.find((x: { name: string }) => x.name === v);
      expect(volume('workload-socket').emptyDir).toBeDefined();
      expect(volume('istio-token').projected.sources).toEqual([
        { serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 43200, path: 'istio-token' } },
      ]);
      expect(volume('istiod-ca-cert').configMap.name).toBe('istio-ca-root-cert');
      if (authorizes) {
        expect(volume('citadel-authz').configMap.name).toBe('citadel-authz');
        expect(volume('podinfo').downwardAPI.items).toEqual([{ path: 'labels', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.labels' } }]);
      }
      // The Envoy ConfigMap is kustomize-generated from envoy/<name>.yaml (hash suffix), byte for byte.
      const cmName = volume('envoy-config').configMap.name as string;
      expect(cmName).toMatch(new RegExp(`^${name}-envoy-[a-z0-9]+$`));
      const cm = JSON.parse(await kubectlOk(['get', 'configmap', cmName, '-n', d.metadata.namespace, '-o', 'json']));
      expect(cm.data['envoy.yaml']).toBe(fs.readFileSync(path.join(EXAMPLE_DIR, 'envoy', `${name}.yaml`), 'utf8'));
    }
  });
});
