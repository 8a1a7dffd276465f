/**
 * Leader election timing, driven by fake clocks against the real apiserver: every Lease read and write is real,
 * only time is simulated, so "a candidate waits a whole lease duration on its own clock" is checked to the
 * millisecond instead of with real sleeps. Each elector has its own clock, as replicas on different machines do.
 * (test/integration/controllers-leader.test.ts covers partitions and the controllers in real time.)
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLeaderElector, type LeaderElector } from '../../src/kube/lease.js';
import type { KubeClients } from '../../src/kube/client.js';
import { silentLogger } from '../../src/log.js';
import { getCluster, type TestCluster } from '../harness/index.js';
import { FakeClock, flushMicrotasks } from '../support/fake-clock.js';
import { waitFor } from '../support/wait.js';

const LEASE_MS = 15_000;
const RENEW_DEADLINE_MS = 10_000;
const RETRY_MS = 2_000;

let cluster: TestCluster;
let namespace: string;
const electors: LeaderElector[] = [];

interface Candidate {
  readonly elector: LeaderElector;
  readonly clock: FakeClock;
  /** Lease requests sent and not yet answered. */
  inFlight(): number;
}

/** An elector on its own fake clock whose Lease requests go to the real apiserver (counted, not changed). */
function candidate(identity: string, lease: string): Candidate {
  const clock = new FakeClock(Date.now());
  let inFlight = 0;
  const real = cluster.kube().coordination;
  const counted = new Proxy(real, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        inFlight++;
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } finally {
          inFlight--;
        }
      };
    },
  });
  const elector = createLeaderElector({
    kube: { coordination: counted } as Pick<KubeClients, 'coordination'>,
    namespace,
    name: lease,
    identity,
    clock,
    log: silentLogger,
    leaseDurationMs: LEASE_MS,
    renewDeadlineMs: RENEW_DEADLINE_MS,
    retryPeriodMs: RETRY_MS,
    onStartedLeading: () => undefined,
  });
  electors.push(elector);
  return { elector, clock, inFlight: () => inFlight };
}

/** Waits (real time) until the candidate's loop has finished its request and sleeps on its fake clock. */
async function settled(c: Candidate): Promise<void> {
  await waitFor('the elector to finish its Lease request', async () => {
    await flushMicrotasks();
    return c.inFlight() === 0 && c.clock.pendingTimers > 0;
  });
}

/** Advances the candidate's clock in steps no longer than a retry period, letting each attempt finish. */
async function run(c: Candidate, ms: number): Promise<void> {
  for (let left = ms; left > 0; left -= RETRY_MS) {
    await c.clock.advance(Math.min(RETRY_MS, left));
    await settled(c);
  }
}

async function holder(lease: string): Promise<string | undefined> {
  return (await cluster.kube().coordination.readNamespacedLease({ name: lease, namespace })).spec?.holderIdentity ?? undefined;
}

beforeAll(async () => {
  cluster = getCluster();
  namespace = await cluster.createNamespace('lease-clock');
});

afterEach(async () => {
  for (const e of electors.splice(0)) await e.stop({ release: false });
});

describe('leader election on fake clocks against the real apiserver', () => {
  it('takes over from a holder that stopped renewing only after a whole lease duration on its own clock', async () => {
    const a = candidate('a', 'takeover');
    a.elector.start();
    await settled(a);
    expect(a.elector.isLeader()).toBe(true);
    expect(await holder('takeover')).toBe('a');

    const b = candidate('b', 'takeover');
    b.elector.start();
    await settled(b);
    expect(b.elector.isLeader()).toBe(false);

    // a crashes: no more renewals, no release. b's clock starts counting from the last change it saw.
    await a.elector.stop({ release: false });
    // The candidate retries on a jittered period (up to 1.2x), so stay clear of the boundary by one retry.
    await run(b, LEASE_MS - RETRY_MS * 1.2);
    expect(b.elector.isLeader(), 'no takeover before the lease duration has passed').toBe(false);
    expect(await holder('takeover')).toBe('a');
    await run(b, RETRY_MS * 2.5);
    expect(b.elector.isLeader()).toBe(true);
    expect(await holder('takeover')).toBe('b');
    const lease = await cluster.kube().coordination.readNamespacedLease({ name: 'takeover', namespace });
    expect(lease.spec?.leaseTransitions).toBe(1);
  });

  it('a holder that keeps renewing is never replaced, however long the candidate waits', async () => {
    const a = candidate('a', 'renewing');
    a.elector.start();
    await settled(a);
    const b = candidate('b', 'renewing');
    b.elector.start();
    await settled(b);
    // Both clocks move together, a minute in all: a renews every retry period, so b keeps seeing changes.
    for (let t = 0; t < 60_000; t += RETRY_MS) {
      await a.clock.advance(RETRY_MS);
      await settled(a);
      await b.clock.advance(RETRY_MS);
      await settled(b);
    }
    expect(a.elector.isLeader()).toBe(true);
    expect(b.elector.isLeader()).toBe(false);
    expect(await holder('renewing')).toBe('a');
  });

  it('a clean stop releases the Lease, so a candidate takes over on its next retry', async () => {
    const a = candidate('a', 'release');
    a.elector.start();
    await settled(a);
    const b = candidate('b', 'release');
    b.elector.start();
    await settled(b);
    await a.elector.stop();
    expect(await holder('release')).toBeUndefined();
    await run(b, RETRY_MS * 1.2);
    expect(b.elector.isLeader()).toBe(true);
  });

  it('a leader that sees another holder steps down at its next renew', async () => {
    const a = candidate('a', 'stolen');
    a.elector.start();
    await settled(a);
    expect(a.elector.isLeader()).toBe(true);
    const lease = await cluster.kube().coordination.readNamespacedLease({ name: 'stolen', namespace });
    await cluster.kube().coordination.replaceNamespacedLease({
      name: 'stolen',
      namespace,
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'someone-else' } },
    });
    await run(a, RETRY_MS);
    expect(a.elector.isLeader()).toBe(false);
  });
});
