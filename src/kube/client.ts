/**
 * The Kubernetes connection: one KubeConfig and the typed API clients made from it. src/kube is the only
 * importer of @kubernetes/client-node; everything else gets these clients (or narrower functions) passed in.
 */
import { createHash } from 'node:crypto';
import https from 'node:https';
import * as k8s from '@kubernetes/client-node';

export interface KubeClients {
  readonly config: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly authn: k8s.AuthenticationV1Api;
  readonly authz: k8s.AuthorizationV1Api;
  readonly coordination: k8s.CoordinationV1Api;
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
  const reviewConfig = load();
  const connections = reuseConnections(reviewConfig);
  return {
    config,
    connectionsOpened: connections.opened,
    core: config.makeApiClient(k8s.CoreV1Api),
    authn: reviewConfig.makeApiClient(k8s.AuthenticationV1Api),
    authz: config.makeApiClient(k8s.AuthorizationV1Api),
    coordination: config.makeApiClient(k8s.CoordinationV1Api),
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
 * client-node 1.x builds a new https.Agent for every request, so each call (a TokenReview per CSR, say) pays a
 * fresh TCP + TLS handshake. This replaces its (private) createAgent with one keep-alive agent per distinct TLS
 * setup; the bearer token travels in headers, not in the agent, so token rotation still works.
 */
function reuseConnections(config: k8s.KubeConfig): { opened: () => number } {
  type CreateAgent = (cluster: k8s.Cluster | null, opts: https.AgentOptions) => https.Agent | unknown;
  const target = config as unknown as { createAgent?: CreateAgent };
  const original = target.createAgent?.bind(config);
  let opened = 0;
  if (!original) return { opened: () => opened }; // a client-node without this hook: keep its behaviour
  const agents = new Map<string, https.Agent>();
  target.createAgent = (cluster, opts) => {
    if (!cluster || cluster.proxyUrl || !cluster.server.startsWith('https:')) return original(cluster, opts);
    const key = createHash('sha256');
    for (const field of ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const) key.update(`${field}=${String(opts[field] ?? '')};`);
    const id = key.digest('hex');
    let agent = agents.get(id);
    if (!agent) {
      agent = new https.Agent({ ...opts, keepAlive: true });
      const connect = agent.createConnection.bind(agent);
      agent.createConnection = ((...args: Parameters<typeof connect>) => {
        opened++;
        return connect(...args);
      }) as typeof agent.createConnection;
      agents.set(id, agent);
    }
    return agent;
  };
  return { opened: () => opened };
}
