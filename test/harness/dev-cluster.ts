/**
 * `npm run dev-cluster`: the test control plane (etcd + kube-apiserver, RBAC, ServiceAccount tokens) in the
 * foreground for people. Prints the kubeconfig and an `export KUBECONFIG=...` line; Ctrl-C stops it and removes
 * its temp dir. No controller-manager, scheduler or kubelet: see test/harness/README.md.
 */
import { startControlPlane } from './cluster.js';
import { connectCluster } from './test-cluster.js';

async function main(): Promise<void> {
  const controlPlane = await startControlPlane({ log: (line) => console.error(`[dev-cluster] ${line}`) });
  const { info } = controlPlane;
  // The harness unrefs its child processes (tests must not hang on them); here we run until told to stop.
  const keepAlive = setInterval(() => {}, 1 << 30);
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    console.error('\n[dev-cluster] stopping');
    await controlPlane.stop();
    clearInterval(keepAlive);
    console.error('[dev-cluster] stopped; temp dir removed');
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  process.on('SIGHUP', () => void stop(0));
  for (const component of [controlPlane.etcd, controlPlane.apiserver]) {
    void component.exited.then((how) => {
      if (stopping) return;
      console.error(`[dev-cluster] ${component.name} exited unexpectedly (${how}); last log lines:\n${component.tail()}`);
      void stop(1);
    });
  }

  // No controller-manager makes the default ServiceAccount; Pods in `default` need it.
  await connectCluster(info).createServiceAccount('default', 'default');

  console.log(`
kube-apiserver ${info.tools.kubernetesVersion} on ${info.server}, etcd ${info.tools.etcdVersion} on ${info.etcdEndpoint}
admin kubeconfig:  ${info.kubeconfigPath}
kubectl:           ${info.tools.kubectl}
logs:              ${info.apiserverLogPath}
                   ${info.etcdLogPath}
tokens:            audience istio-ca works for TokenRequest/TokenReview, e.g.
                   kubectl create token default --audience istio-ca

export KUBECONFIG=${info.kubeconfigPath}

Absent: controller-manager (no namespace finalisation, no GC, no default ServiceAccounts in new namespaces),
scheduler and kubelet (Pods stay Pending). Ctrl-C to stop.`);
}

main().catch((err: unknown) => {
  console.error(`[dev-cluster] ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
