/**
 * Token buckets on a Clock: `qps` tokens per second, at most `burst` saved up. Two ways to spend them:
 * - createRateLimiter: one bucket, callers wait their turn (the controllers' writes to the apiserver);
 * - createKeyedRateLimiter: a bucket per key that answers at once, so a caller over its budget is refused instead
 *   of queueing (the CA's per-identity issuance limit).
 */
import type { Clock } from './clock.js';

interface Bucket {
  tokens: number;
  last: number;
}

/** Adds what accrued since `bucket.last`, capped at `burst`. */
function refill(bucket: Bucket, now: number, qps: number, burst: number): void {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.last) / 1000) * qps);
  bucket.last = now;
}

function checkRates(qps: number, burst: number): void {
  if (!(qps > 0) || !(burst >= 1)) throw new RangeError('qps must be > 0 and burst >= 1');
}

/** One token bucket whose callers wait for their token. */
export interface RateLimiter {
  /** Resolves when a token is available; rejects with the signal's reason when aborted. */
  take(signal?: AbortSignal): Promise<void>;
}

/** @throws RangeError when qps or burst is not positive. */
export function createRateLimiter(opts: { qps: number; burst: number; clock: Clock }): RateLimiter {
  const { clock, qps, burst } = opts;
  checkRates(qps, burst);
  const bucket: Bucket = { tokens: burst, last: clock.now() };
  // Callers reserve tokens in arrival order: `tokens` may go negative, and each caller waits for its own debt.
  return {
    async take(signal) {
      signal?.throwIfAborted();
      refill(bucket, clock.now(), qps, burst);
      bucket.tokens -= 1;
      if (bucket.tokens >= 0) return;
      const waitMs = Math.ceil((-bucket.tokens / qps) * 1000);
      try {
        await clock.sleep(waitMs, signal);
      } catch (err) {
        bucket.tokens += 1; // give the reservation back
        throw err;
      }
    },
  };
}

/** Token buckets per key that never wait. */
export interface KeyedRateLimiter {
  /** Takes one token for `key`; false when its bucket is empty. */
  tryTake(key: string): boolean;
  /** Buckets currently tracked. */
  size(): number;
}

/**
 * At most `maxKeys` buckets are kept: full buckets are dropped first (they carry no state), then the oldest.
 * @throws RangeError when qps or burst is not positive.
 */
export function createKeyedRateLimiter(opts: { qps: number; burst: number; clock: Clock; maxKeys?: number }): KeyedRateLimiter {
  const { qps, burst, clock } = opts;
  checkRates(qps, burst);
  const maxKeys = opts.maxKeys ?? 50_000;
  const buckets = new Map<string, Bucket>();

  const evict = (now: number) => {
    for (const [k, b] of buckets) {
      refill(b, now, qps, burst);
      if (b.tokens >= burst) buckets.delete(k);
    }
    while (buckets.size >= maxKeys) buckets.delete(buckets.keys().next().value!);
  };

  return {
    size: () => buckets.size,
    tryTake(key) {
      const now = clock.now();
      let b = buckets.get(key);
      if (!b) {
        if (buckets.size >= maxKeys) evict(now);
        b = { tokens: burst, last: now };
        buckets.set(key, b);
      } else {
        refill(b, now, qps, burst);
      }
      if (b.tokens < 1) return false;
      b.tokens -= 1;
      return true;
    },
  };
}
