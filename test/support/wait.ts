/**
 * Real-time polling for tests that watch real components (apiserver, processes, Envoy) converge. Code driven by a
 * FakeClock should advance the clock instead.
 */
import { isNotFound } from '../../src/kube/client.js';

export interface PollOptions {
  /** Give up after this long (default 15 s). */
  timeoutMs?: number;
  /** Pause between attempts (default 100 ms). */
  intervalMs?: number;
  /** Extra text for the timeout error, e.g. a process's recent output. */
  context?: () => string;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns a truthy value and returns that value. A check that throws counts as "not yet",
 * so a transient apiserver error does not end the wait.
 * @throws Error after `timeoutMs`, naming `what`, the last error thrown by `check` and `context()`.
 */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, opts: PollOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let lastError = '';
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}${opts.context ? `\n${opts.context()}` : ''}`);
    await pause(opts.intervalMs ?? 100);
  }
}

/**
 * Runs `fn` until it completes without throwing and returns its result; for blocks of assertions that hold only
 * once the system has converged.
 * @throws the last error of `fn` after `timeoutMs` (so an assertion's own message reaches the report).
 */
export async function retryUntilPasses<T>(fn: () => Promise<T>, opts: Omit<PollOptions, 'context'> = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await pause(opts.intervalMs ?? 100);
    }
  }
}

/** The object a read returns, or undefined when the apiserver says 404. @throws any other error of `read`. */
export async function unlessNotFound<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}
