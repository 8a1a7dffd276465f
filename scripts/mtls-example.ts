/**
 * The deploy/examples/mtls example, read from its own files, for running it as local processes (`npm run demo`,
 * test/e2e/demo.test.ts). Nothing about the workloads is repeated here: the Envoy bootstraps, the app and the
 * Pod templates come from deploy/; this module only knows how to move them from a cluster onto one host.
 *
 * One host, three "pods": each workload gets its own loopback address (127.X.Y.11, .12, .13; Linux routes all
 * of 127/8 to lo), so every port in the manifests stays as it is and only addresses change.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (works from scripts/ and from dist/scripts/). */
export const REPO_ROOT = findRepoRoot(path.dirname(fileURLToPath(import.meta.url)));
export const DEPLOY_DIR = path.join(REPO_ROOT, 'deploy');
export const EXAMPLE_DIR = path.join(DEPLOY_DIR, 'examples', 'mtls');
export const APP_FILE = path.join(EXAMPLE_DIR, 'app', 'app.mjs');
/** The label deploy/examples/mtls/kustomization.yaml puts on every object of the example. */
export const EXAMPLE_LABEL = 'app.kubernetes.io/part-of=citadel-example-mtls';
/** Where the manifests mount the agent's socket (the Envoy bootstraps point at it). */
export const SDS_SOCKET_IN_POD = '/var/run/secrets/workload-spiffe-uds/socket';

function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'deploy', 'examples', 'mtls', 'kustomization.yaml'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`deploy/examples/mtls not found above ${start}`);
  }
}

/** The Envoy bootstrap file of a workload (deploy/examples/mtls/envoy/<name>.yaml). */
export function bootstrapPath(workload: string): string {
  return path.join(EXAMPLE_DIR, 'envoy', `${workload}.yaml`);
}

export interface LocalAddresses {
  /** This workload's loopback address: replaces 0.0.0.0 and 127.0.0.1. */
  readonly self: string;
  /** In-cluster host name (`<svc>.<ns>.svc.cluster.local`) -> the peer's loopback address. */
  readonly peers: Readonly<Record<string, string>>;
  /** The agent's socket path on this host: replaces /var/run/secrets/workload-spiffe-uds/socket. */
  readonly sdsSocket: string;
}

/**
 * The in-cluster Envoy bootstrap rewritten for a local run: exactly the substitutions listed in the file's header
 * (addresses and the socket path; ports untouched). Throws if, outside comments, an in-cluster address is left
 * over (a peer missing from `peers`), so a bootstrap that gains a new address cannot silently keep it.
 */
export function localBootstrap(text: string, addr: LocalAddresses): string {
  const replacements: Array<[string, string]> = [
    [SDS_SOCKET_IN_POD, addr.sdsSocket],
    ...Object.entries(addr.peers),
    ['0.0.0.0', addr.self],
    ['127.0.0.1', addr.self],
  ];
  const lines = text.split('\n').map((line) => {
    if (/^\s*#/.test(line)) return line;
    let out = line;
    for (const [from, to] of replacements) out = out.split(from).join(to);
    return out;
  });
  const leftover = lines.find((l) => !/^\s*#/.test(l) && /svc\.cluster\.local|\b0\.0\.0\.0\b|\b127\.0\.0\.1\b|(?<![\w.-])\/var\/run\/secrets\//.test(l));
  if (leftover !== undefined) throw new Error(`bootstrap still has an in-cluster address after substitution: ${leftover.trim()}`);
  return lines.join('\n');
}

/** Replaces 0.0.0.0 and 127.0.0.1 in an environment value (LISTEN, UPSTREAMS) with the workload's address. */
export function localAddress(value: string, self: string): string {
  return value.split('0.0.0.0').join(self).split('127.0.0.1').join(self);
}

/** Loopback addresses for one run: 127.X.Y.<n> with X, Y random, so two runs on one host do not collide. */
export function loopbackSubnet(random: () => number = Math.random): (host: number) => string {
  const x = 1 + Math.floor(random() * 254);
  const y = 1 + Math.floor(random() * 254);
  return (host) => `127.${x}.${y}.${host}`;
}

/** The subset of a Deployment the local runner reads (from `kubectl get deploy -o json`). */
export interface DeploymentJson {
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: { template: { metadata?: { labels?: Record<string, string> }; spec: PodSpecJson } };
}
export interface PodSpecJson {
  serviceAccountName?: string;
  containers: ContainerJson[];
  volumes?: Array<Record<string, unknown>>;
  [key: string]: unknown;
}
export interface ContainerJson {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  [key: string]: unknown;
}

/**
 * A container's environment as the kubelet would give it: literal values, and the fieldRefs the example uses
 * (metadata.name, metadata.namespace, spec.serviceAccountName) resolved from the Pod. Throws on any other
 * valueFrom, so a manifest change that the local runner cannot honour fails loudly.
 */
export function containerEnv(container: ContainerJson, pod: { name: string; namespace: string; serviceAccount: string }): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef) {
      const field = e.valueFrom.fieldRef.fieldPath;
      const value = field === 'metadata.name' ? pod.name
        : field === 'metadata.namespace' ? pod.namespace
          : field === 'spec.serviceAccountName' ? pod.serviceAccount
            : undefined;
      if (value === undefined) throw new Error(`${container.name}: env ${e.name} uses fieldRef ${field}, which the local runner does not resolve`);
      env[e.name] = value;
    } else if (e.valueFrom) throw new Error(`${container.name}: env ${e.name} has a valueFrom the local runner does not resolve`);
    else env[e.name] = ''; // the apiserver drops empty values
  }
  return env;
}

/** The container named `name` in the template; throws if the manifest has no such container. */
export function containerOf(deployment: DeploymentJson, name: string): ContainerJson {
  const c = deployment.spec.template.spec.containers.find((x) => x.name === name);
  if (!c) throw new Error(`deployment ${deployment.metadata.namespace}/${deployment.metadata.name} has no container "${name}"`);
  return c;
}
