/**
 * Per-key token buckets (the CA limits issuance per identity). Non-blocking: `tryTake` answers at once, so a
 * caller over its budget gets RESOURCE_EXHAUSTED instead of queueing on the CA.
 */
import type { Clock } from '../clock.js';

export interface KeyedRateLimiter {
  /** Takes one token for `key`; false when its bucket is empty. */
  tryTake(key: string): boolean;
  /** Buckets currently tracked. */
  size(): number;
}

/**
 * `qps` tokens per second per key, at most `burst` saved. At most `maxKeys` buckets are kept: full buckets are
 * dropped first (they carry no state), then the oldest.
 * @throws RangeError when qps or burst is not positive.
 */
export function createKeyedRateLimiter(opts: { qps: number; burst: number; clock: Clock; maxKeys?: number }): KeyedRateLimiter {
  if (!(opts.qps > 0) || !(opts.burst >= 1)) throw new RangeError('qps must be > 0 and burst >= 1');
  const { qps, burst, clock } = opts;
  const maxKeys = opts.maxKeys ?? 50_000;
  const buckets = new Map<string, { tokens: number; last: number }>();

  const refill = (b: { tokens: number; last: number }, now: number) => {
    b.tokens = Math.min(burst, b.tokens + ((now - b.last) / 1000) * qps);
    b.last = now;
  };

  const evict = (now: number) => {
    for (const [k, b] of buckets) {
      refill(b, now);
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
        refill(b, now);
      }
      if (b.tokens < 1) return false;
      b.tokens -= 1;
      return true;
    },
  };
}
