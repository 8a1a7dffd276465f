/**
 * The Istio CSR API handler: authenticate, call the CSR policy, let src/grpc map errors. (The monitoring port is
 * src/status-server.ts, shared with the agent.)
 */
import type { CreateCertificateHandler } from '../grpc/ca-service.js';
import type { Logger } from '../log.js';
import type { Authenticator } from './authn.js';
import type { CsrService } from './csr-service.js';
import type { CaMetrics } from './metrics.js';

export interface CertificateHandlerDeps {
  readonly authenticator: Authenticator;
  readonly csrService: CsrService;
  readonly metrics?: CaMetrics;
  readonly log: Logger;
  /** Told when each call starts and ends (the signing pool's lone-call detector). */
  readonly calls?: { started(): void; ended(): void };
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
      const issued = await deps.csrService.handleCsr(caller, { csr: req.csr, validityDurationSeconds: req.validityDurationSeconds, metadata: req.metadata }, { peerAddress: ctx.peerAddress });
      return [...issued.chain];
    } finally {
      deps.calls?.ended();
    }
  };
}
