/**
 * Leader election on a coordination.k8s.io/v1 Lease, with the semantics of client-go's leaderelection:
 * - a candidate takes the Lease when it is free (no holder) or when the holder has not renewed it for a whole
 *   lease duration, measured on the candidate's own clock from when it last saw the record change (so clocks of
 *   different machines never need to agree);
 * - the leader renews every retry period and steps down the moment it has failed to renew for the renew deadline
 *   (shorter than the lease duration, so it stops before anyone else may take over), or on seeing another holder;
 * - every write is conditional on the resourceVersion read, so two candidates can never both win.
 * On a clean stop the leader releases the Lease (no holder, 1 s duration) so a peer takes over at once.
 */
import * as k8s from '@kubernetes/client-node';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { apiStatus, type KubeClients } from './client.js';

export interface LeaderElectionOptions {
  readonly kube: Pick<KubeClients, 'coordination'>;
  /** Namespace and name of the Lease. */
  readonly namespace: string;
  readonly name: string;
  /** This replica's unique identity (pod name plus something unique per process). */
  readonly identity: string;
  readonly clock: Clock;
  readonly log: Logger;
  /** Defaults 15 s / 10 s / 2 s (client-go's). Must satisfy retry < renewDeadline < leaseDuration. */
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  /** Called when this replica becomes leader; `signal` aborts the moment leadership is lost or stop() is called. */
  readonly onStartedLeading: (signal: AbortSignal) => void;
  /** Called after leadership is lost (not called if it was never held). */
  readonly onStoppedLeading?: () => void;
}

type Attempt = 'held' | 'other' | 'failed';

export interface LeaderElector {
  /** Starts campaigning in the background. */
  start(): void;
  /** Stops campaigning; a leader steps down (aborting its signal) and, unless `release` is false, frees the Lease. */
  stop(opts?: { release?: boolean }): Promise<void>;
  isLeader(): boolean;
}

/** @throws RangeError when the timings are inconsistent. */
export function createLeaderElector(opts: LeaderElectionOptions): LeaderElector {
  const leaseDurationMs = opts.leaseDurationMs ?? 15_000;
  const renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
  const retryPeriodMs = opts.retryPeriodMs ?? 2_000;
  if (!(retryPeriodMs > 0 && retryPeriodMs < renewDeadlineMs && renewDeadlineMs < leaseDurationMs)) {
    throw new RangeError('leader election needs 0 < retry period < renew deadline < lease duration');
  }
  const leaseDurationSeconds = Math.max(1, Math.ceil(leaseDurationMs / 1000));
  const { clock, identity, namespace, name } = opts;
  const coordination = opts.kube.coordination;
  const log = opts.log.child({ lease: `${namespace}/${name}`, identity });

  let running = false;
  let loop: Promise<void> | undefined;
  const stopController = { current: new AbortController() };
  let leading: AbortController | undefined;
  let term = 0;
  let lastRenew = 0;
  let watchdog: Timer | undefined;
  // What we last saw of the Lease and when (our clock): the basis for "has the holder stopped renewing?".
  let observedVersion: string | undefined;
  let observedAt = 0;

  const micro = (ms: number) => new k8s.V1MicroTime(ms);

  const becomeLeader = () => {
    term++;
    leading = new AbortController();
    lastRenew = clock.now();
    armWatchdog();
    log.info('acquired leadership');
    try {
      opts.onStartedLeading(leading.signal);
    } catch (err) {
      log.error({ err }, 'onStartedLeading failed');
    }
  };

  const loseLeadership = (reason: string) => {
    if (!leading) return;
    term++;
    watchdog?.cancel();
    watchdog = undefined;
    const ended = leading;
    leading = undefined;
    ended.abort(new Error(`leadership lost: ${reason}`));
    if (reason === 'stopped') log.info('stepped down; stopped writing');
    else log.warn({ reason }, 'lost leadership; stopped writing');
    try {
      opts.onStoppedLeading?.();
    } catch (err) {
      log.error({ err }, 'onStoppedLeading failed');
    }
  };

  // Steps down exactly at the renew deadline even if a renew request hangs.
  const armWatchdog = () => {
    watchdog?.cancel();
    const left = lastRenew + renewDeadlineMs - clock.now();
    watchdog = clock.setTimer(() => loseLeadership(`no successful renew for ${renewDeadlineMs} ms`), Math.max(0, left));
  };

  /** One read + conditional write: 'held' when we hold the Lease afterwards, 'other' when someone else validly does. */
  const tryAcquireOrRenew = async (): Promise<Attempt> => {
    const now = clock.now();
    let lease: k8s.V1Lease;
    try {
      lease = await coordination.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (apiStatus(err) !== 404) throw err;
      try {
        const created = await coordination.createNamespacedLease({
          namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: micro(now), renewTime: micro(now), leaseTransitions: 0 },
          },
        });
        observedVersion = created.metadata?.resourceVersion;
        observedAt = clock.now();
        return 'held';
      } catch (createErr) {
        if (apiStatus(createErr) === 409) return 'failed'; // someone else created it first
        throw createErr;
      }
    }
    const spec = lease.spec ?? {};
    const version = lease.metadata?.resourceVersion;
    if (version !== observedVersion) {
      observedVersion = version;
      observedAt = now;
    }
    const holder = spec.holderIdentity ?? '';
    const heldFor = (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
    if (holder !== '' && holder !== identity && observedAt + heldFor > now) return 'other';
    const mine = holder === identity;
    try {
      const updated = await coordination.replaceNamespacedLease({
        name,
        namespace,
        body: {
          ...lease,
          spec: {
            ...spec,
            holderIdentity: identity,
            leaseDurationSeconds,
            acquireTime: mine && spec.acquireTime ? spec.acquireTime : micro(now),
            renewTime: micro(now),
            leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
          },
        },
      });
      observedVersion = updated.metadata?.resourceVersion;
      observedAt = clock.now();
      if (!mine) log.info({ previousHolder: holder || undefined }, 'took over the lease');
      return 'held';
    } catch (err) {
      if (apiStatus(err) === 409) return 'failed'; // changed under us: the next read tells by whom
      throw err;
    }
  };

  /** Bounds one attempt so a hung request cannot hold up the loop (or stop()). */
  const attempt = async (): Promise<Attempt> => {
    let timer: Timer | undefined;
    const stopSignal = stopController.current.signal;
    let onStop: (() => void) | undefined;
    const timeout = new Promise<Attempt>((resolve) => {
      timer = clock.setTimer(() => resolve('failed'), renewDeadlineMs);
      onStop = () => resolve('failed');
      stopSignal.addEventListener('abort', onStop, { once: true });
    });
    try {
      return await Promise.race([
        tryAcquireOrRenew().catch((err: unknown) => {
          log.warn({ err }, 'lease request failed');
          return 'failed' as const;
        }),
        timeout,
      ]);
    } finally {
      timer?.cancel();
      if (onStop) stopSignal.removeEventListener('abort', onStop);
    }
  };

  const jitter = (ms: number) => ms * (1 + Math.random() * 0.2);

  const run = async () => {
    const stopSignal = stopController.current.signal;
    while (running) {
      const startedTerm = term;
      const wasLeading = leading !== undefined;
      const result = await attempt();
      if (!running) break;
      // A result from before a leadership change (say the watchdog fired while it was in flight) is stale.
      if (term === startedTerm) {
        if (result === 'held' && !wasLeading) becomeLeader();
        else if (result === 'held') {
          lastRenew = clock.now();
          armWatchdog();
        } else if (wasLeading && result === 'other') loseLeadership('another replica holds the lease');
        // 'failed' while leading: keep retrying; the watchdog steps down at the renew deadline.
      }
      try {
        await clock.sleep(leading ? retryPeriodMs : jitter(retryPeriodMs), stopSignal);
      } catch {
        break;
      }
    }
  };

  return {
    start() {
      if (running) return;
      running = true;
      stopController.current = new AbortController();
      loop = run();
    },
    async stop(stopOpts = {}) {
      if (!running) return;
      running = false;
      stopController.current.abort(new Error('stopped'));
      await loop;
      const wasLeading = leading !== undefined;
      loseLeadership('stopped');
      if (wasLeading && stopOpts.release !== false) {
        try {
          const lease = await coordination.readNamespacedLease({ name, namespace });
          if (lease.spec?.holderIdentity === identity) {
            await coordination.replaceNamespacedLease({
              name,
              namespace,
              body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: micro(clock.now()) } },
            });
            log.info('released the lease');
          }
        } catch (err) {
          log.warn({ err }, 'could not release the lease');
        }
      }
    },
    isLeader: () => leading !== undefined,
  };
}
