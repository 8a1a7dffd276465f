/**
 * TokenReview: asks the apiserver whether a bearer token is valid for the given audiences. The apiserver checks
 * the signature, expiry, audience and (for bound tokens) that the Pod/Secret it is bound to still exists.
 */
import type { KubeClients } from './client.js';

/** What the apiserver said about a token, as plain data (no client-node types leak out). */
export interface TokenReviewResult {
  readonly authenticated: boolean;
  readonly username?: string;
  readonly uid?: string;
  readonly groups: readonly string[];
  /** `user.extra`, e.g. `authentication.kubernetes.io/pod-name`. */
  readonly extra: Readonly<Record<string, readonly string[]>>;
  /** Audiences the token was found valid for. */
  readonly audiences: readonly string[];
  /** The apiserver's reason when not authenticated (safe to log: it never contains the token). */
  readonly error?: string;
}

/** Reviews tokens; the seam the CA's authenticator depends on. */
export interface TokenReviewer {
  /**
   * One TokenReview call. Resolves with the verdict; rejects only when the apiserver could not be asked
   * (network, 403 for a missing `tokenreviews create` permission, 5xx) with the client's error.
   */
  review(token: string, audiences: readonly string[], signal?: AbortSignal): Promise<TokenReviewResult>;
}

/** A TokenReviewer over the authentication.k8s.io/v1 API. Needs `tokenreviews create`. */
export function createTokenReviewer(kube: Pick<KubeClients, 'authn'>): TokenReviewer {
  return {
    async review(token, audiences) {
      const res = await kube.authn.createTokenReview({
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [...audiences] } },
      });
      const status = res.status ?? {};
      const user = status.user ?? {};
      return {
        authenticated: status.authenticated === true,
        username: user.username,
        uid: user.uid,
        groups: user.groups ?? [],
        extra: user.extra ?? {},
        audiences: status.audiences ?? [],
        error: status.error,
      };
    },
  };
}
