/**
 * The CSR policy: given an authenticated caller and an IstioCertificateRequest, decide and sign. No transport
 * here: src/ca/server.ts authenticates, calls `handleCsr`, and maps errors to gRPC statuses.
 *
 * Stricter than istiod in two ways (both deliberate): a CSR that asks for an identity other than the caller's,
 * or for extra SANs, is refused with PERMISSION_DENIED naming what it asked for (istiod silently replaces the
 * SANs); and weak or unsupported keys are refused with INVALID_ARGUMENT (istiod does not check).
 */
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CsrAuthority, IssuedWorkloadCert } from './authority.js';
import type { Caller } from './authn.js';
import type { CaMetrics } from './metrics.js';
import type { KeyedRateLimiter } from '../rate-limit.js';

export { checkRequestedIdentity } from './signing-policy.js';

export interface CsrPolicy {
  /** Used when the request asks for 0 or a negative lifetime (Istio DEFAULT_WORKLOAD_CERT_TTL, 24 h). */
  readonly defaultTtlMs: number;
  /** Requests above this are refused, not clamped (Istio MAX_WORKLOAD_CERT_TTL, 90 days). */
  readonly maxTtlMs: number;
  /** Largest CSR accepted, in bytes of PEM text. */
  readonly maxCsrBytes: number;
}

export interface CsrServiceDeps {
  readonly ca: CsrAuthority;
  readonly policy: CsrPolicy;
  /** The audit log: one line per issued certificate. */
  readonly log: Logger;
  readonly rateLimiter?: KeyedRateLimiter;
  readonly metrics?: CaMetrics;
}

export interface CsrInput {
  readonly csr: string;
  /** Seconds; <= 0 means the default. */
  readonly validityDurationSeconds: number;
  /** The request's `metadata` Struct as JSON; only `ImpersonatedIdentity` is looked at. */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** Where the call came from, for the audit line. */
export interface CallInfo {
  readonly peerAddress?: string;
  /** The call's deadline (ms since the epoch), if it has one. */
  readonly deadline?: number;
}

export interface CsrService {
  /**
   * Checks and signs (parse, verify and sign on a signing worker when the CA has them). Counts every refusal in `citadel_server_csr_sign_err_count{error}` and every success in
   * `citadel_server_success_cert_issuance_count`.
   * @throws CitadelError INPUT_TOO_LARGE, PEM_*, DER_INVALID, CSR_INVALID, SIGNATURE_INVALID, KEY_UNSUPPORTED,
   *   KEY_TOO_WEAK, TTL_INVALID (INVALID_ARGUMENT); PERMISSION_DENIED; RATE_LIMITED; CA_BUSY; CA_NOT_READY, CERT_GEN_ERROR.
   */
  handleCsr(caller: Caller, input: CsrInput, call?: CallInfo): Promise<IssuedWorkloadCert>;
}

/** The requested lifetime in ms, or TTL_INVALID. */
export function resolveTtl(validityDurationSeconds: number, policy: CsrPolicy): number {
  if (!Number.isFinite(validityDurationSeconds) || validityDurationSeconds <= 0) return policy.defaultTtlMs;
  const ms = validityDurationSeconds * 1000;
  if (ms > policy.maxTtlMs) {
    throw new CitadelError('TTL_INVALID', `requested TTL ${validityDurationSeconds}s is greater than the max allowed TTL ${Math.floor(policy.maxTtlMs / 1000)}s`);
  }
  return ms;
}

export function createCsrService(deps: CsrServiceDeps): CsrService {
  const { ca, policy, log, metrics } = deps;
  return {
    async handleCsr(caller, input, call = {}) {
      const started = performance.now();
      try {
        if (Buffer.byteLength(input.csr, 'utf8') > policy.maxCsrBytes) {
          throw new CitadelError('INPUT_TOO_LARGE', `the CSR is larger than ${policy.maxCsrBytes} bytes`);
        }
        if (input.csr.trim() === '') throw new CitadelError('PEM_INVALID', 'the request has no CSR');
        // Istio lets trusted node agents (ambient ztunnel) ask for other identities; we do not, and say so rather
        // than silently issuing the caller's own identity.
        const impersonated = input.metadata?.ImpersonatedIdentity;
        if (typeof impersonated === 'string' && impersonated !== '' && impersonated !== caller.identity) {
          throw new CitadelError('PERMISSION_DENIED', `impersonation is not supported: the request asks for ${impersonated.slice(0, 200)}, but the caller is ${caller.identity}`);
        }
        const ttlMs = resolveTtl(input.validityDurationSeconds, policy);
        // Before parsing: a caller over its limit must not cost us a CSR signature check either.
        if (deps.rateLimiter && !deps.rateLimiter.tryTake(caller.identity)) {
          throw new CitadelError('RATE_LIMITED', `too many certificate requests for ${caller.identity}; retry later`);
        }
        const issued = await ca.issueFromCsr({ csrPem: input.csr, identity: caller.identity, ttlMs, deadline: call.deadline });
        metrics?.successCertIssuanceCount.inc();
        metrics?.signLatency.observe((performance.now() - started) / 1000);
        log.info(
          {
            audit: 'certificate-issued',
            identity: caller.identity,
            serial: issued.serialHex,
            notAfter: new Date(issued.notAfter).toISOString(),
            keyType: issued.keyType,
            authn: caller.method,
            peer: call.peerAddress,
            ...(caller.podName ? { pod: caller.podName } : {}),
            ...(caller.podUid ? { podUid: caller.podUid } : {}),
          },
          'issued workload certificate',
        );
        return { chain: issued.chain, serialHex: issued.serialHex, notBefore: issued.notBefore, notAfter: issued.notAfter };
      } catch (err) {
        // Anything that is not a CitadelError is a bug: count it as CERT_GEN_ERROR and show the caller nothing of it.
        const e = err instanceof CitadelError ? err : new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', err instanceof Error ? err.message : String(err), { cause: err });
        metrics?.csrSignErrCount.inc({ error: e.metricLabel });
        log.warn({ identity: caller.identity, peer: call.peerAddress, code: e.code, reason: e.message, detail: e.detail }, 'certificate request refused');
        throw e;
      }
    },
  };
}
