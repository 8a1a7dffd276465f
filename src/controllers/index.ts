/**
 * `startControllers`: the CA's controllers (root ConfigMaps, ServiceAccount secrets) under leader election.
 * Informers run on every replica so a new leader starts from a warm cache; work queues and workers exist only
 * while this replica holds the Lease: they start when it is acquired and stop (and every in-flight write is
 * refused, see src/kube/writes.ts) the moment it is lost. CSR serving is not affected by leadership.
 */
import { randomUUID } from 'node:crypto';
import type { Registry } from '../prom.js';
import type { CertificateAuthority } from '../ca/authority.js';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import type { KubeClients } from '../kube/client.js';
import { AUTHZ_CONFIGMAP_NAME } from '../authz/types.js';
import {
  authorizationPolicyInformer,
  clusterTrustBundleInformer,
  namedConfigMapInformer,
  namespaceInformer,
  podCertificateRequestInformer,
  secretTypeInformer,
  serviceAccountInformer,
  type Informer,
} from '../kube/informer.js';
import { createLeaderElector } from '../kube/lease.js';
import { createObjectWriter, describeApiError } from '../kube/writes.js';
import type { KeyType } from '../pki/index.js';
import { createAuthzConfigMapReconciler, createAuthzStatusReconciler, policyKey, type PolicyObject } from './authz.js';
import { createControllerMetrics } from './metrics.js';
import { RetryLater, runWorkers, WorkQueue } from './queue.js';
import type { Reconciler } from './reconciler.js';
import { createClusterTrustBundleReconciler } from './cluster-trust-bundle-controller.js';
import { createPodCertificateReconciler, pcrKey } from './pod-certificate-controller.js';
import { createContentConfigMapReconciler, createRootConfigMapReconciler } from './root-configmap-controller.js';
import { DEFAULT_EXCLUDED_NAMESPACES, ROOT_CONFIGMAP_NAME } from './root-configmap.js';
import { createSaSecretReconciler, keyOfSecret, saKey } from './sa-secret-controller.js';
import { SA_SECRET_TYPE, type SaSecretsMode } from './sa-secrets.js';
import { parseLabelSelector, type LabelSelector } from './selector.js';

export { parseLabelSelector, type LabelSelector } from './selector.js';
export { DEFAULT_EXCLUDED_NAMESPACES, ROOT_CONFIGMAP_NAME, ROOT_CERT_KEY } from './root-configmap.js';
export { clusterTrustBundleName, validateSignerName } from './cluster-trust-bundle.js';
export { SA_SECRETS_MODES, SA_SECRET_TYPE, SA_SECRETS_NAMESPACE_LABEL, type SaSecretsMode } from './sa-secrets.js';

export const DEFAULT_LEASE_NAME = 'citadel-leader';

export interface ControllerDeps {
  readonly kube: KubeClients;
  readonly ca: CertificateAuthority;
  /** When given, its CRLs are published as `istio-ca-crl` (key `ca-crl.pem`) wherever the root ConfigMap goes. */
  readonly crl?: CrlSource;
  /** The SPIFFE bundle published beside root-cert.pem (spiffe-bundle.json); optional. */
  readonly spiffeBundle?: { json(): string | undefined; onChange(listener: () => void): () => void };
  readonly clock: Clock;
  readonly log: Logger;
  /** Metrics are registered here (the CA's /metrics registry). */
  readonly registry: Registry;
  /** The CA's namespace: where the leader Lease lives. */
  readonly namespace: string;
  readonly trustDomain: string;
  /** This replica's unique name in the Lease (e.g. the pod name); default a random one. */
  readonly identity?: string;
  /** Default `labeled`. */
  readonly saSecrets?: SaSecretsMode;
  /** Compile AuthorizationPolicies into `citadel-authz` ConfigMaps and policy status; default true. Needs the CRD. */
  readonly authorizationPolicies?: boolean;
  /** Which namespaces the controllers manage (root ConfigMaps and ServiceAccount secrets): a label selector; default all. */
  readonly namespaceSelector?: string | LabelSelector;
  /** Namespaces never managed whatever their labels; default kube-public, kube-node-lease. */
  readonly excludedNamespaces?: readonly string[];
  readonly leaseName?: string;
  /** Leader election timings; defaults 15 s / 10 s / 2 s. */
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  /** ServiceAccount secret certificates: lifetime (default 24 h), rotation at this fraction of it (0.5), key type. */
  readonly workloadCertTtlMs?: number;
  readonly gracePeriodRatio?: number;
  readonly saSecretKeyType?: KeyType;
  /** Client-side write limit; defaults 50/s, burst 100. */
  readonly writeQps?: number;
  readonly writeBurst?: number;
  /** Write `istio-ca-root-cert` into the namespaces (default true). */
  readonly rootConfigMaps?: boolean;
  /**
   * Kubelet-native delivery (docs/pod-certificates.md): sign PodCertificateRequests for `signerName` (`sign`)
   * and publish the signer-linked ClusterTrustBundle (`trustBundle`). Absent: neither. The caller checks first
   * that the apiserver serves the APIs.
   */
  readonly podCertificates?: { readonly signerName: string; readonly sign: boolean; readonly trustBundle: boolean; readonly maxTtlMs: number };
  /** Workers per controller; default 4. */
  readonly workers?: number;
  /** Every key is looked at again this often while leading; default 10 minutes. */
  readonly resyncPeriodMs?: number;
  /** Per-key retry backoff; defaults 100 ms .. 5 minutes. */
  readonly retryBaseDelayMs?: number;
  readonly retryMaxDelayMs?: number;
}

/** The CRL set to publish (src/ca/revocation.ts implements it). */
export interface CrlSource {
  /** PEM CRLs, "" for none, undefined while there is nothing to publish yet. */
  crlPem(): string | undefined;
  onChange(listener: () => void): () => void;
}

/** Istio's names for the CRL ConfigMap. */
export const CRL_CONFIGMAP = { name: 'istio-ca-crl', key: 'ca-crl.pem', what: 'the published CRLs' } as const;

/** The running controllers of one CA replica (informers always; reconcilers only while it leads). */
export interface Controllers {
  /** Stops everything; a leader releases the Lease unless `release` is false (tests use that to simulate a crash). */
  stop(opts?: { release?: boolean }): Promise<void>;
  isLeader(): boolean;
  /** Called with true/false on every leadership change. Returns an unsubscribe function. */
  onLeadershipChange(listener: (leading: boolean) => void): () => void;
  /** Resolves once every informer has listed (the caches reflect the cluster). */
  synced(): Promise<void>;
}

interface Term {
  readonly signal: AbortSignal;
  readonly queues: Map<string, WorkQueue>;
  readonly done: Promise<void>;
}

/**
 * Starts informers and leader election; the controllers run while this replica leads.
 * @throws CitadelError CONFIG_INVALID when `namespaceSelector` does not parse; RangeError for bad timings.
 */
export function startControllers(deps: ControllerDeps): Controllers {
  const { clock } = deps;
  const log = deps.log.child({ component: 'controllers' });
  const mode = deps.saSecrets ?? 'labeled';
  const selector = typeof deps.namespaceSelector === 'string' || deps.namespaceSelector === undefined
    ? parseLabelSelector(deps.namespaceSelector ?? '')
    : deps.namespaceSelector;
  const filter = { selector, excluded: new Set(deps.excludedNamespaces ?? DEFAULT_EXCLUDED_NAMESPACES) };
  const workers = deps.workers ?? 4;
  const resyncPeriodMs = deps.resyncPeriodMs ?? 10 * 60_000;

  let term: Term | undefined;
  const metrics = createControllerMetrics(deps.registry, () => {
    const out: Record<string, number> = {};
    for (const r of reconcilers) out[r.name] = term?.queues.get(r.name)?.depth ?? 0;
    return out;
  });
  metrics.leader.set(0);

  const informerCommon = {
    clock,
    log,
    onError: (resource: string, err: unknown) => metrics.errors.inc({ controller: `informer/${resource}`, reason: describeApiError(err).reason }),
  };
  const namespaces = namespaceInformer(deps.kube, informerCommon);
  const informers: Informer<unknown>[] = [namespaces];
  /** Informers whose reconcilers wait for them on their own (Reconciler.waitFor), not part of synced(). */
  const optionalInformers: Informer<unknown>[] = [];
  const writer = createObjectWriter({ kube: deps.kube, clock, qps: deps.writeQps, burst: deps.writeBurst });

  const reconcilers: Reconciler[] = [];
  const enqueue = (controller: string, key: string | undefined) => {
    if (key) term?.queues.get(controller)?.add(key);
  };
  const enqueueAll = (only?: Reconciler) => {
    if (!term) return;
    for (const r of only ? [only] : reconcilers) for (const key of r.allKeys()) enqueue(r.name, key);
  };

  /** Per-namespace ConfigMap controllers: namespace events and their ConfigMap's events queue the namespace. */
  const perNamespace = (r: Reconciler, cms: Informer<{ metadata?: { namespace?: string } }>) => {
    const nsName = (o: { metadata?: { name?: string } }) => o.metadata?.name;
    namespaces.on('add', (ns) => enqueue(r.name, nsName(ns)));
    namespaces.on('update', (ns) => enqueue(r.name, nsName(ns)));
    for (const event of ['add', 'update', 'delete'] as const) cms.on(event, (cm) => enqueue(r.name, cm.metadata?.namespace));
  };
  let rootConfigMaps: Reconciler | undefined;
  if (deps.rootConfigMaps ?? true) {
    const configMaps = namedConfigMapInformer(deps.kube, ROOT_CONFIGMAP_NAME, informerCommon);
    informers.push(configMaps);
    rootConfigMaps = createRootConfigMapReconciler({ namespaces, configMaps, ca: deps.ca, ...(deps.spiffeBundle ? { spiffeBundle: deps.spiffeBundle.json } : {}), filter, writer, log, metrics });
    reconcilers.push(rootConfigMaps);
    perNamespace(rootConfigMaps, configMaps);
  }

  let unsubscribeCrl = () => {};
  if (deps.crl) {
    const crl = deps.crl;
    const crlConfigMaps = namedConfigMapInformer(deps.kube, CRL_CONFIGMAP.name, informerCommon);
    informers.push(crlConfigMaps);
    const crlReconciler = createContentConfigMapReconciler({ controller: 'crl-configmap', spec: CRL_CONFIGMAP, content: () => crl.crlPem(), namespaces, configMaps: crlConfigMaps, filter, writer, log, metrics });
    reconcilers.push(crlReconciler);
    perNamespace(crlReconciler, crlConfigMaps);
    unsubscribeCrl = crl.onChange(() => {
      if (term) log.info('CRLs changed; updating every istio-ca-crl');
      enqueueAll(crlReconciler);
    });
  }

  const pc = deps.podCertificates;
  if (pc?.trustBundle) {
    const bundles = clusterTrustBundleInformer(deps.kube, pc.signerName, informerCommon);
    informers.push(bundles);
    const ctb = createClusterTrustBundleReconciler({ signerName: pc.signerName, bundles, ca: deps.ca, writer, log, metrics });
    reconcilers.push(ctb);
    for (const event of ['add', 'update', 'delete'] as const) bundles.on(event, () => enqueue(ctb.name, ctb.allKeys()[0]));
  }
  if (pc?.sign) {
    const requests = podCertificateRequestInformer(deps.kube, pc.signerName, informerCommon);
    informers.push(requests);
    const signer = createPodCertificateReconciler({
      requests,
      ca: deps.ca,
      policy: { trustDomain: deps.trustDomain, maxTtlMs: pc.maxTtlMs },
      writer,
      clock,
      log,
      metrics,
    });
    reconcilers.push(signer);
    requests.on('add', (r) => enqueue(signer.name, pcrKey(r)));
    requests.on('update', (r) => enqueue(signer.name, pcrKey(r)));
  }

  if (mode !== 'off') {
    const serviceAccounts = serviceAccountInformer(deps.kube, informerCommon);
    const secrets = secretTypeInformer(deps.kube, SA_SECRET_TYPE, informerCommon);
    informers.push(serviceAccounts, secrets);
    const saSecrets = createSaSecretReconciler({
      namespaces,
      filter,
      serviceAccounts,
      secrets,
      ca: deps.ca,
      writer,
      clock,
      log,
      metrics,
      mode,
      trustDomain: deps.trustDomain,
      certTtlMs: deps.workloadCertTtlMs ?? 24 * 3600_000,
      gracePeriodRatio: deps.gracePeriodRatio ?? 0.5,
      keyType: deps.saSecretKeyType ?? 'ecdsa-p256',
    });
    reconcilers.push(saSecrets);
    const saKeyOf = (sa: { metadata?: { name?: string; namespace?: string } }) =>
      sa.metadata?.name && sa.metadata.namespace ? saKey(sa.metadata.namespace, sa.metadata.name) : undefined;
    for (const event of ['add', 'update', 'delete'] as const) {
      serviceAccounts.on(event, (sa) => enqueue(saSecrets.name, saKeyOf(sa)));
      secrets.on(event, (secret) => enqueue(saSecrets.name, keyOfSecret(secret)));
    }
    // A namespace label change can select or deselect all its ServiceAccounts.
    const enqueueNamespaceAccounts = (ns: { metadata?: { name?: string } }) => {
      const name = ns.metadata?.name;
      if (name) for (const sa of serviceAccounts.list(name)) enqueue(saSecrets.name, saKeyOf(sa));
    };
    namespaces.on('add', enqueueNamespaceAccounts);
    namespaces.on('update', enqueueNamespaceAccounts);
  }

  if (deps.authorizationPolicies ?? true) {
    // Its own informers and their own wait: a cluster without the CRD must not hold up the root ConfigMaps.
    const policies = authorizationPolicyInformer(deps.kube, informerCommon);
    const authzConfigMaps = namedConfigMapInformer(deps.kube, AUTHZ_CONFIGMAP_NAME, informerCommon);
    const authzDeps = { namespaces, configMaps: authzConfigMaps, policies: policies as unknown as Informer<PolicyObject>, filter, trustDomain: deps.trustDomain, writer, log, metrics };
    const authzReady = Promise.all([policies.start(), authzConfigMaps.start()]).then(() => undefined);
    const authzSynced = () => authzReady;
    const authzConfig = { ...createAuthzConfigMapReconciler(authzDeps), waitFor: authzSynced };
    const authzStatus = { ...createAuthzStatusReconciler({ ...authzDeps, now: () => new Date(clock.now()) }), waitFor: authzSynced };
    reconcilers.push(authzConfig, authzStatus);
    optionalInformers.push(policies, authzConfigMaps);
    perNamespace(authzConfig, authzConfigMaps);
    for (const event of ['add', 'update', 'delete'] as const) {
      policies.on(event, (p) => {
        enqueue(authzConfig.name, p.metadata?.namespace);
        enqueue(authzStatus.name, policyKey(p));
      });
    }
    for (const event of ['add', 'update'] as const) {
      namespaces.on(event, (ns) => {
        for (const p of policies.list(ns.metadata?.name)) enqueue(authzStatus.name, policyKey(p));
      });
    }
  }

  const allSynced = Promise.all(informers.map((i) => i.start())).then(() => undefined);
  const unsubscribeCa = deps.ca.onChange(() => {
    if (term) log.info('trust bundle changed; reconciling every object');
    enqueueAll();
  });
  const unsubscribeSpiffeBundle = deps.spiffeBundle?.onChange(() => {
    if (!rootConfigMaps) return;
    if (term) log.info('SPIFFE bundle changed; updating every istio-ca-root-cert');
    enqueueAll(rootConfigMaps);
  });

  const listeners = new Set<(leading: boolean) => void>();
  const notify = (leading: boolean) => {
    metrics.leader.set(leading ? 1 : 0);
    for (const l of [...listeners]) {
      try {
        l(leading);
      } catch (err) {
        log.error({ err }, 'leadership listener failed');
      }
    }
  };

  let resyncTimer: Timer | undefined;
  const scheduleResync = () => {
    resyncTimer = clock.setTimer(() => {
      enqueueAll();
      scheduleResync();
    }, resyncPeriodMs);
  };

  const startTerm = (signal: AbortSignal) => {
    const queues = new Map<string, WorkQueue>();
    for (const r of reconcilers) {
      queues.set(r.name, new WorkQueue({ clock, baseDelayMs: deps.retryBaseDelayMs, maxDelayMs: deps.retryMaxDelayMs }));
    }
    const run = async () => {
      const slow = clock.setTimer(() => {
        const waiting = informers.filter((i) => !i.hasSynced()).map((i) => i.resource);
        log.warn({ informers: waiting }, 'leading, but caches not synced yet: controllers wait (check RBAC and apiserver reachability)');
      }, 30_000);
      await allSynced;
      slow.cancel();
      if (signal.aborted) return;
      enqueueAll();
      scheduleResync();
      log.info({ controllers: reconcilers.map((r) => r.name), saSecrets: mode }, 'controllers running');
      await Promise.all(
        reconcilers.map(async (r) => {
          // Caches that never sync (no CRD, no RBAC) must not keep a stopping term from ending.
          if (r.waitFor) await Promise.race([r.waitFor(), new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))]);
          if (signal.aborted) return;
          await runWorkers(queues.get(r.name)!, workers, async (key) => {
            const outcome = await r.reconcile(key, signal);
            metrics.reconciles.inc({ controller: r.name, result: 'success' });
            return outcome;
          }, {
            onResult(key, result) {
              if (result.ok || signal.aborted) return;
              const { reason, message } = describeApiError(result.error);
              metrics.reconciles.inc({ controller: r.name, result: 'error' });
              metrics.errors.inc({ controller: r.name, reason });
              const fields = { controller: r.name, key, reason, error: message, retryInMs: result.retryInMs };
              if (result.error instanceof RetryLater) log.debug(fields, 'reconcile raced; will retry');
              else log.warn(fields, 'reconcile failed; will retry');
            },
          });
        }),
      );
    };
    const current: Term = { signal, queues, done: run() };
    term = current;
    signal.addEventListener('abort', () => {
      resyncTimer?.cancel();
      resyncTimer = undefined;
      for (const q of queues.values()) q.shutDown();
      if (term === current) term = undefined;
    }, { once: true });
    notify(true);
  };

  let lastTerm: Term | undefined;
  const elector = createLeaderElector({
    kube: deps.kube,
    namespace: deps.namespace,
    name: deps.leaseName ?? DEFAULT_LEASE_NAME,
    identity: deps.identity ?? `citadel-${randomUUID()}`,
    clock,
    log,
    leaseDurationMs: deps.leaseDurationMs,
    renewDeadlineMs: deps.renewDeadlineMs,
    retryPeriodMs: deps.retryPeriodMs,
    onStartedLeading(signal) {
      startTerm(signal);
      lastTerm = term;
    },
    onStoppedLeading() {
      notify(false);
    },
  });
  elector.start();

  return {
    async stop(opts) {
      await elector.stop(opts);
      await lastTerm?.done;
      unsubscribeCa();
      unsubscribeSpiffeBundle?.();
      unsubscribeCrl();
      await Promise.all([...informers, ...optionalInformers].map((i) => i.stop()));
    },
    isLeader: () => elector.isLeader(),
    onLeadershipChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    synced: () => allSynced,
  };
}
