/**
 * Controller metrics on the registry the caller passes in (the CA's /metrics registry):
 *   citadel_controller_reconciles_total{controller,result}   reconcile attempts (result: success | error)
 *   citadel_controller_writes_total{controller,action,outcome} API writes (action: create | update | delete)
 *   citadel_controller_errors_total{controller,reason}        failed reconciles and informer list/watch failures
 *   citadel_controller_queue_depth{controller}                keys waiting (0 on followers)
 *   citadel_leader                                            1 while this replica holds the leader Lease
 *   citadel_pod_certificate_requests_total{condition,reason}  PodCertificateRequests answered (Issued, Denied, Failed)
 */
import { Counter, Gauge, type Registry } from '../prom.js';

export interface ControllerMetrics {
  readonly reconciles: Counter<'controller' | 'result'>;
  readonly writes: Counter<'controller' | 'action' | 'outcome'>;
  readonly errors: Counter<'controller' | 'reason'>;
  readonly queueDepth: Gauge<'controller'>;
  readonly leader: Gauge;
  readonly podCertificates: Counter<'condition' | 'reason'>;
}

/** Registers the metrics; `depths` is read at scrape time. */
export function createControllerMetrics(registry: Registry, depths: () => Record<string, number>): ControllerMetrics {
  const registers = [registry];
  return {
    reconciles: new Counter({ name: 'citadel_controller_reconciles_total', help: 'Reconcile attempts by controller and result.', labelNames: ['controller', 'result'], registers }),
    writes: new Counter({ name: 'citadel_controller_writes_total', help: 'Kubernetes writes made by the controllers.', labelNames: ['controller', 'action', 'outcome'], registers }),
    errors: new Counter({ name: 'citadel_controller_errors_total', help: 'Failed reconciles and informer list/watch failures.', labelNames: ['controller', 'reason'], registers }),
    queueDepth: new Gauge({
      name: 'citadel_controller_queue_depth',
      help: 'Keys waiting in each controller work queue.',
      labelNames: ['controller'],
      registers,
      collect() {
        for (const [controller, depth] of Object.entries(depths())) this.set({ controller }, depth);
      },
    }),
    leader: new Gauge({ name: 'citadel_leader', help: '1 while this replica is the leader (runs the controllers), else 0.', registers }),
    podCertificates: new Counter({ name: 'citadel_pod_certificate_requests_total', help: 'PodCertificateRequests answered, by condition (Issued, Denied, Failed) and reason.', labelNames: ['condition', 'reason'], registers }),
  };
}
