/** What the controller runtime (index.ts) needs from each controller. */
import type { ReconcileOutcome } from './queue.js';

/** A read-only view of an informer cache. */
export interface Cache<T> {
  get(name: string, namespace?: string): T | undefined;
  list(namespace?: string): readonly T[];
}

/** One controller's gather -> decide -> act step per key; the runtime queues keys and retries failures. */
export interface Reconciler {
  /** Metric label and log name, e.g. "root-configmap". */
  readonly name: string;
  /** Every key that may need work: queued when leadership starts, on resync and on trust bundle changes. */
  allKeys(): string[];
  /**
   * Gathers from caches, decides, and makes at most one write. Throws to be retried with backoff. `signal`
   * aborts when leadership is lost; no write may be sent after that.
   */
  reconcile(key: string, signal: AbortSignal): Promise<ReconcileOutcome | void>;
  /** Resolves once the caches this reconciler reads (beyond the shared ones) have synced; workers start after it. */
  readonly waitFor?: () => Promise<void>;
}
