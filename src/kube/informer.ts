/**
 * Informers: a local cache of one kind of object, kept current by list + watch, readable synchronously, with
 * add/update/delete callbacks. Built on @kubernetes/client-node's ListWatch, which already relists after a
 * `410 Gone` (in the HTTP status or as an ERROR event in the stream) and re-watches when the server closes a
 * watch; on any other failure (connection refused, 5xx, 403, a failed list) it emits 'error' and stops for good.
 * This wrapper restarts it after a backoff, so the cache converges again after the apiserver comes back. Each
 * watch also asks the server to end it after `watchTimeoutSeconds` and aborts it client-side shortly after that,
 * so a silently dead connection cannot leave the cache stale forever.
 */
import * as k8s from '@kubernetes/client-node';
import { backoffDelay } from '../backoff.js';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import type { KubeClients } from './client.js';

export type InformerEvent = 'add' | 'update' | 'delete';

export interface Informer<T> {
  /** Short name for logs and metrics, e.g. "namespaces". */
  readonly resource: string;
  /** The cached object, or undefined. Cluster-scoped objects: omit `namespace`. */
  get(name: string, namespace?: string): T | undefined;
  /** Every cached object (of one namespace when given). */
  list(namespace?: string): readonly T[];
  /** True once a list has completed, so the cache reflects the cluster. */
  hasSynced(): boolean;
  on(event: InformerEvent, cb: (obj: T) => void): void;
  /**
   * Lists and starts watching; resolves once the cache has synced (retrying with backoff until then) or
   * the informer is stopped.
   */
  start(): Promise<void>;
  /** Stops watching; the cache keeps its last content. */
  stop(): Promise<void>;
}

export interface InformerOptions<T extends k8s.KubernetesObject> {
  readonly config: k8s.KubeConfig;
  readonly resource: string;
  /** API path to watch, e.g. `/api/v1/namespaces`. */
  readonly path: string;
  /** Lists with the same selectors as the watch. */
  readonly list: () => Promise<k8s.KubernetesListObject<T>>;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  readonly clock: Clock;
  readonly log: Logger;
  /** Restart backoff after errors: base doubles per consecutive failure up to max. Defaults 200 ms / 30 s. */
  readonly restartBaseMs?: number;
  readonly restartMaxMs?: number;
  /** Server-side watch timeout; default 300 s. */
  readonly watchTimeoutSeconds?: number;
  /** Called on every watch/list failure (before the restart is scheduled). */
  readonly onError?: (err: unknown) => void;
  /**
   * Reduces each listed or watched object to what the readers use before it is cached (e.g. metaOnly); the cache
   * of a large cluster holds only that.
   */
  readonly slim?: (obj: T) => T;
  /** Watch PartialObjectMetadata (`list` must ask for it too, with metadataListOptions). */
  readonly metadataOnly?: boolean;
}

/**
 * The metadata the controllers read (no managedFields, the largest part of most objects) and, for Namespaces,
 * status.phase: what is cached of objects that are only told apart by name, labels and deletion.
 */
export function metaOnly<T extends k8s.KubernetesObject & { status?: { phase?: string } }>(obj: T): T {
  const m = obj.metadata;
  const metadata: k8s.V1ObjectMeta = {
    name: m?.name,
    namespace: m?.namespace,
    uid: m?.uid,
    resourceVersion: m?.resourceVersion,
    labels: m?.labels,
    annotations: m?.annotations,
    deletionTimestamp: m?.deletionTimestamp,
    ownerReferences: m?.ownerReferences,
  };
  for (const key of Object.keys(metadata) as (keyof k8s.V1ObjectMeta)[]) if (metadata[key] === undefined) delete metadata[key];
  const slim = { apiVersion: obj.apiVersion, kind: obj.kind, metadata } as T;
  if (obj.status?.phase !== undefined) (slim as { status?: { phase?: string } }).status = { phase: obj.status.phase };
  return slim;
}

/**
 * Asks the apiserver for PartialObjectMetadata instead of whole objects (as client-go's metadata informers do): the
 * apiserver drops spec, status and the rest before sending, so neither the wire nor the parser sees them.
 */
const METADATA_ACCEPT = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1';
const METADATA_LIST_ACCEPT = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';

/** Request options for a generated list call that return the items' metadata only (the object API takes observables). */
export const metadataListOptions: k8s.ConfigurationOptions = {
  middleware: [
    {
      pre: (ctx: k8s.RequestContext) => {
        ctx.setHeaderParam('Accept', METADATA_LIST_ACCEPT);
        return new k8s.Observable(Promise.resolve(ctx));
      },
      post: (res: k8s.ResponseContext) => {
        // The generated deserializer knows plain application/json only; the body is JSON either way.
        if (res.headers['content-type']?.startsWith('application/json;')) res.headers['content-type'] = 'application/json';
        return new k8s.Observable(Promise.resolve(res));
      },
    },
  ],
  middlewareMergeStrategy: 'append',
};

/** The same KubeConfig, with watches asking for metadata only. */
function metadataWatchConfig(config: k8s.KubeConfig): k8s.KubeConfig {
  const wrapped = Object.create(config) as k8s.KubeConfig;
  wrapped.applySecurityAuthentication = async (ctx) => {
    await config.applySecurityAuthentication(ctx);
    ctx.setHeaderParam('Accept', METADATA_ACCEPT);
  };
  return wrapped;
}

/** A Watch that bounds each watch's lifetime: a server timeout plus a client-side abort as a backstop. */
class BoundedWatch extends k8s.Watch {
  constructor(
    config: k8s.KubeConfig,
    private readonly clock: Clock,
    private readonly timeoutSeconds: number,
    private readonly slim?: (obj: unknown) => unknown,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    let timer: Timer | undefined;
    let finished = false;
    const wrappedDone = (err: unknown) => {
      finished = true;
      timer?.cancel();
      done(err);
    };
    const params = { ...queryParams, timeoutSeconds: this.timeoutSeconds, allowWatchBookmarks: true };
    const slim = this.slim;
    // ERROR events carry a Status, not an object of the kind: those go through as they are.
    const slimmed = slim ? (phase: string, obj: unknown, watchObj?: unknown) => callback(phase, phase === 'ERROR' ? obj : slim(obj), watchObj) : callback;
    const controller = await super.watch(path, params, slimmed, wrappedDone);
    if (!finished) {
      // Backstop for a connection that died without a FIN: the server would have ended the watch by now.
      timer = this.clock.setTimer(() => controller.abort(), (this.timeoutSeconds + 30) * 1000);
    }
    return controller;
  }
}

/** Creates an informer (not started). */
export function createInformer<T extends k8s.KubernetesObject>(opts: InformerOptions<T>): Informer<T> {
  const log = opts.log.child({ informer: opts.resource });
  const slim = opts.slim;
  const watch = new BoundedWatch(opts.metadataOnly ? metadataWatchConfig(opts.config) : opts.config, opts.clock, opts.watchTimeoutSeconds ?? 300, slim as ((obj: unknown) => unknown) | undefined);
  const list = slim
    ? async () => {
        const res = await opts.list();
        // An empty PartialObjectMetadataList comes with `items: null`.
        return { ...res, items: (res.items ?? []).map(slim) };
      }
    : opts.list;
  const lw = new k8s.ListWatch<T>(opts.path, watch, list, false, opts.labelSelector, opts.fieldSelector);
  const baseMs = opts.restartBaseMs ?? 200;
  const maxMs = opts.restartMaxMs ?? 30_000;
  let stopped = true;
  let synced = false;
  let failures = 0;
  let restartTimer: Timer | undefined;
  let cycleFailed = false;
  let inflight: Promise<void> | undefined;
  let resolveSynced: (() => void) | undefined;
  let syncedPromise: Promise<void> | undefined;

  const runCycle = async () => {
    cycleFailed = false;
    const attempt = lw.start();
    inflight = attempt;
    await attempt;
    if (inflight === attempt) inflight = undefined;
    if (stopped) {
      // A stop() that raced the list leaves a watch ListWatch started after its own stop check.
      await lw.stop();
      return;
    }
    if (!cycleFailed) {
      failures = 0;
      if (!synced) log.debug({ objects: lw.list().length }, 'informer synced');
      synced = true;
      resolveSynced?.();
    }
  };

  lw.on('error', (err: unknown) => {
    cycleFailed = true;
    if (stopped) return; // aborting our own watch on stop() surfaces as an error
    failures++;
    const delay = backoffDelay(failures, { initialMs: baseMs, maxMs });
    log.warn({ err: describeError(err), retryInMs: delay, failures }, 'list/watch failed; restarting');
    opts.onError?.(err);
    restartTimer?.cancel();
    restartTimer = opts.clock.setTimer(() => {
      restartTimer = undefined;
      if (!stopped) void runCycle();
    }, delay);
  });

  return {
    resource: opts.resource,
    get: (name, namespace) => lw.get(name, namespace),
    list: (namespace) => lw.list(namespace),
    hasSynced: () => synced,
    on: (event, cb) => lw.on(event, cb),
    start() {
      if (!stopped) return syncedPromise ?? Promise.resolve();
      stopped = false;
      syncedPromise = new Promise<void>((resolve) => {
        resolveSynced = resolve;
      });
      void runCycle();
      return syncedPromise;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      restartTimer?.cancel();
      restartTimer = undefined;
      resolveSynced?.();
      await lw.stop();
      const pending = inflight;
      if (pending) {
        await pending.catch(() => undefined);
        await lw.stop();
      }
    },
  };
}

function describeError(err: unknown): string {
  if (err instanceof k8s.ApiException) return `HTTP ${err.code}`;
  if (err instanceof Error) {
    const status = (err as { statusCode?: number }).statusCode;
    return status ? `HTTP ${status} ${err.message}` : err.message;
  }
  return String(err);
}

/** The options every informer of one controller set shares. */
export interface InformerCommon {
  readonly clock: Clock;
  readonly log: Logger;
  readonly onError?: (resource: string, err: unknown) => void;
  readonly restartBaseMs?: number;
  readonly restartMaxMs?: number;
  readonly watchTimeoutSeconds?: number;
}

function common(resource: string, c: InformerCommon) {
  return {
    resource,
    clock: c.clock,
    log: c.log,
    restartBaseMs: c.restartBaseMs,
    restartMaxMs: c.restartMaxMs,
    watchTimeoutSeconds: c.watchTimeoutSeconds,
    onError: c.onError ? (err: unknown) => c.onError!(resource, err) : undefined,
  };
}

/**
 * Every Namespace, metadata only (a terminating namespace has its deletionTimestamp set). Needs namespaces
 * list/watch.
 */
export function namespaceInformer(kube: KubeClients, c: InformerCommon): Informer<k8s.V1Namespace> {
  return createInformer<k8s.V1Namespace>({
    ...common('namespaces', c),
    config: kube.config,
    path: '/api/v1/namespaces',
    list: () => kube.core.listNamespace({}, metadataListOptions),
    metadataOnly: true,
    slim: metaOnly,
  });
}

/** The object as it is, minus metadata.managedFields (often the largest part, and read by nobody here). */
export function withoutManagedFields<T extends k8s.KubernetesObject>(obj: T): T {
  if (!obj.metadata?.managedFields) return obj;
  const { managedFields: _dropped, ...metadata } = obj.metadata;
  return { ...obj, metadata };
}

/** ConfigMaps with one name in every namespace (field selector metadata.name). Needs configmaps list/watch cluster-wide. */
export function namedConfigMapInformer(kube: KubeClients, name: string, c: InformerCommon): Informer<k8s.V1ConfigMap> {
  const fieldSelector = `metadata.name=${name}`;
  return createInformer<k8s.V1ConfigMap>({
    ...common('configmaps', c),
    config: kube.config,
    path: '/api/v1/configmaps',
    fieldSelector,
    list: () => kube.core.listConfigMapForAllNamespaces({ fieldSelector }),
    slim: withoutManagedFields,
  });
}

/** Every ServiceAccount, metadata only. Needs serviceaccounts list/watch cluster-wide. */
export function serviceAccountInformer(kube: KubeClients, c: InformerCommon): Informer<k8s.V1ServiceAccount> {
  return createInformer<k8s.V1ServiceAccount>({
    ...common('serviceaccounts', c),
    config: kube.config,
    path: '/api/v1/serviceaccounts',
    list: () => kube.core.listServiceAccountForAllNamespaces({}, metadataListOptions),
    metadataOnly: true,
    slim: metaOnly,
  });
}

/** Secrets of one type in every namespace (field selector type). Needs secrets list/watch cluster-wide. */
export function secretTypeInformer(kube: KubeClients, type: string, c: InformerCommon): Informer<k8s.V1Secret> {
  const fieldSelector = `type=${type}`;
  return createInformer<k8s.V1Secret>({
    ...common('secrets', c),
    config: kube.config,
    path: '/api/v1/secrets',
    fieldSelector,
    list: () => kube.core.listSecretForAllNamespaces({ fieldSelector }),
    slim: withoutManagedFields,
  });
}

/** PodCertificateRequests of one signer in every namespace (field selector spec.signerName). Needs list/watch. */
export function podCertificateRequestInformer(kube: KubeClients, signerName: string, c: InformerCommon): Informer<k8s.V1beta1PodCertificateRequest> {
  const fieldSelector = `spec.signerName=${signerName}`;
  return createInformer<k8s.V1beta1PodCertificateRequest>({
    ...common('podcertificaterequests', c),
    config: kube.config,
    path: '/apis/certificates.k8s.io/v1beta1/podcertificaterequests',
    fieldSelector,
    list: () => kube.certificates.listPodCertificateRequestForAllNamespaces({ fieldSelector }),
  });
}

/** ClusterTrustBundles linked to one signer (field selector spec.signerName). Needs list/watch. */
export function clusterTrustBundleInformer(kube: KubeClients, signerName: string, c: InformerCommon): Informer<k8s.V1beta1ClusterTrustBundle> {
  const fieldSelector = `spec.signerName=${signerName}`;
  return createInformer<k8s.V1beta1ClusterTrustBundle>({
    ...common('clustertrustbundles', c),
    config: kube.config,
    path: '/apis/certificates.k8s.io/v1beta1/clustertrustbundles',
    fieldSelector,
    list: () => kube.certificates.listClusterTrustBundle({ fieldSelector }),
  });
}

/** Istio's AuthorizationPolicy (security.istio.io/v1) in every namespace. Needs authorizationpolicies list/watch. */
export const AUTHORIZATION_POLICY_API = { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' } as const;

export type CustomObject = k8s.KubernetesObject & { spec?: unknown; status?: unknown };

export function authorizationPolicyInformer(kube: KubeClients, c: InformerCommon): Informer<CustomObject> {
  const { group, version, plural } = AUTHORIZATION_POLICY_API;
  return createInformer<CustomObject>({
    ...common('authorizationpolicies', c),
    config: kube.config,
    path: `/apis/${group}/${version}/${plural}`,
    list: async () => (await kube.custom.listClusterCustomObject({ group, version, plural })) as k8s.KubernetesListObject<CustomObject>,
  });
}
