/**
 * The agent's Prometheus metrics, with Istio's agent names where they exist (istio_agent_*), so dashboards
 * built for pilot-agent keep working. The SDS layer registers its own stream/push metrics on the same registry.
 */
import { Counter, Gauge, Histogram, Registry } from '../prom.js';
import type { Clock } from '../clock.js';

export interface AgentMetrics {
  readonly registry: Registry;
  /** istio_agent_num_outgoing_requests{request_type="csr"} */
  readonly outgoingRequests: Counter<'request_type'>;
  /** istio_agent_num_failed_outgoing_requests{request_type, error} */
  readonly failedOutgoingRequests: Counter<'request_type' | 'error'>;
  /** istio_agent_outgoing_latency{request_type}: total milliseconds spent in CA calls (Istio: a ms sum). */
  readonly outgoingLatency: Counter<'request_type'>;
  /** The same latencies as a histogram in seconds, for percentiles. */
  readonly outgoingLatencySeconds: Histogram<'request_type'>;
  /** istio_agent_num_outgoing_retries{request_type} */
  readonly outgoingRetries: Counter<'request_type'>;
  /** istio_agent_num_file_watcher_failures_total and istio_agent_num_file_secret_failures_total */
  readonly fileWatcherFailures: Counter;
  readonly fileSecretFailures: Counter<'resource_name'>;
  /** Records the expiry of the certificate served under `resource_name` (undefined removes it). */
  setCertExpiry(resourceName: string, notAfter: number | undefined): void;
}

/** Registers the agent metrics on `registry` (a fresh one by default). `clock` computes seconds-to-expiry at scrape time. */
export function createAgentMetrics(deps: { clock: Clock; registry?: Registry }): AgentMetrics {
  const registry = deps.registry ?? new Registry();
  const expiries = new Map<string, number>();
  new Gauge({
    name: 'istio_agent_cert_expiry_seconds',
    help: 'Seconds until the certificate served under resource_name expires (negative once expired).',
    labelNames: ['resource_name'],
    registers: [registry],
    collect() {
      this.reset();
      const now = deps.clock.now();
      for (const [name, notAfter] of expiries) this.set({ resource_name: name }, Math.round((notAfter - now) / 1000));
    },
  });
  const outgoingRequests = new Counter({ name: 'istio_agent_num_outgoing_requests', help: 'Requests sent to the CA.', labelNames: ['request_type'] as const, registers: [registry] });
  const failedOutgoingRequests = new Counter({ name: 'istio_agent_num_failed_outgoing_requests', help: 'Requests to the CA that failed.', labelNames: ['request_type', 'error'] as const, registers: [registry] });
  const outgoingLatency = new Counter({ name: 'istio_agent_outgoing_latency', help: 'Total time spent in requests to the CA, in milliseconds.', labelNames: ['request_type'] as const, registers: [registry] });
  const outgoingLatencySeconds = new Histogram({
    name: 'citadel_agent_outgoing_request_duration_seconds',
    help: 'Duration of requests to the CA.',
    labelNames: ['request_type'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const outgoingRetries = new Counter({ name: 'istio_agent_num_outgoing_retries', help: 'Retries of failed requests to the CA.', labelNames: ['request_type'] as const, registers: [registry] });
  const fileWatcherFailures = new Counter({ name: 'istio_agent_num_file_watcher_failures_total', help: 'Failures to watch certificate files.', registers: [registry] });
  const fileSecretFailures = new Counter({ name: 'istio_agent_num_file_secret_failures_total', help: 'File-mounted certificates that could not be loaded.', labelNames: ['resource_name'] as const, registers: [registry] });
  return {
    registry,
    outgoingRequests,
    failedOutgoingRequests,
    outgoingLatency,
    outgoingLatencySeconds,
    outgoingRetries,
    fileWatcherFailures,
    fileSecretFailures,
    setCertExpiry(resourceName, notAfter) {
      if (notAfter === undefined) expiries.delete(resourceName);
      else expiries.set(resourceName, notAfter);
    },
  };
}
