/**
 * The CA's Prometheus metrics, with Istio's names (reference/istio.md section 6: no prefix, no `_total`
 * suffix; prom-client Counters keep the name as given). One Registry is made by the CA main and shared with the
 * controllers.
 */
import { Counter, Gauge, Histogram, Registry } from '../prom.js';

export interface CaMetrics {
  readonly registry: Registry;
  /** Every CreateCertificate call. */
  readonly csrCount: Counter;
  readonly successCertIssuanceCount: Counter;
  /** Callers no authenticator accepted, by the short reason (`no_credentials`, `token_rejected`, ...). */
  readonly authenticationFailureCount: Counter<'reason'>;
  /** Refused or failed signings by the error label of src/errors.ts ERROR_TABLE (Istio: CSR_ERROR, TTL_ERROR...). */
  readonly csrSignErrCount: Counter<'error'>;
  /** Seconds since the epoch when the root the CA signs under expires. */
  readonly rootCertExpiryTimestamp: Gauge;
  /** Seconds since the epoch when the first certificate of the signing chain (signing cert, intermediates) expires. */
  readonly certChainExpiryTimestamp: Gauge;
  /** Seconds spent signing (parse + checks + signature), successful calls only. */
  readonly signLatency: Histogram;
  /** Plugged-in or self-signed material that was read but refused (the old material stays in use). */
  readonly keyMaterialReloadErrors: Counter;
  /** Key material switches (plugged reloads, self-signed rotations). */
  readonly keyMaterialReloads: Counter;
  /** 1 once key material is loaded. */
  readonly ready: Gauge;
  /** TokenReview calls to the apiserver, by result (authenticated, rejected, error). */
  readonly tokenReviews: Counter<'result'>;
}

/** Registers the CA metrics on `registry` (a fresh one when omitted). */
export function createCaMetrics(registry: Registry = new Registry()): CaMetrics {
  const registers = [registry];
  return {
    registry,
    csrCount: new Counter({ name: 'citadel_server_csr_count', help: 'The number of CSRs received by the CA server.', registers }),
    successCertIssuanceCount: new Counter({ name: 'citadel_server_success_cert_issuance_count', help: 'The number of certificates issued successfully.', registers }),
    authenticationFailureCount: new Counter({ name: 'citadel_server_authentication_failure_count', help: 'The number of authentication failures.', labelNames: ['reason'], registers }),
    csrSignErrCount: new Counter({ name: 'citadel_server_csr_sign_err_count', help: 'The number of errors while signing a CSR, by error.', labelNames: ['error'], registers }),
    rootCertExpiryTimestamp: new Gauge({ name: 'citadel_server_root_cert_expiry_timestamp', help: 'Unix time in seconds when the CA root certificate expires.', registers }),
    certChainExpiryTimestamp: new Gauge({ name: 'citadel_server_cert_chain_expiry_timestamp', help: 'Unix time in seconds when the first certificate of the CA signing chain expires.', registers }),
    signLatency: new Histogram({
      name: 'citadel_server_csr_sign_duration_seconds',
      help: 'Time to check and sign one CSR, in seconds.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    keyMaterialReloadErrors: new Counter({ name: 'citadel_server_key_material_reload_err_count', help: 'CA key material that was read but refused; the previous material stays in use.', registers }),
    keyMaterialReloads: new Counter({ name: 'citadel_server_key_material_reload_count', help: 'CA key material switches (plugged-in reloads, self-signed root rotations).', registers }),
    ready: new Gauge({ name: 'citadel_server_ready', help: '1 once CA key material is loaded.', registers }),
    tokenReviews: new Counter({ name: 'citadel_server_token_review_count', help: 'TokenReview calls made to the apiserver, by result.', labelNames: ['result'], registers }),
  };
}
