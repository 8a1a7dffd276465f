/**
 * Where the real binaries are: scripts/provision.sh builds or reuses them and writes their paths to
 * `<cache>/tools.env` (KEY=VALUE lines). The harness only reads that file; it never builds anything.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Tools {
  readonly etcd: string;
  readonly kubeApiserver: string;
  readonly kubectl: string;
  readonly envoy: string;
  readonly kubernetesVersion: string;
  readonly etcdVersion: string;
  readonly envoyVersion: string;
}

/** The tools.env path provision.sh writes: $CITADEL_CACHE, else $XDG_CACHE_HOME/citadel, else ~/.cache/citadel. */
export function toolsEnvPath(): string {
  const cache = process.env.CITADEL_CACHE
    ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'citadel');
  return path.join(cache, 'tools.env');
}

/**
 * Reads tools.env and checks that every binary exists.
 * Throws an Error naming the missing file or binary and the command that provisions it.
 */
export function loadTools(file = toolsEnvPath()): Tools {
  const hint = 'run `bash scripts/provision.sh` (or `npm test`, which runs it) first';
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`${file} not found: the real etcd, kube-apiserver, kubectl and Envoy are not provisioned; ${hint}`);
  }
  const env = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env.set(m[1]!, m[2]!);
  }
  const get = (key: string): string => {
    const value = env.get(key);
    if (!value) throw new Error(`${file} has no ${key}; ${hint}`);
    return value;
  };
  const bin = (key: string): string => {
    const p = get(key);
    try {
      fs.accessSync(p, fs.constants.X_OK);
    } catch {
      throw new Error(`${key}=${p} (from ${file}) is not an executable file; ${hint}`);
    }
    return p;
  };
  return {
    etcd: bin('ETCD'),
    kubeApiserver: bin('KUBE_APISERVER'),
    kubectl: bin('KUBECTL'),
    envoy: bin('ENVOY'),
    kubernetesVersion: get('KUBERNETES_VERSION'),
    etcdVersion: get('ETCD_VERSION'),
    envoyVersion: get('ENVOY_VERSION'),
  };
}
