/**
 * What a test does with the control plane: API clients, kubectl, namespaces, ServiceAccounts, tokens and
 * kubeconfigs for a ServiceAccount. Works from any process that has the ClusterInfo (a vitest worker via
 * index.ts, the demo, dev tools); it never starts or stops anything.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connectKube, type KubeClients } from '../../src/kube/client.js';
import type { ClusterInfo } from './cluster.js';
import { writeKubeconfig } from './kubeconfig.js';
import { issueLeaf } from './openssl.js';

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export interface TokenOptions {
  /** Default: the apiserver's default audience (tokens for talking to the apiserver itself). */
  audiences?: readonly string[];
  /** Binds the token to this Pod; it stops authenticating once the Pod is deleted (or replaced: uid changes). */
  podName?: string;
  /** The Pod's uid; read from the API when omitted. */
  podUid?: string;
  /** Default 3600; the apiserver's minimum is 600. */
  expirationSeconds?: number;
}

export interface TestCluster {
  readonly info: ClusterInfo;
  /** The admin (system:masters) kubeconfig. */
  readonly kubeconfigPath: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** PEM of the CA behind the apiserver's serving certificate and its client-certificate authentication. */
  readonly caPem: string;
  /** Admin API clients (cached). */
  kube(): KubeClients;
  /** Runs kubectl (admin kubeconfig unless `kubeconfig` is given); never throws on a non-zero exit. */
  kubectl(args: readonly string[], opts?: { input?: string; kubeconfig?: string; timeoutMs?: number }): Promise<CommandResult>;
  /**
   * Creates a namespace `<prefix>-<random>` and its `default` ServiceAccount (no controller-manager creates it).
   * Returns the name. Namespaces are never finalised here, so there is no point deleting them.
   */
  createNamespace(prefix: string, labels?: Record<string, string>): Promise<string>;
  /** Creates a ServiceAccount; an existing one is fine. */
  createServiceAccount(namespace: string, name: string): Promise<void>;
  /** A TokenRequest token for the ServiceAccount. Throws the API error (e.g. 404 if the SA or Pod is missing). */
  tokenFor(namespace: string, serviceAccount: string, opts?: TokenOptions): Promise<string>;
  /**
   * A kubeconfig file that authenticates as the ServiceAccount (a 24 h TokenRequest token, default audience), so
   * code runs with exactly the RBAC its Roles grant. Returns the file path (inside the cluster's temp dir).
   */
  serviceAccountKubeconfig(namespace: string, serviceAccount: string): Promise<string>;
  /** A kubeconfig that authenticates with a client certificate for any user and groups (signed by the cluster CA). */
  userKubeconfig(user: string, groups?: readonly string[]): Promise<string>;
  /**
   * Compacts etcd at its current revision (etcd's JSON gateway) and returns that revision: a watch that etcd serves
   * from an older resourceVersion then ends with 410 Gone. (The apiserver's watch cache answers from its own
   * history instead, so this shows only on a control plane started with `--watch-cache=false`.)
   */
  compactEtcd(): Promise<number>;
}

/** Wraps a running control plane's info in the helpers above. */
export function connectCluster(info: ClusterInfo): TestCluster {
  let clients: KubeClients | undefined;
  const scratch = () => {
    const dir = path.join(info.dir, 'kubeconfigs');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  };
  const unique = () => randomBytes(4).toString('hex');
  const kube = () => (clients ??= connectKube(info.kubeconfigPath));

  const createServiceAccount = async (namespace: string, name: string) => {
    try {
      await kube().core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }
  };

  const tokenFor = async (namespace: string, serviceAccount: string, opts: TokenOptions = {}) => {
    let boundObjectRef: { kind: string; apiVersion: string; name: string; uid: string } | undefined;
    if (opts.podName) {
      const uid = opts.podUid ?? (await kube().core.readNamespacedPod({ name: opts.podName, namespace })).metadata?.uid;
      if (!uid) throw new Error(`pod ${namespace}/${opts.podName} has no uid`);
      boundObjectRef = { kind: 'Pod', apiVersion: 'v1', name: opts.podName, uid };
    }
    const res = await kube().core.createNamespacedServiceAccountToken({
      name: serviceAccount,
      namespace,
      body: {
        spec: {
          audiences: opts.audiences ? [...opts.audiences] : [],
          expirationSeconds: opts.expirationSeconds ?? 3600,
          ...(boundObjectRef ? { boundObjectRef } : {}),
        },
      },
    });
    const token = res.status?.token;
    if (!token) throw new Error(`TokenRequest for ${namespace}/${serviceAccount} returned no token`);
    return token;
  };

  return {
    info,
    kubeconfigPath: info.kubeconfigPath,
    server: info.server,
    caPem: info.caPem,
    kube,
    kubectl(args, opts = {}) {
      return new Promise((resolve) => {
        const child = execFile(info.tools.kubectl, ['--kubeconfig', opts.kubeconfig ?? info.kubeconfigPath, ...args],
          { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
            const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
            resolve({ stdout, stderr, code });
          });
        if (opts.input !== undefined) child.stdin?.end(opts.input);
        else child.stdin?.end();
      });
    },
    async createNamespace(prefix, labels) {
      const base = prefix.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 50) || 'ns';
      const name = `${base}-${unique()}`;
      await kube().core.createNamespace({ body: { metadata: { name, ...(labels ? { labels } : {}) } } });
      await createServiceAccount(name, 'default');
      return name;
    },
    createServiceAccount,
    tokenFor,
    async serviceAccountKubeconfig(namespace, serviceAccount) {
      const token = await tokenFor(namespace, serviceAccount, { expirationSeconds: 24 * 3600 });
      return writeKubeconfig(path.join(scratch(), `sa-${namespace}-${serviceAccount}-${unique()}.kubeconfig`), {
        server: info.server, caPem: info.caPem, userName: `system:serviceaccount:${namespace}:${serviceAccount}`,
        user: { token }, namespace,
      });
    },
    async compactEtcd() {
      const call = async (api: string, body: unknown) => {
        const res = await fetch(`${info.etcdEndpoint}/v3/${api}`, { method: 'POST', body: JSON.stringify(body) });
        if (!res.ok) throw new Error(`etcd ${api}: HTTP ${res.status} ${await res.text()}`);
        return (await res.json()) as { header: { revision: string } };
      };
      const revision = Number((await call('kv/range', { key: Buffer.from('/').toString('base64'), limit: 1 })).header.revision);
      await call('kv/compaction', { revision, physical: true });
      return revision;
    },
    async userKubeconfig(user, groups = []) {
      const dir = scratch();
      const name = `user-${unique()}`;
      const cert = await issueLeaf({
        ca: { certPath: info.caCertPath, keyPath: info.caKeyPath }, dir, name, commonName: user,
        organizations: groups, usage: 'client',
      });
      return writeKubeconfig(path.join(dir, `${name}.kubeconfig`), {
        server: info.server, caPem: info.caPem, userName: user, namespace: 'default',
        user: { clientCertificatePem: fs.readFileSync(cert.certPath, 'utf8'), clientKeyPem: fs.readFileSync(cert.keyPath, 'utf8') },
      });
    },
  };
}
