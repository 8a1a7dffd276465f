import { describe, expect, it } from 'vitest';
import { createCallTracker } from '../../../src/ca/server.js';

describe('createCallTracker', () => {
  it('calls a call alone only when no other is in progress and none has overlapped for the quiet period', () => {
    let now = 0;
    const d = createCallTracker({ quietMs: 1_000, now: () => now });
    d.started();
    expect(d.alone()).toBe(true);
    d.started(); // overlap at t=0
    expect(d.inProgress()).toBe(2);
    expect(d.alone()).toBe(false);
    d.ended();
    now = 999;
    expect(d.alone()).toBe(false);
    now = 1_000;
    expect(d.alone()).toBe(true);
    d.ended();
    expect(d.inProgress()).toBe(0);
    d.started();
    expect(d.alone()).toBe(true);
  });
});
