/**
 * Who is calling: a Kubernetes ServiceAccount token (TokenReview) or a client certificate the CA issued. The first
 * authenticator that succeeds wins; when none does the caller gets UNAUTHENTICATED with a short reason, and the
 * detail goes to the log and the `citadel_server_authentication_failure_count{reason}` counter.
 *
 * Successful reviews are cached by a hash of the token (never the token) for a short, bounded time and never
 * beyond the token's own `exp`, so a burst of pods does not hammer the apiserver. Failures are not cached.
 * Concurrent calls with the same token share one review.
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import { CitadelError, isCitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { TokenReviewer } from '../kube/tokenreview.js';
import { checkWorkloadSvid, parseCertificate, parseWorkloadSpiffeId, verifyChain, workloadSpiffeId } from '../pki/index.js';
import type { VerificationMaterial } from './keyring.js';
import type { CaMetrics } from './metrics.js';

/** An authenticated caller. */
export interface Caller {
  /** spiffe://<td>/ns/<ns>/sa/<sa> */
  readonly identity: string;
  readonly method: 'token' | 'client-certificate';
  readonly namespace: string;
  readonly serviceAccount: string;
  /** From the bound token's `user.extra`, when present. */
  readonly podName?: string;
  readonly podUid?: string;
}

/** What an authenticator may look at. */
export interface Credentials {
  readonly bearerToken: string | undefined;
  readonly peerCertificateDer: Buffer | undefined;
}

/** Turns a call's credentials into a Caller, or refuses (fail closed: no credential that verifies, no identity). */
export interface Authenticator {
  /**
   * @throws CitadelError UNAUTHENTICATED (message short and safe), UPSTREAM_UNAVAILABLE when the apiserver
   *   cannot be asked.
   */
  authenticate(creds: Credentials): Promise<Caller>;
}

/** A short, safe reason, the detail for logs, and the `reason` label it is counted under. */
class AuthnFailure extends Error {
  constructor(
    readonly reason: string,
    readonly detail: string,
    readonly label = reason.replace(/[^a-z]+/g, '_'),
  ) {
    super(reason);
  }
}

const SA_USER = /^system:serviceaccount:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/;

/** The `exp` claim (ms) of a JWT, read without verification (only to bound the cache), or undefined. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' && Number.isFinite(payload.exp) ? payload.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** Short, non-reversible id of a token for cache keys and logs. */
export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

export interface TokenAuthenticatorDeps {
  readonly reviewer: TokenReviewer;
  readonly audiences: readonly string[];
  /** The trust domain identities are minted in (live value: read on every call). */
  readonly trustDomain: () => string;
  readonly clock: Clock;
  /** How long a successful review is reused (bounded by the token's exp); 0 disables the cache. */
  readonly cacheTtlMs: number;
  /** Most entries kept; the oldest are dropped first. */
  readonly cacheMaxEntries?: number;
  readonly metrics?: CaMetrics;
}

interface Cached {
  readonly caller: Caller;
  readonly until: number;
}

/** Bearer token -> TokenReview -> ServiceAccount identity. */
export function createTokenAuthenticator(deps: TokenAuthenticatorDeps): { authenticate(token: string): Promise<Caller>; cacheSize(): number } {
  const cache = new Map<string, Cached>();
  const inflight = new Map<string, Promise<Caller>>();
  const maxEntries = deps.cacheMaxEntries ?? 10_000;

  const review = async (token: string): Promise<Caller> => {
    let result;
    try {
      result = await deps.reviewer.review(token, deps.audiences);
    } catch (err) {
      deps.metrics?.tokenReviews.inc({ result: 'error' });
      throw new CitadelError('UPSTREAM_UNAVAILABLE', 'cannot verify the token right now', `TokenReview failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (!result.authenticated) {
      deps.metrics?.tokenReviews.inc({ result: 'rejected' });
      throw new AuthnFailure('token rejected', `TokenReview: ${result.error ?? 'not authenticated'}`);
    }
    deps.metrics?.tokenReviews.inc({ result: 'authenticated' });
    const m = SA_USER.exec(result.username ?? '');
    if (!m) throw new AuthnFailure('token is not a ServiceAccount token', `user ${JSON.stringify(result.username)}`);
    if (!result.groups.includes('system:serviceaccounts')) throw new AuthnFailure('token is not a ServiceAccount token', 'group system:serviceaccounts missing');
    // Fail closed: a review that reports none of the audiences we asked for (an empty list means "the
    // apiserver's own audience") does not prove the token was minted for the CA.
    if (!result.audiences.some((a) => deps.audiences.includes(a))) {
      throw new AuthnFailure('token audience rejected', `audiences ${result.audiences.join(',') || '(none reported)'}`);
    }
    const namespace = m[1]!;
    const serviceAccount = m[3]!;
    const podName = result.extra['authentication.kubernetes.io/pod-name']?.[0];
    const podUid = result.extra['authentication.kubernetes.io/pod-uid']?.[0];
    return {
      identity: workloadSpiffeId(deps.trustDomain(), namespace, serviceAccount),
      method: 'token',
      namespace,
      serviceAccount,
      ...(podName ? { podName } : {}),
      ...(podUid ? { podUid } : {}),
    };
  };

  return {
    cacheSize: () => cache.size,
    async authenticate(token) {
      const key = createHash('sha256').update(token).digest('hex');
      const now = deps.clock.now();
      const hit = cache.get(key);
      if (hit) {
        if (hit.until > now && hit.caller.identity === workloadSpiffeId(deps.trustDomain(), hit.caller.namespace, hit.caller.serviceAccount)) return hit.caller;
        cache.delete(key);
      }
      const pending = inflight.get(key);
      if (pending) return pending;
      const p = review(token).then((caller) => {
        const exp = jwtExpiry(token);
        // No exp claim: the token's lifetime is unknown, so do not reuse the verdict at all.
        const until = exp === undefined ? 0 : Math.min(deps.clock.now() + deps.cacheTtlMs, exp);
        if (until > deps.clock.now()) {
          if (cache.size >= maxEntries) cache.delete(cache.keys().next().value!);
          cache.set(key, { caller, until });
        }
        return caller;
      });
      inflight.set(key, p);
      try {
        return await p;
      } finally {
        inflight.delete(key);
      }
    },
  };
}

/**
 * Client certificate -> its SPIFFE ID, when it chains (now) to the CA's current trust bundle through the CA's
 * intermediates, is a valid X.509-SVID, and names a workload in our trust domain.
 */
export function authenticateClientCertificate(der: Buffer, material: VerificationMaterial, trustDomain: string, now: number, serialRevoked?: (serialHex: string) => string | undefined): Caller {
  // Each way a certificate can fail has its own reason and label: an operator must be able to tell a fleet with
  // expired certificates from a client of another mesh (issue 14).
  const rejected = (why: string, label: string, detail: string) => new AuthnFailure(`client certificate rejected: ${why}`, detail, `client_certificate_${label}`);
  let leaf;
  try {
    leaf = parseCertificate(der);
  } catch (err) {
    throw rejected('malformed', 'malformed', `unparseable: ${(err as Error).message}`);
  }
  try {
    verifyChain({ leaf, intermediates: material.intermediates, roots: material.roots, now });
  } catch (err) {
    if (isCitadelError(err, 'CERT_EXPIRED')) throw rejected('expired', 'expired', `${err.message}: ${err.detail ?? ''}`);
    throw rejected('not issued by this CA', 'untrusted', `does not verify: ${(err as Error).message}`);
  }
  const revoked = serialRevoked?.(leaf.serialHex);
  if (revoked) throw rejected('revoked', 'revoked', revoked);
  let id: string;
  try {
    id = checkWorkloadSvid(leaf);
  } catch (err) {
    throw rejected('not a workload certificate', 'not_workload', (err as Error).message);
  }
  const parsed = parseWorkloadSpiffeId(id);
  if (!parsed) throw rejected('not a workload certificate', 'not_workload', `${id} is not a workload ID`);
  if (parsed.trustDomain !== trustDomain) throw rejected(`not in trust domain ${trustDomain}`, 'not_workload', `${id} is not in trust domain ${trustDomain}`);
  return { identity: id, method: 'client-certificate', namespace: parsed.namespace, serviceAccount: parsed.serviceAccount };
}

export interface AuthenticatorDeps {
  readonly token: { authenticate(token: string): Promise<Caller> };
  readonly verificationMaterial: () => VerificationMaterial;
  /** Why a client certificate's serial is revoked, or undefined (src/ca/revocation.ts). */
  readonly serialRevoked?: (serialHex: string) => string | undefined;
  readonly trustDomain: () => string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: CaMetrics;
}

/**
 * Tries the client certificate first (as istiod: renewal over mTLS needs no apiserver call), then the token.
 * @throws CitadelError UNAUTHENTICATED, UPSTREAM_UNAVAILABLE (TokenReview could not be made and no certificate worked).
 */
export function createAuthenticator(deps: AuthenticatorDeps): Authenticator {
  return {
    async authenticate(creds) {
      const failures: AuthnFailure[] = [];
      if (creds.peerCertificateDer) {
        try {
          return authenticateClientCertificate(creds.peerCertificateDer, deps.verificationMaterial(), deps.trustDomain(), deps.clock.now(), deps.serialRevoked);
        } catch (err) {
          if (!(err instanceof AuthnFailure)) throw err;
          failures.push(err);
        }
      }
      if (creds.bearerToken) {
        try {
          return await deps.token.authenticate(creds.bearerToken);
        } catch (err) {
          if (!(err instanceof AuthnFailure)) {
            if (err instanceof CitadelError) deps.log.warn({ reason: err.message, detail: err.detail }, 'authentication could not complete');
            throw err;
          }
          failures.push(err);
        }
      }
      if (failures.length === 0) failures.push(new AuthnFailure('no credentials', 'no bearer token and no client certificate'));
      const reason = failures.map((f) => f.reason).join('; ');
      const label = failures[failures.length - 1]!.label;
      deps.metrics?.authenticationFailureCount.inc({ reason: label });
      deps.log.warn(
        { reason, detail: failures.map((f) => f.detail).join('; '), ...(creds.bearerToken ? { tokenHash: tokenFingerprint(creds.bearerToken) } : {}) },
        'authentication failed',
      );
      throw new CitadelError('UNAUTHENTICATED', `authentication failed: ${reason}`);
    },
  };
}
