/**
 * Runs code as the CA's ServiceAccount with exactly deploy/base/rbac.yaml: the file is applied with its
 * namespace (citadel-system) replaced by a test namespace and its cluster-scoped names suffixed, so several test
 * files can each have their own copy; rules are left untouched. Returns clients authenticated as
 * `<namespace>/citadel`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectKube, type KubeClients } from '../../src/kube/client.js';
import type { TestCluster } from '../harness/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** deploy/base/rbac.yaml, found from test/support/ or from its compiled copy under dist/. */
export const RBAC_FILE = [path.join(here, '../../deploy/base/rbac.yaml'), path.join(here, '../../../deploy/base/rbac.yaml')]
  .find((p) => fs.existsSync(p)) ?? path.join(here, '../../deploy/base/rbac.yaml');

/** The signer name in deploy/base/rbac.yaml (citadel ca's --pod-certificate-signer default). */
export const DEFAULT_SIGNER_NAME = 'citadel.io/workload';

/**
 * The signer name the RBAC of `namespace` grants: each copy gets its own, so CAs of different test files never
 * answer each other's PodCertificateRequests or fight over one ClusterTrustBundle. Pass it as --pod-certificate-signer.
 */
export function signerNameFor(namespace: string): string {
  return `${DEFAULT_SIGNER_NAME}-${namespace}`;
}

/** deploy/base/rbac.yaml rewritten for `namespace` (its own cluster-scoped names and signer name). */
export function rbacFor(namespace: string): string {
  const [domain, signer] = DEFAULT_SIGNER_NAME.split('/') as [string, string];
  const docs = fs.readFileSync(RBAC_FILE, 'utf8').split(/^---$/m);
  return docs
    .map((doc) => {
      let out = doc.replace(/namespace: citadel-system$/gm, `namespace: ${namespace}`)
        .replaceAll(`"${DEFAULT_SIGNER_NAME}"`, `"${signerNameFor(namespace)}"`)
        .replaceAll(`"${domain}:${signer}:`, `"${domain}:${signer}-${namespace}:`);
      // Cluster-scoped objects are shared by the whole cluster: give this copy its own names (metadata.name and
      // roleRef.name are the two-space-indented `name:` lines of ClusterRoles and ClusterRoleBindings).
      if (/^kind: Cluster(Role|RoleBinding)$/m.test(out)) out = out.replace(/^ {2}name: (\S+)$/gm, `  name: $1-${namespace}`);
      return out;
    })
    .join('---');
}

/** Applies the RBAC for `namespace` (which must exist) and returns clients acting as its citadel ServiceAccount. */
export async function citadelClients(cluster: TestCluster, namespace: string): Promise<{ kube: KubeClients; kubeconfig: string }> {
  const res = await cluster.kubectl(['apply', '-f', '-'], { input: rbacFor(namespace) });
  if (res.code !== 0) throw new Error(`applying RBAC failed: ${res.stderr}`);
  const kubeconfig = await cluster.serviceAccountKubeconfig(namespace, 'citadel');
  return { kube: connectKube(kubeconfig), kubeconfig };
}
