/**
 * The one exponential backoff: the work queue's per-key retries, the agent's CSR retries, and the restarts of the
 * Secret watch and the informers all wait `backoffDelay(failures, policy)`. Pure: callers pass the failure count
 * and, for jitter, the random source (tests pass a fixed one).
 */

export interface Backoff {
  /** Delay after the first failure; doubles per consecutive failure. */
  readonly initialMs: number;
  /** Cap on the delay. */
  readonly maxMs: number;
  /** Relative jitter, e.g. 0.1 = ±10 % (default none); the result stays within [initialMs, maxMs]. */
  readonly jitter?: number;
}

/**
 * Delay before retry number `failures` (1-based): initialMs * 2^(failures-1), capped at maxMs, ±jitter drawn from
 * `random` (which returns [0, 1), as Math.random) and kept within [initialMs, maxMs]. 0 when nothing failed.
 */
export function backoffDelay(failures: number, policy: Backoff, random: () => number = Math.random): number {
  if (failures <= 0) return 0;
  // Clamping the exponent keeps the number finite; 2^60 times any base is far past any cap.
  const exponential = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(failures - 1, 60));
  const jittered = policy.jitter ? exponential * (1 + (random() * 2 - 1) * policy.jitter) : exponential;
  return Math.round(Math.min(policy.maxMs, Math.max(policy.initialMs, jittered)));
}
