import { describe, expect, it } from 'vitest';
import { createKeyedRateLimiter, createRateLimiter } from '../../src/rate-limit.js';
import { FakeClock, flushMicrotasks } from '../support/fake-clock.js';

describe('createRateLimiter', () => {
  it('lets a burst through at once, then paces callers at qps in arrival order', async () => {
    const clock = new FakeClock();
    const limiter = createRateLimiter({ qps: 10, burst: 3, clock });
    const passed: number[] = [];
    const start = clock.now();
    const all = Array.from({ length: 6 }, (_, i) => limiter.take().then(() => passed.push(i) && undefined));
    await flushMicrotasks();
    expect(passed).toEqual([0, 1, 2]);
    await clock.advance(99);
    expect(passed).toEqual([0, 1, 2]);
    await clock.advance(1);
    expect(passed).toEqual([0, 1, 2, 3]);
    await clock.advance(200);
    await Promise.all(all);
    expect(passed).toEqual([0, 1, 2, 3, 4, 5]);
    expect(clock.now() - start).toBe(300);
  });

  it('refills up to the burst after idling', async () => {
    const clock = new FakeClock();
    const limiter = createRateLimiter({ qps: 1, burst: 2, clock });
    await limiter.take();
    await limiter.take();
    await clock.advance(60_000);
    let n = 0;
    void limiter.take().then(() => n++);
    void limiter.take().then(() => n++);
    void limiter.take().then(() => n++);
    await flushMicrotasks();
    expect(n).toBe(2);
  });

  it('rejects a waiting caller when its signal aborts, and gives its slot back', async () => {
    const clock = new FakeClock();
    const limiter = createRateLimiter({ qps: 1, burst: 1, clock });
    await limiter.take();
    const ac = new AbortController();
    const waiting = limiter.take(ac.signal);
    ac.abort(new Error('lost leadership'));
    await expect(waiting).rejects.toThrow('lost leadership');
    await clock.advance(1000);
    let done = false;
    void limiter.take().then(() => { done = true; });
    await flushMicrotasks();
    expect(done).toBe(true);
    await expect(limiter.take(AbortSignal.abort(new Error('already')))).rejects.toThrow('already');
  });

  it('refuses a non-positive rate', () => {
    expect(() => createRateLimiter({ qps: 0, burst: 1, clock: new FakeClock() })).toThrow(RangeError);
  });
});

describe('createKeyedRateLimiter', () => {
  it('gives each key its own burst, refills at qps, and refuses at once when a bucket is empty', async () => {
    const clock = new FakeClock();
    const limiter = createKeyedRateLimiter({ qps: 2, burst: 3, clock });
    expect([1, 2, 3, 4].map(() => limiter.tryTake('a'))).toEqual([true, true, true, false]);
    expect(limiter.tryTake('b')).toBe(true); // another key is not affected
    await clock.advance(499);
    expect(limiter.tryTake('a')).toBe(false);
    await clock.advance(1);
    expect(limiter.tryTake('a')).toBe(true); // 0.5 s at 2/s is one token
    expect(limiter.tryTake('a')).toBe(false);
  });

  it('keeps at most maxKeys buckets, dropping full ones first, so many callers cannot grow it without bound', async () => {
    const clock = new FakeClock();
    const limiter = createKeyedRateLimiter({ qps: 1, burst: 2, clock, maxKeys: 3 });
    limiter.tryTake('busy');
    limiter.tryTake('busy');
    limiter.tryTake('x');
    await clock.advance(10_000); // x's bucket and busy's are full again
    limiter.tryTake('busy');
    limiter.tryTake('busy');
    limiter.tryTake('y');
    expect(limiter.size()).toBe(3);
    limiter.tryTake('z');
    expect(limiter.size()).toBeLessThanOrEqual(3);
    expect(limiter.tryTake('busy')).toBe(false); // its empty bucket was kept
  });

  it('refuses a rate that is not positive', () => {
    expect(() => createKeyedRateLimiter({ qps: 0, burst: 1, clock: new FakeClock() })).toThrow(RangeError);
    expect(() => createRateLimiter({ qps: 1, burst: 0, clock: new FakeClock() })).toThrow(RangeError);
  });
});
