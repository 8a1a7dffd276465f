/**
 * The Secrets the CA's key material lives in (`cacerts`, `istio-ca-secret`) as plain string maps, and the
 * SelfSubjectAccessReview the CA runs at start. Nothing here decides anything: src/ca validates and chooses.
 */
import * as k8s from '@kubernetes/client-node';
import { backoffDelay } from '../backoff.js';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { apiStatus, isConflict, isNotFound, type KubeClients } from './client.js';

/** A Secret reduced to what the keyring needs: decoded data (UTF-8) and the version for conditional updates. */
export interface SecretData {
  readonly name: string;
  readonly namespace: string;
  readonly type?: string;
  readonly data: Readonly<Record<string, string>>;
  readonly resourceVersion?: string;
  readonly uid?: string;
}

function toSecretData(s: k8s.V1Secret): SecretData {
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.data ?? {})) data[k] = Buffer.from(v, 'base64').toString('utf8');
  for (const [k, v] of Object.entries(s.stringData ?? {})) data[k] = v;
  return {
    name: s.metadata?.name ?? '',
    namespace: s.metadata?.namespace ?? '',
    type: s.type,
    data,
    resourceVersion: s.metadata?.resourceVersion,
    uid: s.metadata?.uid,
  };
}

function encodeData(data: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) out[k] = Buffer.from(v, 'utf8').toString('base64');
  return out;
}

export type CreateSecretResult = { created: true; secret: SecretData } | { created: false };
export type UpdateSecretResult = { updated: true; secret: SecretData } | { updated: false; reason: 'conflict' | 'gone' };

/** Reads, creates and updates Secrets of one namespace. Other failures (403, 5xx) are thrown as the client's errors. */
export interface NamespaceSecrets {
  /** The Secret, or undefined when it does not exist. */
  read(name: string): Promise<SecretData | undefined>;
  /** Creates the Secret; `{created: false}` when one with that name already exists (the caller re-reads). */
  create(secret: { name: string; type: string; data: Record<string, string>; labels?: Record<string, string> }): Promise<CreateSecretResult>;
  /** Replaces data, conditional on `resourceVersion`; a conflict or a deleted Secret is an outcome, not an error. */
  update(name: string, resourceVersion: string, data: Record<string, string>): Promise<UpdateSecretResult>;
}

/** A NamespaceSecrets for `namespace`. Needs secrets get/create/update there. */
export function createNamespaceSecrets(kube: Pick<KubeClients, 'core'>, namespace: string): NamespaceSecrets {
  return {
    async read(name) {
      try {
        return toSecretData(await kube.core.readNamespacedSecret({ name, namespace }));
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
    async create({ name, type, data, labels }) {
      try {
        const s = await kube.core.createNamespacedSecret({
          namespace,
          body: { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace, ...(labels ? { labels } : {}) }, type, data: encodeData(data) },
        });
        return { created: true, secret: toSecretData(s) };
      } catch (err) {
        if (isConflict(err)) return { created: false };
        throw err;
      }
    },
    async update(name, resourceVersion, data) {
      let current: k8s.V1Secret;
      try {
        current = await kube.core.readNamespacedSecret({ name, namespace });
      } catch (err) {
        if (isNotFound(err)) return { updated: false, reason: 'gone' };
        throw err;
      }
      if (current.metadata?.resourceVersion !== resourceVersion) return { updated: false, reason: 'conflict' };
      try {
        const s = await kube.core.replaceNamespacedSecret({
          name,
          namespace,
          body: { ...current, metadata: { ...current.metadata, resourceVersion }, data: encodeData(data), stringData: undefined },
        });
        return { updated: true, secret: toSecretData(s) };
      } catch (err) {
        if (isConflict(err)) return { updated: false, reason: 'conflict' };
        if (isNotFound(err)) return { updated: false, reason: 'gone' };
        throw err;
      }
    },
  };
}

/** Watches one named Secret. */
export interface SecretWatch {
  /** The last seen content, undefined when the Secret does not exist (or the first read has not finished). */
  current(): SecretData | undefined;
  /** Resolves once the first read has completed (or failed: the loop keeps retrying). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Follows Secret `name` in `namespace`: GET, then a watch on that one name (field selector metadata.name, which
 * RBAC authorises with resourceNames, so no `list` permission is needed) from the version read; when the watch
 * ends (server timeout every `watchTimeoutSeconds`, error, 410) it starts over with a GET, backing off after
 * failures. `onChange` gets the new content, or undefined once the Secret is deleted; repeats are suppressed.
 * Needs secrets get/watch on that name.
 */
export function watchSecret(opts: {
  kube: KubeClients;
  namespace: string;
  name: string;
  clock: Clock;
  log: Logger;
  onChange: (secret: SecretData | undefined) => void;
  onError?: (err: unknown) => void;
  /** Default 60 s: also the period of the GET backstop. */
  watchTimeoutSeconds?: number;
}): SecretWatch {
  const { kube, namespace, name, clock } = opts;
  const log = opts.log.child({ secret: `${namespace}/${name}` });
  const store = createNamespaceSecrets(kube, namespace);
  const watcher = new k8s.Watch(kube.config);
  const timeoutSeconds = opts.watchTimeoutSeconds ?? 60;
  let current: SecretData | undefined;
  let lastKey: string | undefined;
  let stopped = false;
  let failures = 0;
  let abort: AbortController | undefined;
  let timer: Timer | undefined;
  let firstDone: (() => void) | undefined;
  const first = new Promise<void>((resolve) => {
    firstDone = resolve;
  });

  const deliver = (data: SecretData | undefined) => {
    current = data;
    const key = data ? `v${data.resourceVersion}` : 'absent';
    if (key === lastKey) return;
    const initial = lastKey === undefined;
    lastKey = key;
    if (!initial) opts.onChange(data);
  };

  const retry = (err: unknown) => {
    if (stopped) return;
    failures++;
    opts.onError?.(err);
    const delay = backoffDelay(failures, { initialMs: 200, maxMs: 30_000 });
    log.warn({ err, retryInMs: delay }, 'secret watch failed; retrying');
    timer = clock.setTimer(() => void cycle(), delay);
  };

  const cycle = async (): Promise<void> => {
    if (stopped) return;
    let data: SecretData | undefined;
    try {
      data = await store.read(name);
    } catch (err) {
      firstDone?.();
      return retry(err);
    }
    if (stopped) return;
    deliver(data);
    firstDone?.();
    const params: Record<string, string | number | boolean> = { fieldSelector: `metadata.name=${name}`, timeoutSeconds, allowWatchBookmarks: true };
    if (data?.resourceVersion) params.resourceVersion = data.resourceVersion;
    let ended = false;
    const onEnd = (err: unknown) => {
      if (ended) return;
      ended = true;
      backstop?.cancel();
      if (stopped) return;
      if (err && !(err instanceof Error && err.name === 'AbortError')) return retry(err);
      failures = 0;
      void cycle();
    };
    let backstop: Timer | undefined;
    try {
      abort = await watcher.watch(`/api/v1/namespaces/${namespace}/secrets`, params, (phase, obj) => {
        if (phase === 'BOOKMARK') return;
        if (phase === 'ERROR') {
          // 410 Gone and friends: start over from a fresh GET.
          abort?.abort();
          return;
        }
        const s = obj as k8s.V1Secret;
        if (s?.metadata?.name !== name) return;
        deliver(phase === 'DELETED' ? undefined : toSecretData(s));
      }, onEnd);
      // A connection that died silently: the server would have closed the watch by now.
      if (!ended) backstop = clock.setTimer(() => abort?.abort(), (timeoutSeconds + 15) * 1000);
    } catch (err) {
      onEnd(err);
    }
  };

  return {
    current: () => current,
    start() {
      void cycle();
      return first;
    },
    async stop() {
      stopped = true;
      timer?.cancel();
      abort?.abort();
    },
  };
}

/**
 * Asks the apiserver whether the caller may do `verb` on `resource` (SelfSubjectAccessReview). Resolves with
 * the verdict and the apiserver's reason; rejects when the question itself fails.
 */
export async function canI(
  kube: Pick<KubeClients, 'authz'>,
  attrs: { verb: string; group: string; resource: string; namespace?: string },
): Promise<{ allowed: boolean; reason?: string }> {
  const res = await kube.authz.createSelfSubjectAccessReview({
    body: {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: { verb: attrs.verb, group: attrs.group, resource: attrs.resource, namespace: attrs.namespace } },
    },
  });
  return { allowed: res.status?.allowed === true, reason: res.status?.reason || res.status?.evaluationError || undefined };
}

/** HTTP status of a Kubernetes client error (re-exported for callers outside src/kube). */
export { apiStatus };
