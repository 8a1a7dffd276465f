/**
 * What the SDS service counts. A small interface so the service does not depend on a metrics library;
 * `prometheusSdsMetrics` is the implementation the agent registers.
 */
import { Counter, Gauge, type Registry } from '../../prom.js';

export type SdsApi = 'sotw' | 'delta';

export interface SdsMetrics {
  streamOpened(api: SdsApi): void;
  streamClosed(api: SdsApi): void;
  /** One resource sent to one stream (or in a fetch). */
  pushed(resourceName: string): void;
  /** Envoy rejected a resource. */
  rejected(resourceName: string): void;
}

export const noopSdsMetrics: SdsMetrics = {
  streamOpened() {},
  streamClosed() {},
  pushed() {},
  rejected() {},
};

/** Registers the SDS metrics on `registry`. */
export function prometheusSdsMetrics(registry: Registry): SdsMetrics {
  const streams = new Gauge({
    name: 'citadel_agent_sds_active_streams',
    help: 'Open SDS streams from Envoy, by API (sotw or delta).',
    labelNames: ['api'],
    registers: [registry],
  });
  const pushes = new Counter({
    name: 'citadel_agent_sds_pushes_total',
    help: 'Secrets sent to Envoy, by resource name.',
    labelNames: ['resource_name'],
    registers: [registry],
  });
  const rejections = new Counter({
    name: 'citadel_agent_sds_rejections_total',
    help: 'Secrets Envoy rejected (NACKed), by resource name.',
    labelNames: ['resource_name'],
    registers: [registry],
  });
  for (const api of ['sotw', 'delta']) streams.set({ api }, 0);
  return {
    streamOpened: (api) => streams.inc({ api }),
    streamClosed: (api) => streams.dec({ api }),
    pushed: (resource_name) => pushes.inc({ resource_name }),
    rejected: (resource_name) => rejections.inc({ resource_name }),
  };
}
