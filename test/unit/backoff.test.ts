import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../src/backoff.js';
import { DEFAULT_BACKOFF } from '../../src/agent/secret-cache.js';

const mid = () => 0.5;

describe('backoffDelay', () => {
  // The numbers each caller uses: the work queue (100 ms .. 5 min, no jitter), the Secret watch and the informers
  // (200 ms .. 30 s, no jitter), the agent's CSR retries (500 ms .. 60 s, ±10 %).
  it.each([
    { caller: 'work queue', policy: { initialMs: 100, maxMs: 300_000 }, failures: [0, 1, 2, 3, 4, 12, 13, 10_000], delays: [0, 100, 200, 400, 800, 204_800, 300_000, 300_000] },
    { caller: 'secret watch, informer', policy: { initialMs: 200, maxMs: 30_000 }, failures: [1, 2, 3, 7, 8, 9, 1_000], delays: [200, 400, 800, 12_800, 25_600, 30_000, 30_000] },
    { caller: 'agent CSR retries (jitter at its middle)', policy: DEFAULT_BACKOFF, failures: [1, 2, 3, 4, 5, 6, 7, 8, 9, 50], delays: [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000] },
  ])('$caller: doubles from the initial delay per failure and stops at the cap', ({ policy, failures, delays }) => {
    expect(failures.map((n) => backoffDelay(n, policy, mid))).toEqual(delays);
  });

  it('spreads by ±jitter, within [initial, max]', () => {
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 0)).toBe(1800);
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 0.999999)).toBe(2200);
    expect(backoffDelay(1, DEFAULT_BACKOFF, () => 0)).toBe(500);
    expect(backoffDelay(20, DEFAULT_BACKOFF, () => 0.999999)).toBe(60_000);
  });

  it('draws no random number without jitter, and none when nothing failed', () => {
    let draws = 0;
    const random = () => {
      draws++;
      return 0.5;
    };
    expect(backoffDelay(5, { initialMs: 100, maxMs: 1000 }, random)).toBe(1000);
    expect(backoffDelay(0, DEFAULT_BACKOFF, random)).toBe(0);
    expect(draws).toBe(0);
  });

  it('stays finite for any failure count', () => {
    expect(backoffDelay(Number.MAX_SAFE_INTEGER, { initialMs: 1, maxMs: 2 ** 70 })).toBe(2 ** 60);
  });
});
