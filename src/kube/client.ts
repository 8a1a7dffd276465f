/**
 * The Kubernetes connection: one KubeConfig and the typed API clients made from it. src/kube is the only
 * importer of @kubernetes/client-node; everything else gets these clients (or narrower functions) passed in.
 */
import * as k8s from '@kubernetes/client-node';

export interface KubeClients {
  readonly config: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly authn: k8s.AuthenticationV1Api;
  readonly authz: k8s.AuthorizationV1Api;
  readonly coordination: k8s.CoordinationV1Api;
}

/** Loads a kubeconfig file, or the in-cluster ServiceAccount config when `kubeconfigPath` is undefined. */
export function connectKube(kubeconfigPath: string | undefined): KubeClients {
  const config = new k8s.KubeConfig();
  if (kubeconfigPath) config.loadFromFile(kubeconfigPath);
  else config.loadFromCluster();
  return {
    config,
    core: config.makeApiClient(k8s.CoreV1Api),
    authn: config.makeApiClient(k8s.AuthenticationV1Api),
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
