/**
 * The Kubernetes connection: one KubeConfig and the typed API clients made from it. src/kube is the only
 * importer of @kubernetes/client-node; everything else gets these clients (or narrower functions) passed in.
 */
import { createHash } from 'node:crypto';
import https from 'node:https';
import * as k8s from '@kubernetes/client-node';
import { Agent } from 'undici';

export interface KubeClients {
  readonly config: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly authn: k8s.AuthenticationV1Api;
  readonly authz: k8s.AuthorizationV1Api;
  readonly coordination: k8s.CoordinationV1Api;
  /** certificates.k8s.io/v1beta1: PodCertificateRequests and ClusterTrustBundles (beta in 1.35/1.36). */
  readonly certificates: k8s.CertificatesV1beta1Api;
  /** Custom resources (Istio's AuthorizationPolicy). */
  readonly custom: k8s.CustomObjectsApi;
  /** TLS connections the TokenReview client (`authn`) opened so far; keep-alive reuses them (reuseConnections). */
  connectionsOpened(): number;
}

/** Loads a kubeconfig file, or the in-cluster ServiceAccount config when `kubeconfigPath` is undefined. */
export function connectKube(kubeconfigPath: string | undefined): KubeClients {
  const load = () => {
    const config = new k8s.KubeConfig();
    if (kubeconfigPath) config.loadFromFile(kubeconfigPath);
    else config.loadFromCluster();
    return config;
  };
  const config = load();
  // TokenReviews (one per uncached CSR) are the hot path: they get keep-alive connections of their own. Watches,
  // Lease renewals and writes keep client-node's connection per request, so a partition fails them at once.
  const review = keepAliveApiClient(load(), k8s.AuthenticationV1Api);
  return {
    config,
    connectionsOpened: review.connectionsOpened,
    core: config.makeApiClient(k8s.CoreV1Api),
    authn: review.api,
    authz: config.makeApiClient(k8s.AuthorizationV1Api),
    coordination: config.makeApiClient(k8s.CoordinationV1Api),
    certificates: config.makeApiClient(k8s.CertificatesV1beta1Api),
    custom: config.makeApiClient(k8s.CustomObjectsApi),
  };
}

/** HTTP status of a failed API call (404, 409, 410, 403...), or undefined for non-API errors. */
export function apiStatus(err: unknown): number | undefined {
  if (err instanceof k8s.ApiException) return err.code;
  const code = (err as { code?: unknown; statusCode?: unknown } | null)?.code ?? (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

export const isNotFound = (err: unknown) => apiStatus(err) === 404;
export const isConflict = (err: unknown) => apiStatus(err) === 409;
export const isForbidden = (err: unknown) => apiStatus(err) === 403;

/**
 * client-node builds a new undici dispatcher for every request, so each call (a TokenReview per CSR, say) pays a
 * fresh TCP + TLS handshake. This API client swaps it, through client-node's public request middleware (which runs
 * after authentication has been applied), for one keep-alive dispatcher per distinct TLS setup. The bearer token
 * travels in headers, not in the dispatcher, so token rotation still works; a rotated client certificate gets a
 * new dispatcher.
 */
function keepAliveApiClient<T extends k8s.ApiType>(
  config: k8s.KubeConfig,
  apiType: k8s.ApiConstructor<T>,
): { api: T; connectionsOpened: () => number } {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  if (cluster.proxyUrl || !cluster.server.startsWith('https:')) return { api: config.makeApiClient(apiType), connectionsOpened: () => 0 };
  const dispatchers = new Map<string, Agent>();
  let opened = 0;
  const dispatcherFor = async (): Promise<Agent> => {
    const tls: https.RequestOptions = {};
    await config.applyToHTTPSOptions(tls);
    const key = createHash('sha256');
    for (const field of ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const) key.update(`${field}=${String(tls[field] ?? '')};`);
    const id = key.digest('hex');
    let dispatcher = dispatchers.get(id);
    if (!dispatcher) {
      const { ca, cert, key: privateKey, servername, rejectUnauthorized } = tls;
      dispatcher = new Agent({ connect: { ca, cert, key: privateKey, servername, rejectUnauthorized, keepAlive: true } });
      dispatcher.on('connect', () => opened++);
      dispatchers.set(id, dispatcher);
    }
    return dispatcher;
  };
  const configuration = k8s.createConfiguration({
    baseServer: new k8s.ServerConfiguration(cluster.server, {}),
    authMethods: { default: config },
    promiseMiddleware: [
      {
        pre: async (context) => {
          context.setDispatcher(await dispatcherFor());
          return context;
        },
        post: async (response) => response,
      },
    ],
  });
  return { api: new apiType(configuration), connectionsOpened: () => opened };
}

/**
 * The certificates.k8s.io/v1beta1 resources the apiserver serves (e.g. "podcertificaterequests",
 * "clustertrustbundles"). Beta APIs are off unless the cluster enables them, so callers ask first; a group version
 * that is not served at all gives the empty set.
 */
export async function servedCertificatesV1beta1(kube: KubeClients): Promise<Set<string>> {
  try {
    const list = await kube.certificates.getAPIResources();
    return new Set(list.resources.map((r) => r.name));
  } catch (err) {
    if (apiStatus(err) === 404) return new Set();
    throw err;
  }
}
