/**
 * A keyed work queue for reconcilers: a key waiting in the queue is held once however often it is added; a key
 * being processed is not handed to a second worker (it is queued again when the first finishes if it was added
 * meanwhile); failures are retried per key with exponential backoff so one permanently failing object
 * (Forbidden, say) waits up to `maxDelayMs` between attempts instead of spinning, while other keys flow.
 */
import { backoffDelay } from '../backoff.js';
import type { Clock, Timer } from '../clock.js';

export interface WorkQueueOptions {
  readonly clock: Clock;
  /** First retry delay after a failure; doubles per consecutive failure of the same key. Default 100 ms. */
  readonly baseDelayMs?: number;
  /** Cap on the retry delay. Default 5 minutes. */
  readonly maxDelayMs?: number;
}

export class WorkQueue {
  private readonly clock: Clock;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly order: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { due: number; timer: Timer }>();
  private readonly failureCounts = new Map<string, number>();
  private waiters: ((key: string | undefined) => void)[] = [];
  private closed = false;

  constructor(opts: WorkQueueOptions) {
    this.clock = opts.clock;
    this.baseDelayMs = opts.baseDelayMs ?? 100;
    this.maxDelayMs = opts.maxDelayMs ?? 5 * 60_000;
  }

  /** Keys waiting to be processed (not counting delayed ones or ones being processed). */
  get depth(): number {
    return this.order.length;
  }

  /** Keys scheduled for later (retries and planned requeues). */
  get delayedCount(): number {
    return this.delayed.size;
  }

  get isShutDown(): boolean {
    return this.closed;
  }

  /** Queues `key` now. No-op when it is already waiting or the queue is shut down. */
  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // done() queues it again
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter(key);
      return;
    }
    this.order.push(key);
  }

  /** Queues `key` after `ms`; when it is already scheduled, the earlier time wins. */
  addAfter(key: string, ms: number): void {
    if (this.closed) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const due = this.clock.now() + ms;
    const existing = this.delayed.get(key);
    if (existing && existing.due <= due) return;
    existing?.timer.cancel();
    const timer = this.clock.setTimer(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    this.delayed.set(key, { due, timer });
  }

  /** Records a failure of `key` and queues it after its backoff delay. Returns the delay used. */
  addRateLimited(key: string): number {
    const failures = (this.failureCounts.get(key) ?? 0) + 1;
    this.failureCounts.set(key, failures);
    const delay = backoffDelay(failures, { initialMs: this.baseDelayMs, maxMs: this.maxDelayMs });
    this.addAfter(key, delay);
    return delay;
  }

  /** Consecutive failures recorded for `key`. */
  failures(key: string): number {
    return this.failureCounts.get(key) ?? 0;
  }

  /** Clears the failure history of `key` (after a success). */
  forget(key: string): void {
    this.failureCounts.delete(key);
  }

  /** Resolves with the next key (now marked as processing), or undefined once the queue is shut down. */
  get(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.order.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks `key` as finished; queues it again if it was added while being processed. */
  done(key: string): void {
    this.processing.delete(key);
    if (!this.dirty.has(key) || this.closed) return;
    this.dirty.delete(key);
    this.add(key);
  }

  /** Stops handing out keys: waiting get() calls resolve with undefined and scheduled keys are dropped. */
  shutDown(): void {
    if (this.closed) return;
    this.closed = true;
    for (const { timer } of this.delayed.values()) timer.cancel();
    this.delayed.clear();
    this.order.length = 0;
    this.dirty.clear();
    for (const waiter of this.waiters.splice(0)) waiter(undefined);
  }
}

/**
 * Thrown by a reconcile that lost a benign race (a stale cache, a write conflict): retried with the same
 * backoff as any failure, but logged quietly and counted under reason "conflict".
 */
export class RetryLater extends Error {
  override readonly name = 'RetryLater';
  readonly code = 'CONFLICT';
}

/** What a reconcile asks of the queue after succeeding: nothing, or to be looked at again after a delay. */
export interface ReconcileOutcome {
  readonly requeueAfterMs?: number;
}

export interface WorkerHooks {
  /** Called after each attempt with its duration and outcome (for metrics and logs). */
  readonly onResult?: (key: string, result: { ok: true } | { ok: false; error: unknown; retryInMs: number }) => void;
}

/**
 * Runs `count` workers pulling from `queue` until it is shut down; resolves when every worker has finished its
 * current key. A thrown error retries the key with backoff; success forgets its failures and honours
 * `requeueAfterMs`.
 */
export async function runWorkers(
  queue: WorkQueue,
  count: number,
  reconcile: (key: string) => Promise<ReconcileOutcome | void>,
  hooks: WorkerHooks = {},
): Promise<void> {
  const worker = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const outcome = await reconcile(key);
        queue.forget(key);
        hooks.onResult?.(key, { ok: true });
        if (outcome && outcome.requeueAfterMs !== undefined) queue.addAfter(key, outcome.requeueAfterMs);
      } catch (error) {
        const retryInMs = queue.addRateLimited(key);
        hooks.onResult?.(key, { ok: false, error, retryInMs });
      } finally {
        queue.done(key);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, count) }, worker));
}
