/**
 * The Istio CSR API handler: authenticate, call the CSR policy, let src/grpc map errors. The handlers are plain
 * async functions; src/grpc/ca-service.ts and jwt-svid-service.ts adapt any such function to grpc-js, and
 * src/cli/ca.ts joins the two. (The monitoring port is src/status-server.ts, shared with the agent.)
 */
import { toCitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Authenticator, Caller, Credentials } from './authn.js';
import type { JwtSvidRequest } from './jwt-svid.js';
import type { CsrInput, CsrService } from './csr-service.js';
import type { CaMetrics } from './metrics.js';

/** What a handler knows about a call: the caller's credentials, and where the call came from. */
export interface IncomingCall extends Credentials {
  /** The remote address (`ip:port`), for logs and audit lines. */
  readonly peerAddress: string;
  /** The call's deadline in ms since the epoch; Infinity when it has none. */
  readonly deadline: number;
}

/**
 * Signs a CSR for the authenticated caller and returns `cert_chain` (leaf first, root bundle last).
 * @throws CitadelError (answered with its status from src/errors.ts); anything else is answered INTERNAL.
 */
export type CreateCertificateHandler = (req: CsrInput, call: IncomingCall) => Promise<string[]>;

/** Returns a JWT-SVID for the authenticated caller. @throws CitadelError, as CreateCertificateHandler. */
export type CreateJwtSvidHandler = (req: JwtSvidRequest, call: IncomingCall) => Promise<string>;

export interface CertificateHandlerDeps {
  readonly authenticator: Authenticator;
  readonly csrService: CsrService;
  readonly metrics?: CaMetrics;
  readonly log: Logger;
  /** Told when each call starts and ends. */
  readonly calls?: Pick<CallTracker, 'started' | 'ended'>;
}

export interface CallTracker {
  started(): void;
  ended(): void;
  /** Calls between arrival and answer. */
  inProgress(): number;
  /** True when a call has the CA to itself: no other in progress, and none has overlapped another for `quietMs`. */
  alone(): boolean;
}

/**
 * Counts CreateCertificate calls in progress, for shutdown (wait for calls, not for idle connections) and for the
 * signing pool (a call alone is signed inline). Counting alone would not tell "alone": calls signed inline are never
 * seen to overlap (the next request waits unread in its socket while the main thread signs), so under load the
 * count would stay at one and every call would be signed inline; the quiet period keeps the pool in use once calls
 * have overlapped.
 */
export function createCallTracker(opts: { quietMs: number; now: () => number }): CallTracker {
  let inProgress = 0;
  let lastOverlap = -Infinity;
  return {
    started() {
      inProgress++;
      if (inProgress > 1) lastOverlap = opts.now();
    },
    ended() {
      inProgress--;
    },
    inProgress: () => inProgress,
    alone: () => inProgress <= 1 && opts.now() - lastOverlap >= opts.quietMs,
  };
}

/**
 * CreateCertificate: count, authenticate, sign. Errors are CitadelErrors (gRPC status from ERROR_TABLE).
 */
export function createCertificateHandler(deps: CertificateHandlerDeps): CreateCertificateHandler {
  return async (req, ctx) => {
    deps.metrics?.csrCount.inc();
    deps.calls?.started();
    try {
      const caller = await deps.authenticator.authenticate({ bearerToken: ctx.bearerToken, peerCertificateDer: ctx.peerCertificateDer });
      const issued = await deps.csrService.handleCsr(caller, { csr: req.csr, validityDurationSeconds: req.validityDurationSeconds, metadata: req.metadata }, { peerAddress: ctx.peerAddress, deadline: ctx.deadline });
      return [...issued.chain];
    } finally {
      deps.calls?.ended();
    }
  };
}

/**
 * CreateJwtSvid: authenticate exactly as CreateCertificate (client certificate, else token), then mint for the
 * caller's own identity. Refusals are logged and counted under `citadel_server_csr_sign_err_count{error}`.
 */
export function createJwtSvidHandler(deps: { authenticator: Authenticator; mint: (caller: Caller, req: JwtSvidRequest) => { token: string }; metrics?: CaMetrics; log: Logger }): CreateJwtSvidHandler {
  return async (req, ctx) => {
    const caller = await deps.authenticator.authenticate({ bearerToken: ctx.bearerToken, peerCertificateDer: ctx.peerCertificateDer });
    try {
      return deps.mint(caller, req).token;
    } catch (err) {
      const e = toCitadelError(err, 'CERT_GEN_ERROR');
      deps.metrics?.csrSignErrCount.inc({ error: e.metricLabel });
      deps.log.warn({ identity: caller.identity, peer: ctx.peerAddress, code: e.code, reason: e.message }, 'JWT-SVID request refused');
      throw e;
    }
  };
}
