import { describe, expect, it } from 'vitest';
import { runWorkers, WorkQueue } from '../../../src/controllers/queue.js';
import { FakeClock, flushMicrotasks } from '../../support/fake-clock.js';

describe('WorkQueue', () => {
  it('holds a waiting key once however often it is added', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.depth).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
    expect(q.depth).toBe(0);
  });

  it('does not hand a key to two workers; a key added while processing comes back after done()', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    q.add('a');
    expect(await q.get()).toBe('a');
    q.add('a');
    expect(q.depth).toBe(0);
    q.done('a');
    expect(q.depth).toBe(1);
    expect(await q.get()).toBe('a');
    q.done('a');
    expect(q.depth).toBe(0);
  });

  it('wakes a waiting get() on add and resolves waiters with undefined on shutdown', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    const first = q.get();
    q.add('x');
    expect(await first).toBe('x');
    const second = q.get();
    q.shutDown();
    expect(await second).toBeUndefined();
    q.add('y');
    expect(q.depth).toBe(0);
    expect(await q.get()).toBeUndefined();
  });

  it('addAfter queues at the due time and keeps the earlier of two schedules', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    q.addAfter('k', 1000);
    q.addAfter('k', 5000);
    await clock.advance(999);
    expect(q.depth).toBe(0);
    await clock.advance(1);
    expect(q.depth).toBe(1);
    expect(q.delayedCount).toBe(0);
    q.addAfter('j', 5000);
    q.addAfter('j', 2000);
    await clock.advance(2000);
    expect(q.depth).toBe(2);
  });

  it('rate-limits retries per key and forget() resets the backoff', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock, baseDelayMs: 100, maxDelayMs: 1000 });
    expect(q.addRateLimited('bad')).toBe(100);
    expect(q.addRateLimited('bad')).toBe(200);
    expect(q.addRateLimited('bad')).toBe(400);
    expect(q.failures('bad')).toBe(3);
    await clock.advance(100); // the earliest schedule (+100 ms) wins; the key is queued once
    expect(q.depth).toBe(1);
    expect(q.delayedCount).toBe(0);
    q.forget('bad');
    expect(q.failures('bad')).toBe(0);
    expect(q.addRateLimited('other')).toBe(100);
  });
});

describe('runWorkers', () => {
  it('retries a permanently failing key with growing delays instead of spinning, while other keys succeed', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock, baseDelayMs: 100, maxDelayMs: 5 * 60_000 });
    const attempts: Record<string, number[]> = {};
    const running = runWorkers(q, 2, async (key) => {
      (attempts[key] ??= []).push(clock.now() - start);
      if (key === 'forbidden') throw new Error('403 Forbidden');
    });
    const start = clock.now();
    q.add('forbidden');
    q.add('fine');
    await flushMicrotasks();
    // One minute of fake time: 100+200+...+51200 ms = 102.3 s > 60 s, so at most 10 attempts (not thousands).
    for (let i = 0; i < 60; i++) await clock.advance(1000);
    expect(attempts.fine).toEqual([0]);
    const tries = attempts.forbidden!;
    expect(tries.length).toBeGreaterThanOrEqual(9);
    expect(tries.length).toBeLessThanOrEqual(10);
    const gaps = tries.slice(1).map((t, i) => t - tries[i]!);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]!);
    expect(q.failures('forbidden')).toBe(tries.length);
    q.shutDown();
    await running;
  });

  it('honours requeueAfterMs after a success and forgets earlier failures', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    let calls = 0;
    const running = runWorkers(q, 1, async () => {
      calls++;
      if (calls === 1) throw new Error('transient');
      return { requeueAfterMs: 60_000 };
    });
    q.add('k');
    await flushMicrotasks();
    expect(calls).toBe(1);
    await clock.advance(100);
    expect(calls).toBe(2);
    expect(q.failures('k')).toBe(0);
    await clock.advance(59_999);
    expect(calls).toBe(2);
    await clock.advance(1);
    expect(calls).toBe(3);
    q.shutDown();
    await running;
  });

  it('resolves once shut down, after the key in hand is finished', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    let release!: () => void;
    let finished = false;
    const running = runWorkers(q, 1, async () => {
      await new Promise<void>((r) => { release = r; });
      finished = true;
    });
    q.add('slow');
    await flushMicrotasks();
    q.shutDown();
    let resolved = false;
    void running.then(() => { resolved = true; });
    await flushMicrotasks();
    expect(resolved).toBe(false);
    release();
    await running;
    expect(finished).toBe(true);
  });
});
