/**
 * The CA's two listeners: the Istio CSR API handler (authenticate, call the CSR policy, let src/grpc map errors)
 * and the monitoring HTTP server (/metrics, /healthz, /readyz).
 */
import http from 'node:http';
import type { Registry } from 'prom-client';
import type { ListenAddress } from '../config/flags.js';
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
  /** Calls in progress (SIGTERM waits for them). */
  readonly inflight?: { add(n: number): void };
}

/**
 * CreateCertificate: count, authenticate, sign. Errors are CitadelErrors (gRPC status from ERROR_TABLE).
 */
export function createCertificateHandler(deps: CertificateHandlerDeps): CreateCertificateHandler {
  return async (req, ctx) => {
    deps.metrics?.csrCount.inc();
    deps.inflight?.add(1);
    try {
      const caller = await deps.authenticator.authenticate({ bearerToken: ctx.bearerToken, peerCertificateDer: ctx.peerCertificateDer });
      const issued = deps.csrService.handleCsr(caller, { csr: req.csr, validityDurationSeconds: req.validityDurationSeconds, metadata: req.metadata }, { peerAddress: ctx.peerAddress });
      return [...issued.chain];
    } finally {
      deps.inflight?.add(-1);
    }
  };
}

export interface MonitoringServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves /metrics (Prometheus text from `registry`), /healthz (200 while the process runs) and /readyz (200 once
 * `ready()` is true, else 503).
 * @throws Error when the address cannot be bound.
 */
export async function startMonitoringServer(opts: { address: ListenAddress; registry: Registry; ready: () => boolean; log: Logger }): Promise<MonitoringServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    if (url === '/metrics') {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text),
        (err: unknown) => {
          opts.log.error({ err }, 'cannot render metrics');
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (url === '/readyz') {
      const ready = opts.ready();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'CA key material not loaded\n');
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (opts.address.kind === 'unix') server.listen(opts.address.path, resolve);
    else server.listen(opts.address.port, opts.address.host, resolve);
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
