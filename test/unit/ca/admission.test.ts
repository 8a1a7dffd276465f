/** The signing pool's admission policy (src/ca/admission.ts), driven by a fake clock. */
import { describe, expect, it } from 'vitest';
import { createAdmissionQueue } from '../../../src/ca/admission.js';
import { CitadelError } from '../../../src/errors.js';
import { FakeClock } from '../../support/fake-clock.js';

/** Settles `p` into 'admitted' (with its release), or the refusal's code and message. */
function track(p: Promise<() => void>) {
  const state: { result?: 'admitted' | { code: string; message: string }; release?: () => void } = {};
  p.then(
    (release) => {
      state.result = 'admitted';
      state.release = release;
    },
    (err: CitadelError) => {
      state.result = { code: err.code, message: err.message };
    },
  );
  return state;
}
const settle = () => new Promise((r) => setImmediate(r));

describe('admission to the signing pool', () => {
  it('runs up to capacity at once and serves the rest in arrival order as slots free, refusing nobody', async () => {
    const clock = new FakeClock();
    const q = createAdmissionQueue({ capacity: 2, maxQueued: 100, maxWaitMs: 10_000, clock });
    const calls = Array.from({ length: 6 }, () => track(q.admit(clock.now() + 10_000)));
    await settle();
    expect(calls.map((c) => c.result)).toEqual(['admitted', 'admitted', undefined, undefined, undefined, undefined]);
    expect([q.running(), q.waiting()]).toEqual([2, 4]);
    for (let i = 0; i < 6; i++) {
      await clock.advance(5);
      calls[i]!.release!();
      calls[i]!.release!(); // a second release changes nothing
      await settle();
    }
    expect(calls.map((c) => c.result)).toEqual(Array(6).fill('admitted'));
    expect([q.running(), q.waiting()]).toEqual([0, 0]);
  });

  it('refuses with CA_BUSY what cannot be answered before its deadline, at once when that is already clear', async () => {
    const clock = new FakeClock();
    const q = createAdmissionQueue({ capacity: 1, maxQueued: 100, maxWaitMs: 10_000, clock });
    // Teach it the service time: 100 ms per job.
    const first = track(q.admit());
    await settle();
    await clock.advance(100);
    first.release!();
    const running = track(q.admit());
    await settle();
    // Behind one running job, one waiter can make a 250 ms deadline (about 100 + 100 ms), a second cannot.
    const fits = track(q.admit(clock.now() + 250));
    const late = track(q.admit(clock.now() + 250));
    await settle();
    expect(late.result).toEqual({ code: 'CA_BUSY', message: 'the CA is busy: the request cannot be answered before its deadline; retry later' });
    expect(new CitadelError('CA_BUSY', 'x').grpcStatus).toBe(8);
    expect(new CitadelError('CA_BUSY', 'x').metricLabel).toBe('CA_BUSY');
    // The running job takes longer than expected: the waiter gives up when its deadline would be missed.
    await clock.advance(150);
    await settle();
    expect(fits.result).toEqual({ code: 'CA_BUSY', message: 'the CA is busy: waited 150 ms without a turn; retry later' });
    running.release!();
    expect([q.running(), q.waiting()]).toEqual([0, 0]);
  });

  it('waits at most maxWaitMs whatever the deadline, and holds at most maxQueued', async () => {
    const clock = new FakeClock();
    const q = createAdmissionQueue({ capacity: 1, maxQueued: 2, maxWaitMs: 1_000, clock });
    const running = track(q.admit());
    const waiting = [track(q.admit()), track(q.admit(Infinity))];
    const over = track(q.admit());
    await settle();
    expect(over.result).toEqual({ code: 'CA_BUSY', message: 'the CA is busy: 2 requests are waiting; retry later' });
    await clock.advance(999);
    await settle();
    expect(waiting.map((w) => w.result)).toEqual([undefined, undefined]);
    await clock.advance(1);
    await settle();
    expect(waiting.map((w) => w.result)).toEqual(Array(2).fill({ code: 'CA_BUSY', message: 'the CA is busy: waited 1000 ms without a turn; retry later' }));
    running.release!();
    expect(track(q.admit()).result).toBeUndefined();
    await settle();
    expect(q.running()).toBe(1);
  });
});
