/**
 * The real control plane really does what every other test relies on: TokenRequest + TokenReview with
 * audiences and Pod binding, and RBAC enforcement for ServiceAccount kubeconfigs.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { connectKube } from '../../src/kube/client.js';
import { freePort, getCluster, ROOT_CERT_CONFIGMAP, startEnvoy, startPod } from '../harness/index.js';

async function review(token: string, audiences: string[]) {
  const res = await getCluster().kube().authn.createTokenReview({ body: { spec: { token, audiences } } });
  return res.status ?? {};
}

describe('control plane', () => {
  it('serves the pinned Kubernetes version with RBAC on', async () => {
    const cluster = getCluster();
    const version = await cluster.kubectl(['version', '-o', 'json']);
    expect(version.code, version.stderr).toBe(0);
    const server = JSON.parse(version.stdout).serverVersion;
    expect(server.gitVersion).toBe(cluster.info.tools.kubernetesVersion);
    const api = await cluster.kubectl(['api-versions']);
    expect(api.stdout.split('\n')).toContain('rbac.authorization.k8s.io/v1');
  });

  it('authenticates a Pod-bound istio-ca token only for its audience and only while the Pod exists', async () => {
    const cluster = getCluster();
    const ns = await cluster.createNamespace('harness-token');
    await cluster.createServiceAccount(ns, 'workload');
    const { core } = cluster.kube();
    const pod = await core.createNamespacedPod({
      namespace: ns,
      body: {
        metadata: { name: 'app' },
        spec: { serviceAccountName: 'workload', containers: [{ name: 'app', image: 'example.invalid/app:1' }] },
      },
    });
    const token = await cluster.tokenFor(ns, 'workload', { audiences: ['istio-ca'], podName: 'app', podUid: pod.metadata!.uid! });

    const ok = await review(token, ['istio-ca']);
    expect(ok.error ?? '').toBe('');
    expect(ok.authenticated).toBe(true);
    expect(ok.audiences).toEqual(['istio-ca']);
    expect(ok.user?.username).toBe(`system:serviceaccount:${ns}:workload`);
    expect(ok.user?.groups).toContain(`system:serviceaccounts:${ns}`);
    expect(ok.user?.extra?.['authentication.kubernetes.io/pod-name']).toEqual(['app']);
    expect(ok.user?.extra?.['authentication.kubernetes.io/pod-uid']).toEqual([pod.metadata!.uid!]);

    const otherAudience = await review(token, ['some-other-audience']);
    expect(otherAudience.authenticated).toBeFalsy();
    // No audience in the review means the apiserver's own audiences, which do not include istio-ca.
    const defaultAudience = await review(token, []);
    expect(defaultAudience.authenticated).toBeFalsy();

    await core.deleteNamespacedPod({ name: 'app', namespace: ns, gracePeriodSeconds: 0 });
    // Without a kubelet, a Pod deleted with grace period 0 leaves etcd at once. The service-account
    // authenticator looks the bound Pod up, but kube-apiserver caches successful token authentications for
    // 10 s (TokenSuccessCacheTTL, not a flag), so the token may keep working for up to 10 s after deletion.
    await expect.poll(async () => (await core.listNamespacedPod({ namespace: ns })).items.length).toBe(0);
    const deletedAt = Date.now();
    await expect
      .poll(async () => (await review(token, ['istio-ca'])).authenticated ?? false, { timeout: 20_000, interval: 500 })
      .toBe(false);
    console.log(`bound token stopped authenticating ${Date.now() - deletedAt} ms after its Pod was deleted`);
    const afterDelete = await review(token, ['istio-ca']);
    expect(afterDelete.authenticated).toBeFalsy();
    console.log(`review error after deletion: ${afterDelete.error}`);
    expect(afterDelete.error).toMatch(/invalid bearer token/);
  });

  it('enforces RBAC for a ServiceAccount kubeconfig', async () => {
    const cluster = getCluster();
    const ns = await cluster.createNamespace('harness-rbac');
    await cluster.createServiceAccount(ns, 'reader');
    const rbac = await cluster.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'configmap-reader', namespace: ns },
            rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }],
          },
          {
            apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'reader', namespace: ns },
            roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'configmap-reader' },
            subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }],
          },
        ],
      }),
    });
    expect(rbac.code, rbac.stderr).toBe(0);
    await cluster.kube().core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'settings' }, data: { a: '1' } } });

    const asReader = connectKube(await cluster.serviceAccountKubeconfig(ns, 'reader'));
    const cm = await asReader.core.readNamespacedConfigMap({ name: 'settings', namespace: ns });
    expect(cm.data).toEqual({ a: '1' });
    await expect(asReader.core.readNamespacedSecret({ name: 'anything', namespace: ns })).rejects.toMatchObject({ code: 403 });
    await expect(
      asReader.core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'new' } } }),
    ).rejects.toMatchObject({ code: 403 });
    await expect(asReader.core.listNamespacedConfigMap({ namespace: 'default' })).rejects.toMatchObject({ code: 403 });

    // A client-certificate user with no bindings is authenticated but may do nothing.
    const alice = connectKube(await cluster.userKubeconfig('alice', ['citadel-testers']));
    await expect(alice.core.readNamespacedConfigMap({ name: 'settings', namespace: ns })).rejects.toMatchObject({ code: 403 });
    const whoami = await cluster.kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username} {.status.userInfo.groups}'],
      { kubeconfig: await cluster.userKubeconfig('alice', ['citadel-testers']) });
    expect(whoami.stdout).toMatch(/^alice .*citadel-testers/);
  });
});

describe('kubelet simulator', () => {
  it('mounts a Pod-bound istio-ca token and keeps the root cert in step with the ConfigMap', async () => {
    const cluster = getCluster();
    const ns = await cluster.createNamespace('harness-kubelet');
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'sleep' });
    expect(Buffer.byteLength(pod.sdsSocketPath)).toBeLessThan(108);
    expect(pod.tokenPath).toBe(`${pod.root}/var/run/secrets/tokens/istio-token`);
    expect(fs.existsSync(pod.rootCertPath)).toBe(false);

    const token = fs.readFileSync(pod.tokenPath, 'utf8');
    const reviewed = await review(token, ['istio-ca']);
    expect(reviewed.user?.username).toBe(`system:serviceaccount:${ns}:sleep`);
    expect(reviewed.user?.extra?.['authentication.kubernetes.io/pod-name']).toEqual([pod.name]);
    expect(reviewed.user?.extra?.['authentication.kubernetes.io/pod-uid']).toEqual([pod.uid]);
    const refreshed = await pod.refreshToken();
    expect(refreshed).not.toBe(token);
    expect(fs.readFileSync(pod.tokenPath, 'utf8')).toBe(refreshed);

    const { core } = cluster.kube();
    await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: ROOT_CERT_CONFIGMAP }, data: { 'root-cert.pem': 'ROOT-1\n' } } });
    expect(await pod.waitForRootCert({ timeoutMs: 10_000 })).toBe('ROOT-1\n');
    await core.replaceNamespacedConfigMap({
      name: ROOT_CERT_CONFIGMAP, namespace: ns,
      body: { metadata: { name: ROOT_CERT_CONFIGMAP }, data: { 'root-cert.pem': 'ROOT-1\nROOT-2\n' } },
    });
    expect(await pod.waitForRootCert({ timeoutMs: 10_000, predicate: (pem) => pem.includes('ROOT-2') })).toBe('ROOT-1\nROOT-2\n');

    // A second pod in the namespace gets the current content at once.
    const other = await startPod(cluster, { namespace: ns, serviceAccount: 'sleep', watchRootCert: false });
    expect(fs.readFileSync(other.rootCertPath, 'utf8')).toBe('ROOT-1\nROOT-2\n');

    await pod.delete();
    await other.delete();
    expect(fs.existsSync(pod.root)).toBe(false);
    await expect(core.readNamespacedPod({ name: pod.name, namespace: ns })).rejects.toMatchObject({ code: 404 });
  });
});

describe('Envoy launcher', () => {
  it('starts Envoy from a static bootstrap, reports LIVE, serves, and stops cleanly', async () => {
    const port = await freePort();
    const envoy = await startEnvoy({
      name: 'harness-static',
      bootstrap: {
        node: { id: 'harness-test', cluster: 'harness' },
        static_resources: {
          listeners: [{
            name: 'hello',
            address: { socket_address: { address: '127.0.0.1', port_value: port } },
            filter_chains: [{
              filters: [{
                name: 'envoy.filters.network.http_connection_manager',
                typed_config: {
                  '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                  stat_prefix: 'hello',
                  route_config: {
                    virtual_hosts: [{
                      name: 'all', domains: ['*'],
                      routes: [{ match: { prefix: '/' }, direct_response: { status: 200, body: { inline_string: 'hello from envoy' } } }],
                    }],
                  },
                  http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
                },
              }],
            }],
          }],
        },
      },
    });
    try {
      await envoy.waitReady();
      const ready = await envoy.admin('/ready');
      expect(ready).toEqual({ status: 200, body: 'LIVE\n' });
      const version = await envoy.version();
      console.log(`Envoy version: ${version}`);
      expect(version).toContain(`/${getCluster().info.tools.envoyVersion}/`);
      const res = await fetch(`http://127.0.0.1:${port}/`);
      expect(await res.text()).toBe('hello from envoy');
      expect((await envoy.stats('^http\\.hello\\.downstream_rq_total$'))['http.hello.downstream_rq_total']).toBe(1);
      expect((await envoy.certs()).certificates).toEqual([]);
    } finally {
      await envoy.stop();
    }
    expect(await envoy.exited).toBe(0);
    expect(envoy.running()).toBe(false);
    expect(fs.existsSync(envoy.configPath)).toBe(false);
    await expect(fetch(envoy.adminUrl + '/ready')).rejects.toThrow();
  });

  it('fails fast, with Envoy\'s own reason, on a bootstrap it rejects', async () => {
    await expect(startEnvoy({ name: 'harness-bad', bootstrap: 'static_resources: { clusters: [ { name: x, type: NO_SUCH_TYPE } ] }' }))
      .rejects.toThrow(/exited[\s\S]*NO_SUCH_TYPE/);
  });
});
