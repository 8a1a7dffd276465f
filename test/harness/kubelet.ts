/**
 * The "kubelet simulator". There is no kubelet in the test control plane, so a "pod" here is:
 *   - a Pod object in the API (it stays Pending: nothing schedules or runs it), and
 *   - a pod root dir laid out the way kubelet + Istio's injection mount things, relative to which an agent runs
 *     (cwd = root, so Istio's ./var/run/secrets/... defaults resolve):
 *       <root>/var/run/secrets/tokens/istio-token        projected token, audience istio-ca, bound to the Pod
 *       <root>/var/run/secrets/istio/root-cert.pem       the namespace's istio-ca-root-cert ConfigMap (every key of
 *                                                        it, e.g. spiffe-bundle.json, lands in this directory)
 *       <root>/var/run/secrets/workload-spiffe-uds/      where the agent puts its SDS socket
 *       <root>/etc/istio/pod/labels                      the Pod's labels (downward API format), when given
 *       <root>/<dir>/<key>                               each `configMapMounts` ConfigMap, kept in step
 * Files are replaced atomically (write + rename), as kubelet's atomic writer does. Roots are short
 * (/tmp/cp-XXXXXX) so the UDS path fits the 108-byte sun_path limit.
 */
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { trackDir, untrackDir } from './reaper.js';
import type { TestCluster } from './test-cluster.js';

export const ROOT_CERT_CONFIGMAP = 'istio-ca-root-cert';
export const ROOT_CERT_KEY = 'root-cert.pem';
export const TOKEN_RELATIVE_PATH = 'var/run/secrets/tokens/istio-token';
export const ROOT_CERT_RELATIVE_PATH = 'var/run/secrets/istio/root-cert.pem';
export const SDS_SOCKET_RELATIVE_PATH = 'var/run/secrets/workload-spiffe-uds/socket';
/** Where Istio's injection puts the downward-API labels file (and where `citadel agent` reads it by default). */
export const LABELS_RELATIVE_PATH = 'etc/istio/pod/labels';
/** Where the example's manifests mount the citadel-authz ConfigMap (the agent's --authz-policy-file default). */
export const AUTHZ_RELATIVE_DIR = 'var/run/secrets/citadel/authz';

export interface StartPodOptions {
  namespace: string;
  /** Created if missing. */
  serviceAccount: string;
  /** Default `pod-<random>`. */
  name?: string;
  /** Pod root dir to use (created if missing, left in place on delete). Default: a fresh /tmp/cp-XXXXXX. */
  dir?: string;
  labels?: Record<string, string>;
  /** Audience of the projected token; default istio-ca. */
  audience?: string;
  /** Default 3600 s (the apiserver's minimum is 600). */
  tokenExpirationSeconds?: number;
  /** Keep root-cert.pem in step with the ConfigMap through a watch (default true). */
  watchRootCert?: boolean;
  /**
   * How long a ConfigMap change takes to reach root-cert.pem through the watch (default 0). A real kubelet writes
   * it at its next volume sync, up to about a minute later; the initial content at start is never delayed.
   */
  rootCertLagMs?: number;
  /**
   * The Pod's spec, e.g. a Deployment's template, so admission (Pod Security) judges the real thing. Default: one
   * placeholder container. `serviceAccountName` is always set to `serviceAccount`.
   */
  podSpec?: k8s.V1PodSpec;
  /** Binds the Pod to this Node (spec.nodeName), as the scheduler would; needed for PodCertificateRequests. */
  nodeName?: string;
  /**
   * More ConfigMaps mounted as volumes: every key becomes a file in `<root>/<dir>`, replaced atomically and kept
   * in step through a watch (like the kubelet, though within about a second instead of about a minute).
   */
  configMapMounts?: ReadonlyArray<{ readonly configMap: string; readonly dir: string }>;
}

export interface SimulatedPod {
  readonly name: string;
  readonly uid: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The pod root dir: run the agent with this as its cwd. */
  readonly root: string;
  readonly tokenPath: string;
  readonly rootCertPath: string;
  /** Where Istio's agent (and ours, by default) listens for Envoy's SDS: <root>/var/run/secrets/workload-spiffe-uds/socket. */
  readonly sdsSocketPath: string;
  /** Requests a fresh bound token and replaces the token file atomically; returns the token. */
  refreshToken(): Promise<string>;
  /** Copies the ConfigMap's root-cert.pem into the pod now. Returns false if the ConfigMap (or key) is absent. */
  syncRootCert(): Promise<boolean>;
  /** Resolves once every `configMapMounts` ConfigMap has been written into the pod at least once. */
  waitForMounts(opts?: { timeoutMs?: number }): Promise<void>;
  /** Resolves with the file's content once root-cert.pem exists (and, if given, satisfies `predicate`). */
  waitForRootCert(opts?: { timeoutMs?: number; predicate?: (pem: string) => boolean }): Promise<string>;
  /** Stops the watch, deletes the Pod (grace period 0) and removes the root dir if the simulator made it. Idempotent. */
  delete(): Promise<void>;
}

/** Writes `content` to `file` atomically (temp file in the same dir + rename). */
export function writeFileAtomic(file: string, content: string, mode = 0o644): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  fs.writeFileSync(tmp, content, { mode });
  fs.renameSync(tmp, file);
}

/**
 * Creates the Pod object and the pod root dir with a token bound to the Pod and (if the ConfigMap exists) the
 * root certificate. Throws the API error if the Pod or the TokenRequest is refused.
 */
export async function startPod(cluster: TestCluster, opts: StartPodOptions): Promise<SimulatedPod> {
  const { namespace, serviceAccount } = opts;
  const name = opts.name ?? `pod-${randomBytes(3).toString('hex')}`;
  const { core, config } = cluster.kube();
  await cluster.createServiceAccount(namespace, serviceAccount);

  const ownsDir = !opts.dir;
  const root = opts.dir ?? fs.mkdtempSync('/tmp/cp-');
  if (ownsDir) trackDir(root);
  else fs.mkdirSync(root, { recursive: true });
  const tokenPath = path.join(root, TOKEN_RELATIVE_PATH);
  const rootCertPath = path.join(root, ROOT_CERT_RELATIVE_PATH);
  const sdsSocketPath = path.join(root, SDS_SOCKET_RELATIVE_PATH);
  for (const p of [tokenPath, rootCertPath, sdsSocketPath]) fs.mkdirSync(path.dirname(p), { recursive: true });

  const removeDir = () => {
    if (!ownsDir) return;
    fs.rmSync(root, { recursive: true, force: true });
    untrackDir(root);
  };

  let uid: string;
  try {
    const pod = await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name, ...(opts.labels ? { labels: opts.labels } : {}) },
        spec: {
          // Nothing runs it; the image only has to be a valid reference.
          ...(opts.podSpec ?? { containers: [{ name: 'app', image: 'registry.invalid/citadel-test-app:1' }] }),
          serviceAccountName: serviceAccount,
          ...(opts.nodeName ? { nodeName: opts.nodeName } : {}),
        },
      },
    });
    uid = pod.metadata!.uid!;
  } catch (err) {
    removeDir();
    throw err;
  }

  const refreshToken = async () => {
    const token = await cluster.tokenFor(namespace, serviceAccount, {
      audiences: [opts.audience ?? 'istio-ca'],
      podName: name,
      podUid: uid,
      expirationSeconds: opts.tokenExpirationSeconds ?? 3600,
    });
    writeFileAtomic(tokenPath, token, 0o600);
    return token;
  };

  // Like kubelet's ConfigMap volume: every key becomes a file beside root-cert.pem (e.g. citadel's spiffe-bundle.json).
  const lastWritten = new Map<string, string>();
  let stopped = false;
  const writeConfigMapData = (data: Record<string, string> | undefined) => {
    for (const [key, value] of Object.entries(data ?? {})) {
      // A watch event can still arrive after delete() removed the dir; it has nowhere to go.
      if (stopped || lastWritten.get(key) === value || key.includes('/')) continue;
      lastWritten.set(key, value);
      writeFileAtomic(path.join(path.dirname(rootCertPath), key), value);
    }
  };
  const syncRootCert = async () => {
    try {
      const cm = await core.readNamespacedConfigMap({ name: ROOT_CERT_CONFIGMAP, namespace });
      writeConfigMapData(cm.data);
      return cm.data?.[ROOT_CERT_KEY] !== undefined;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return false;
      throw err;
    }
  };

  const watches: AbortController[] = [];
  /** Keeps calling `write` with the ConfigMap's data through a watch, restarted when it ends, until stopped. */
  const watchConfigMap = async (configMap: string, write: (data: Record<string, string> | undefined) => void): Promise<void> => {
    if (stopped) return;
    try {
      const watch = await new k8s.Watch(config).watch(
        `/api/v1/namespaces/${namespace}/configmaps`,
        { fieldSelector: `metadata.name=${configMap}` },
        (phase, obj: k8s.V1ConfigMap) => {
          // Like kubelet, keep the last content when the ConfigMap is deleted.
          if (phase !== 'ADDED' && phase !== 'MODIFIED') return;
          const apply = () => {
            try {
              write(obj.data);
            } catch (err) {
              // Never throw out of a watch callback (it would crash the test worker); say why in the log.
              console.error(`kubelet simulator: cannot write ConfigMap ${configMap} into ${root}: ${(err as Error).message}`);
            }
          };
          // Every change of the root ConfigMap is held back by the same lag, so the files still go through them in order.
          if (opts.rootCertLagMs && configMap === ROOT_CERT_CONFIGMAP) setTimeout(apply, opts.rootCertLagMs).unref();
          else apply();
        },
        () => {
          // Watches end (timeouts, apiserver restarts); start a new one unless we were stopped.
          if (!stopped) setTimeout(() => void watchConfigMap(configMap, write), 200).unref();
        },
      );
      watches.push(watch);
      if (stopped) watch.abort();
    } catch {
      if (!stopped) setTimeout(() => void watchConfigMap(configMap, write), 500).unref();
    }
  };
  const mounted = new Set<string>();
  const mountWriter = (m: { configMap: string; dir: string }) => {
    const dir = path.join(root, m.dir);
    fs.mkdirSync(dir, { recursive: true });
    const last = new Map<string, string>();
    return (data: Record<string, string> | undefined) => {
      if (stopped || !data) return;
      for (const [key, value] of Object.entries(data)) {
        if (last.get(key) === value) continue;
        last.set(key, value);
        writeFileAtomic(path.join(dir, key), value);
      }
      mounted.add(m.configMap);
    };
  };

  try {
    await refreshToken();
    await syncRootCert();
    if (opts.watchRootCert ?? true) await watchConfigMap(ROOT_CERT_CONFIGMAP, writeConfigMapData);
    if (opts.labels) {
      // The downward API's format: one key="value" per line, values quoted.
      const labelsPath = path.join(root, LABELS_RELATIVE_PATH);
      fs.mkdirSync(path.dirname(labelsPath), { recursive: true });
      writeFileAtomic(labelsPath, Object.entries(opts.labels).map(([k, v]) => `${k}=${JSON.stringify(v)}\n`).join(''));
    }
    for (const m of opts.configMapMounts ?? []) await watchConfigMap(m.configMap, mountWriter(m));
  } catch (err) {
    stopped = true;
    for (const w of watches) w.abort();
    await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }).catch(() => {});
    removeDir();
    throw err;
  }

  let deleting: Promise<void> | undefined;
  return {
    name, uid, namespace, serviceAccount, root, tokenPath, rootCertPath, sdsSocketPath,
    refreshToken,
    syncRootCert,
    async waitForMounts({ timeoutMs = 30_000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      const missing = () => (opts.configMapMounts ?? []).map((m) => m.configMap).filter((n) => !mounted.has(n));
      while (missing().length > 0) {
        if (Date.now() > deadline) throw new Error(`pod ${namespace}/${name}: ConfigMap(s) ${missing().join(', ')} not there after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async waitForRootCert({ timeoutMs = 30_000, predicate } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let pem: string | undefined;
        try {
          pem = fs.readFileSync(rootCertPath, 'utf8');
        } catch {
          // not there yet
        }
        if (pem !== undefined && (!predicate || predicate(pem))) return pem;
        if (Date.now() > deadline) {
          throw new Error(`${rootCertPath}: no ${predicate ? 'matching ' : ''}root certificate from ConfigMap ${namespace}/${ROOT_CERT_CONFIGMAP} after ${timeoutMs} ms`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    delete() {
      deleting ??= (async () => {
        stopped = true;
        for (const w of watches) w.abort();
        try {
          await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
        } catch (err) {
          if ((err as { code?: number }).code !== 404) throw err;
        } finally {
          removeDir();
        }
      })();
      return deleting;
    },
  };
}
