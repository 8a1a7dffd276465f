/**
 * The agent's one Unix socket, joined here because src/grpc imports nothing from src/agent: the SDS service over
 * the secret store, plus the ECDS service (RBAC filters) and the SPIFFE Workload API when given, each adapted to
 * grpc-js by src/grpc.
 */
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { Logger } from '../log.js';
import type { Registry } from '../prom.js';
import { prometheusSdsMetrics, type SdsMetrics } from '../agent/sds/metrics.js';
import type { SecretSource } from '../agent/sds/secret-source.js';
import { createSdsService, type SdsService } from '../agent/sds/service.js';
import type { EcdsService } from '../agent/authz/ecds-service.js';
import { ecdsServiceBinding } from '../grpc/ecds-server.js';
import { sdsServiceBinding, startUnixSocketServer } from '../grpc/sds-server.js';
import type { UnixListener } from '../grpc/unix-listener.js';
import type { WorkloadApiBinding } from '../grpc/workload-api-server.js';

/** The agent's socket, running. */
export interface AgentSocket {
  readonly socketPath: string;
  readonly service: SdsService;
  /** Ends every SDS stream (OK), then stops the server; Envoy keeps its secrets and reconnects to the next agent. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts SDS over `store` on `socketPath`, with `workloadApi` and `ecds` on the same socket when given (their
 * owners close them).
 * `listener`, when given, is the socket already listening (the agent binds it before loading gRPC).
 * @throws CitadelError CONFIG_INVALID (see prepareSocketPath in src/grpc/unix-listener.ts; also when binding fails).
 */
export async function startAgentSocket(deps: {
  socketPath: string;
  listener?: UnixListener;
  store: SecretSource;
  log: Logger;
  clock?: Clock;
  registry?: Registry;
  metrics?: SdsMetrics;
  workloadApi?: WorkloadApiBinding;
  ecds?: { service: EcdsService; log: Logger };
}): Promise<AgentSocket> {
  const log = deps.log.child({ component: 'sds' });
  const metrics = deps.metrics ?? (deps.registry ? prometheusSdsMetrics(deps.registry) : undefined);
  const service = createSdsService({ secrets: deps.store, log, clock: deps.clock ?? systemClock, ...(metrics ? { metrics } : {}) });
  const services = [sdsServiceBinding(service, log), ...(deps.workloadApi ? [deps.workloadApi] : []), ...(deps.ecds ? [ecdsServiceBinding(deps.ecds.service, deps.ecds.log)] : [])];
  let server;
  try {
    server = await startUnixSocketServer({ socketPath: deps.socketPath, ...(deps.listener ? { listener: deps.listener } : {}), services, log });
  } catch (err) {
    service.close();
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    socketPath: server.socketPath,
    service,
    stop(graceMs) {
      stopping ??= (async () => {
        service.close();
        await server.stop(graceMs);
      })();
      return stopping;
    },
  };
}
