/**
 * The controllers' writes: create/update of ConfigMaps and Secrets and delete of Secrets, each one request,
 * idempotent in outcome (an object that already exists, a stale resourceVersion or an object already gone come
 * back as outcomes, not errors, so the caller decides whether to retry), all sharing a client-side rate limit so
 * a full resync of a large cluster does not flood the apiserver. Every call takes the leadership term's
 * AbortSignal and checks it right before sending: a replica that lost the lease sends nothing more.
 */
import * as k8s from '@kubernetes/client-node';
import type { Clock } from '../clock.js';
import { createRateLimiter } from '../rate-limit.js';
import { apiStatus, type KubeClients } from './client.js';
import { AUTHORIZATION_POLICY_API } from './informer.js';

export type CreateOutcome = 'created' | 'exists' | 'namespace-gone' | 'namespace-terminating';
export type UpdateOutcome = 'updated' | 'conflict' | 'gone';
export type DeleteOutcome = 'deleted' | 'gone' | 'conflict';

/** The writes the controllers make. Other failures (403, 5xx, network) are thrown as the client's errors. */
export interface ObjectWriter {
  createConfigMap(cm: k8s.V1ConfigMap, signal: AbortSignal): Promise<CreateOutcome>;
  /** Replaces a ConfigMap; `metadata.resourceVersion` makes it conditional. */
  updateConfigMap(cm: k8s.V1ConfigMap, signal: AbortSignal): Promise<UpdateOutcome>;
  /** Reads one ConfigMap live (used when a create found one the cache has not seen yet). */
  readConfigMap(namespace: string, name: string, signal: AbortSignal): Promise<k8s.V1ConfigMap | undefined>;
  createSecret(secret: k8s.V1Secret, signal: AbortSignal): Promise<CreateOutcome>;
  updateSecret(secret: k8s.V1Secret, signal: AbortSignal): Promise<UpdateOutcome>;
  /** Sets an AuthorizationPolicy's `status` (the /status subresource; the spec is never touched). */
  setAuthorizationPolicyStatus(namespace: string, name: string, status: unknown, signal: AbortSignal): Promise<UpdateOutcome>;
  /** Deletes a Secret only if it still has this uid (and resourceVersion when given). */
  deleteSecret(namespace: string, name: string, preconditions: { uid?: string; resourceVersion?: string }, signal: AbortSignal): Promise<DeleteOutcome>;
  /** Writes a PodCertificateRequest's status; `metadata.resourceVersion` makes it conditional (409 -> conflict). */
  updatePodCertificateRequestStatus(pcr: k8s.V1beta1PodCertificateRequest, signal: AbortSignal): Promise<UpdateOutcome>;
  /** Reads one Pod live (undefined when it does not exist). */
  readPod(namespace: string, name: string, signal: AbortSignal): Promise<k8s.V1Pod | undefined>;
  createClusterTrustBundle(ctb: k8s.V1beta1ClusterTrustBundle, signal: AbortSignal): Promise<CreateOutcome>;
  /** Replaces a ClusterTrustBundle; `metadata.resourceVersion` makes it conditional. */
  updateClusterTrustBundle(ctb: k8s.V1beta1ClusterTrustBundle, signal: AbortSignal): Promise<UpdateOutcome>;
  readClusterTrustBundle(name: string, signal: AbortSignal): Promise<k8s.V1beta1ClusterTrustBundle | undefined>;
}

function errorText(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  return typeof body === 'string' ? body : JSON.stringify(body ?? '');
}

/** Creating in a namespace being deleted is refused with 403 and reason NamespaceTerminating. */
function isNamespaceTerminating(err: unknown): boolean {
  return apiStatus(err) === 403 && /NamespaceTerminating|being terminated/.test(errorText(err));
}

async function classifyCreate(run: () => Promise<unknown>): Promise<CreateOutcome> {
  try {
    await run();
    return 'created';
  } catch (err) {
    const status = apiStatus(err);
    if (status === 409) return 'exists';
    if (status === 404) return 'namespace-gone';
    if (isNamespaceTerminating(err)) return 'namespace-terminating';
    throw err;
  }
}

async function classifyUpdate(run: () => Promise<unknown>): Promise<UpdateOutcome> {
  try {
    await run();
    return 'updated';
  } catch (err) {
    const status = apiStatus(err);
    if (status === 409) return 'conflict';
    if (status === 404) return 'gone';
    throw err;
  }
}

function nameOf(obj: { metadata?: k8s.V1ObjectMeta }): { name: string; namespace: string } {
  const name = obj.metadata?.name;
  const namespace = obj.metadata?.namespace;
  if (!name || !namespace) throw new TypeError('object needs metadata.name and metadata.namespace');
  return { name, namespace };
}

/**
 * Writes through `kube` with a shared rate limit (default 50 writes/s, burst 100).
 * Needs configmaps create/update/get and secrets create/update/delete in the target namespaces; the pod
 * certificate signer adds podcertificaterequests/status update, pods get and clustertrustbundles get/create/update,
 * and authorizationpolicies/status patch.
 */
export function createObjectWriter(opts: { kube: KubeClients; clock: Clock; qps?: number; burst?: number }): ObjectWriter {
  const { core, certificates } = opts.kube;
  const readOrUndefined = async <T>(signal: AbortSignal, read: () => Promise<T>): Promise<T | undefined> => {
    signal.throwIfAborted();
    try {
      return await read();
    } catch (err) {
      if (apiStatus(err) === 404) return undefined;
      throw err;
    }
  };
  const limiter = createRateLimiter({ qps: opts.qps ?? 50, burst: opts.burst ?? 100, clock: opts.clock });
  const gate = async (signal: AbortSignal) => {
    await limiter.take(signal);
    signal.throwIfAborted();
  };
  return {
    async createConfigMap(cm, signal) {
      const { namespace } = nameOf(cm);
      await gate(signal);
      return classifyCreate(() => core.createNamespacedConfigMap({ namespace, body: { ...cm, apiVersion: 'v1', kind: 'ConfigMap' } }));
    },
    async updateConfigMap(cm, signal) {
      const { name, namespace } = nameOf(cm);
      await gate(signal);
      return classifyUpdate(() => core.replaceNamespacedConfigMap({ name, namespace, body: { ...cm, apiVersion: 'v1', kind: 'ConfigMap' } }));
    },
    readConfigMap: (namespace, name, signal) => readOrUndefined(signal, () => core.readNamespacedConfigMap({ name, namespace })),
    async createSecret(secret, signal) {
      const { namespace } = nameOf(secret);
      await gate(signal);
      return classifyCreate(() => core.createNamespacedSecret({ namespace, body: { ...secret, apiVersion: 'v1', kind: 'Secret' } }));
    },
    async updateSecret(secret, signal) {
      const { name, namespace } = nameOf(secret);
      await gate(signal);
      return classifyUpdate(() => core.replaceNamespacedSecret({ name, namespace, body: { ...secret, apiVersion: 'v1', kind: 'Secret' } }));
    },
    async setAuthorizationPolicyStatus(namespace, name, status, signal) {
      await gate(signal);
      // A JSON patch `add` sets /status whether or not it exists yet.
      return classifyUpdate(() => opts.kube.custom.patchNamespacedCustomObjectStatus({
        ...AUTHORIZATION_POLICY_API, namespace, name, body: [{ op: 'add', path: '/status', value: status }],
      }));
    },
    async deleteSecret(namespace, name, preconditions, signal) {
      await gate(signal);
      try {
        await core.deleteNamespacedSecret({ name, namespace, body: { preconditions } });
        return 'deleted';
      } catch (err) {
        const status = apiStatus(err);
        if (status === 404) return 'gone';
        if (status === 409) return 'conflict';
        throw err;
      }
    },
    async updatePodCertificateRequestStatus(pcr, signal) {
      const { name, namespace } = nameOf(pcr);
      await gate(signal);
      const body = { ...pcr, apiVersion: 'certificates.k8s.io/v1beta1', kind: 'PodCertificateRequest' };
      return classifyUpdate(() => certificates.replaceNamespacedPodCertificateRequestStatus({ name, namespace, body }));
    },
    readPod: (namespace, name, signal) => readOrUndefined(signal, () => core.readNamespacedPod({ name, namespace })),
    async createClusterTrustBundle(ctb, signal) {
      await gate(signal);
      return classifyCreate(() => certificates.createClusterTrustBundle({ body: { ...ctb, apiVersion: 'certificates.k8s.io/v1beta1', kind: 'ClusterTrustBundle' } }));
    },
    async updateClusterTrustBundle(ctb, signal) {
      const name = ctb.metadata?.name;
      if (!name) throw new TypeError('ClusterTrustBundle needs metadata.name');
      await gate(signal);
      return classifyUpdate(() => certificates.replaceClusterTrustBundle({ name, body: { ...ctb, apiVersion: 'certificates.k8s.io/v1beta1', kind: 'ClusterTrustBundle' } }));
    },
    readClusterTrustBundle: (name, signal) => readOrUndefined(signal, () => certificates.readClusterTrustBundle({ name })),
  };
}

/** A one-line, secret-free description of a failed API call for logs and metric labels. */
export function describeApiError(err: unknown): { reason: string; message: string } {
  const status = apiStatus(err);
  if (status !== undefined) {
    const body = (err as { body?: unknown }).body;
    let message = '';
    if (typeof body === 'string') {
      try {
        message = String((JSON.parse(body) as { message?: unknown }).message ?? '');
      } catch {
        message = body.slice(0, 200);
      }
    } else if (body && typeof body === 'object') message = String((body as { message?: unknown }).message ?? '');
    return { reason: `http_${status}`, message: message || `HTTP ${status}` };
  }
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return { reason: code.toLowerCase(), message: err instanceof Error ? err.message.split('\n')[0]! : code };
  return { reason: 'error', message: err instanceof Error ? err.message.split('\n')[0]! : String(err) };
}
