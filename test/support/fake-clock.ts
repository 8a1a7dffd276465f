/**
 * A Clock that only moves when told to. `advance(ms)` fires due timers in time order (a timer set by a
 * firing timer runs in the same advance if it falls due within it). `sleep` resolves through the same timers.
 */
import { sleepOnTimer, type Clock, type Timer } from '../../src/clock.js';

interface Pending {
  readonly id: number;
  readonly due: number;
  readonly fn: () => void;
}

export class FakeClock implements Clock {
  private current: number;
  private seq = 0;
  private pending: Pending[] = [];

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const entry: Pending = { id: ++this.seq, due: this.current + Math.max(0, ms), fn };
    this.pending.push(entry);
    return { cancel: () => { this.pending = this.pending.filter((p) => p !== entry); } };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepOnTimer(this, ms, signal);
  }

  /** Number of timers not yet fired. */
  get pendingTimers(): number {
    return this.pending.length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order; lets promise callbacks run between timers. */
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    for (;;) {
      await flushMicrotasks();
      const next = this.pending.filter((p) => p.due <= target).sort((a, b) => a.due - b.due || a.id - b.id)[0];
      if (!next) break;
      this.pending = this.pending.filter((p) => p !== next);
      this.current = Math.max(this.current, next.due);
      next.fn();
    }
    this.current = target;
    await flushMicrotasks();
  }
}

/** Lets queued promise callbacks (and the ones they queue) run. */
export async function flushMicrotasks(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
