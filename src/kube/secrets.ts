/**
 * The Secrets the CA's key material lives in (`cacerts`, `istio-ca-secret`) as plain string maps, and the
 * SelfSubjectAccessReview the CA runs at start. Nothing here decides anything: src/ca validates and chooses.
 */
import * as k8s from '@kubernetes/client-node';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { apiStatus, isConflict, isNotFound, type KubeClients } from './client.js';
import { createInformer, type Informer } from './informer.js';

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
export interface SecretStore {
  /** The Secret, or undefined when it does not exist. */
  read(name: string): Promise<SecretData | undefined>;
  /** Creates the Secret; `{created: false}` when one with that name already exists (the caller re-reads). */
  create(secret: { name: string; type: string; data: Record<string, string>; labels?: Record<string, string> }): Promise<CreateSecretResult>;
  /** Replaces data, conditional on `resourceVersion`; a conflict or a deleted Secret is an outcome, not an error. */
  update(name: string, resourceVersion: string, data: Record<string, string>): Promise<UpdateSecretResult>;
}

/** A SecretStore for `namespace`. Needs secrets get/create/update there. */
export function createSecretStore(kube: Pick<KubeClients, 'core'>, namespace: string): SecretStore {
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
  /** The last seen content, undefined when the Secret does not exist (or the first list has not finished). */
  current(): SecretData | undefined;
  /** Resolves once the first list has completed. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Watches Secret `name` in `namespace` (list+watch with a field selector; resumes after errors), calling
 * `onChange` with the new content, or undefined once it is deleted. Needs secrets list/watch in the namespace.
 */
export function watchSecret(opts: {
  kube: KubeClients;
  namespace: string;
  name: string;
  clock: Clock;
  log: Logger;
  onChange: (secret: SecretData | undefined) => void;
  onError?: (err: unknown) => void;
}): SecretWatch {
  const { kube, namespace, name } = opts;
  const fieldSelector = `metadata.name=${name}`;
  const informer: Informer<k8s.V1Secret> = createInformer<k8s.V1Secret>({
    config: kube.config,
    resource: `secret/${name}`,
    path: `/api/v1/namespaces/${namespace}/secrets`,
    fieldSelector,
    list: () => kube.core.listNamespacedSecret({ namespace, fieldSelector }),
    clock: opts.clock,
    log: opts.log,
    onError: opts.onError,
  });
  let last: string | undefined;
  const emit = () => {
    const s = informer.get(name, namespace);
    const data = s ? toSecretData(s) : undefined;
    // Resyncs and relists deliver the same object again; only report real changes.
    const key = data ? `${data.resourceVersion}` : 'absent';
    if (key === last) return;
    last = key;
    opts.onChange(data);
  };
  informer.on('add', emit);
  informer.on('update', emit);
  informer.on('delete', emit);
  return {
    current: () => {
      const s = informer.get(name, namespace);
      return s ? toSecretData(s) : undefined;
    },
    async start() {
      await informer.start();
      last = informer.get(name, namespace)?.metadata?.resourceVersion ?? 'absent';
    },
    stop: () => informer.stop(),
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
