/**
 * Admission to the signing pool under load (issue 14): at most `capacity` jobs run at once; the others wait in
 * arrival order instead of being refused, for as long as they can still be answered before their gRPC deadline and
 * at most `maxWaitMs`. A start-up storm (a node reboot, a rollout) is thereby served, and only what cannot be served
 * in time is refused, with CA_BUSY (its own metric label, not RATE_LIMITED: the caller did nothing wrong).
 *
 * A waiter is refused as soon as it is clear it cannot make its deadline: at arrival when the jobs ahead of it,
 * at the recent service time, would take too long; otherwise when its wait runs out.
 */
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';

export interface AdmissionQueue {
  /** A release function when the job may run right now (nobody waiting, a slot free), else undefined. */
  tryAdmit(): (() => void) | undefined;
  /**
   * Resolves with a release function once the job may run (call it exactly once when the job is done).
   * @param deadline ms since the epoch by which the caller needs its answer (Infinity: none).
   * @throws CitadelError CA_BUSY when the queue is full or the job cannot start in time.
   */
  admit(deadline?: number): Promise<() => void>;
  /** Jobs running. */
  running(): number;
  /** Jobs waiting. */
  waiting(): number;
}

export interface AdmissionOptions {
  /** Jobs that may run at once. */
  readonly capacity: number;
  /** Jobs that may wait; beyond it a job is refused at once. */
  readonly maxQueued: number;
  /** Longest wait, whatever the deadline. */
  readonly maxWaitMs: number;
  readonly clock: Clock;
}

interface Waiter {
  readonly admit: () => void;
  readonly timer: Timer;
}

const busy = (why: string) => new CitadelError('CA_BUSY', `the CA is busy: ${why}; retry later`);

/** @throws RangeError when capacity < 1. */
export function createAdmissionQueue(opts: AdmissionOptions): AdmissionQueue {
  if (!(opts.capacity >= 1)) throw new RangeError('capacity must be at least 1');
  const { clock, capacity } = opts;
  const queue: Waiter[] = [];
  let running = 0;
  /** Recent time from admission to release (an exponentially weighted mean), to foresee waits. */
  let serviceMs = 0;

  const start = (): (() => void) => {
    running++;
    const started = clock.now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      running--;
      serviceMs = serviceMs === 0 ? clock.now() - started : 0.8 * serviceMs + 0.2 * (clock.now() - started);
      queue.shift()?.admit();
    };
  };

  const tryAdmit = () => (running < capacity && queue.length === 0 ? start() : undefined);

  return {
    running: () => running,
    waiting: () => queue.length,
    tryAdmit,
    admit(deadline = Infinity) {
      const now = tryAdmit();
      if (now) return Promise.resolve(now);
      if (queue.length >= opts.maxQueued) return Promise.reject(busy(`${queue.length} requests are waiting`));
      const arrived = clock.now();
      // Rounds of `capacity` jobs ahead of this one, then its own service.
      const expectedDone = arrived + (Math.floor(queue.length / capacity) + 1) * serviceMs + serviceMs;
      if (expectedDone > deadline) return Promise.reject(busy('the request cannot be answered before its deadline'));
      const waitMs = Math.min(opts.maxWaitMs, deadline - serviceMs - arrived);
      return new Promise((resolve, reject) => {
        const waiter: Waiter = {
          admit: () => {
            waiter.timer.cancel();
            resolve(start());
          },
          timer: clock.setTimer(() => {
            const i = queue.indexOf(waiter);
            if (i !== -1) queue.splice(i, 1);
            reject(busy(`waited ${Math.round(clock.now() - arrived)} ms without a turn`));
          }, waitMs),
        };
        queue.push(waiter);
      });
    },
  };
}
