/**
 * The one owner of time. Rotation, TTLs, caches and backoff take a Clock so tests can drive a fake one
 * (test/support/fake-clock.ts) instead of sleeping. src/pki never reads time: callers pass `now` in.
 */
export interface Timer {
  cancel(): void;
}

/** Time as citadel sees it: the system clock in production, a FakeClock in tests. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `fn` after `ms` milliseconds; the returned timer does not keep the process alive. */
  setTimer(fn: () => void, ms: number): Timer;
  /** Resolves after `ms` milliseconds, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

// setTimeout takes at most a signed 32-bit delay; longer timers are chained.
const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    let handle: NodeJS.Timeout;
    const due = Date.now() + ms;
    const arm = (delay: number) => {
      handle = setTimeout(() => {
        const left = due - Date.now();
        if (left > 0) arm(left);
        else fn();
      }, Math.min(Math.max(delay, 0), MAX_TIMER_MS));
      handle.unref();
    };
    arm(ms);
    return { cancel: () => clearTimeout(handle) };
  },
  sleep: (ms, signal) => sleepOnTimer(systemClock, ms, signal),
};

/**
 * `Clock.sleep` in terms of the clock's own `setTimer`, so every Clock (the system one, the tests' fake one) sleeps
 * the same way. Rejects with the signal's reason when it is (or becomes) aborted.
 */
export function sleepOnTimer(clock: Pick<Clock, 'setTimer'>, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      timer.cancel();
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
