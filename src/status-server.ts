/**
 * A process's status port, shared by `citadel ca` (:15014) and `citadel agent` (Istio's :15020): /healthz (the process
 * is up), /readyz (200, or 503 with the reason the process gives) and /metrics (the agent also answers Istio's
 * /stats/prometheus).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from './prom.js';
import type { ListenAddress } from './config/flags.js';
import type { Logger } from './log.js';

export interface StatusServer {
  /** The bound TCP port (useful with port 0). */
  readonly port: number;
  close(): Promise<void>;
}

export interface StatusServerDeps {
  address: ListenAddress;
  registry: Registry;
  /** Why the process is not ready, or undefined when it is. */
  notReadyReason(): string | undefined;
  /** Paths that serve the Prometheus text (default `/metrics`). */
  metricsPaths?: readonly string[];
  log: Logger;
}

/**
 * Starts the status server.
 * @throws Error when the address cannot be bound.
 */
export async function startStatusServer(deps: StatusServerDeps): Promise<StatusServer> {
  const metricsPaths = deps.metricsPaths ?? ['/metrics'];
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    if (url === '/healthz') return send(200, 'ok\n');
    if (url === '/readyz') {
      const reason = deps.notReadyReason();
      return reason ? send(503, `not ready: ${reason}\n`) : send(200, 'ready\n');
    }
    if (metricsPaths.includes(url ?? '')) {
      deps.registry.metrics().then(
        (text) => send(200, text, deps.registry.contentType),
        (err: unknown) => {
          deps.log.error({ err }, 'metrics collection failed');
          send(500, 'metrics collection failed\n');
        },
      );
      return;
    }
    send(404, 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (deps.address.kind === 'unix') server.listen(deps.address.path, () => resolve());
    else server.listen(deps.address.port, deps.address.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? (addr as AddressInfo).port : 0;
  deps.log.info({ port }, 'status server listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
