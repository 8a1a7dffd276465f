/**
 * What the Workload API binding counts (calls and streams by gRPC status, a transport's view), behind a small
 * interface so the binding does not depend on a metrics library.
 */
import { Counter, Gauge, type Registry } from '../prom.js';

export interface WorkloadApiMetrics {
  streamOpened(method: string): void;
  streamClosed(method: string): void;
  /** One answered call or ended stream, by gRPC status name (OK, INVALID_ARGUMENT, PERMISSION_DENIED, ...). */
  handled(method: string, code: string): void;
  /** One message sent on a stream. */
  pushed(method: string): void;
}

export const noopWorkloadApiMetrics: WorkloadApiMetrics = { streamOpened() {}, streamClosed() {}, handled() {}, pushed() {} };

/** Registers the Workload API metrics on `registry`. */
export function prometheusWorkloadApiMetrics(registry: Registry): WorkloadApiMetrics {
  const streams = new Gauge({ name: 'citadel_agent_workload_api_active_streams', help: 'Open SPIFFE Workload API streams, by method.', labelNames: ['method'], registers: [registry] });
  const handled = new Counter({ name: 'citadel_agent_workload_api_requests_total', help: 'SPIFFE Workload API calls, by method and gRPC status.', labelNames: ['method', 'code'], registers: [registry] });
  const pushes = new Counter({ name: 'citadel_agent_workload_api_pushes_total', help: 'SPIFFE Workload API stream messages sent, by method.', labelNames: ['method'], registers: [registry] });
  for (const method of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles']) streams.set({ method }, 0);
  return {
    streamOpened: (method) => streams.inc({ method }),
    streamClosed: (method) => streams.dec({ method }),
    handled: (method, code) => handled.inc({ method, code }),
    pushed: (method) => pushes.inc({ method }),
  };
}
