/**
 * Keeps the workload certificate fresh: issue at start, renew at `graceRatio` of the lifetime (with a little
 * jitter so a fleet started together does not renew together), retry failures with exponential backoff and
 * jitter while the still-valid certificate keeps being served, and keep ROOTCA in step with the root file.
 *
 * ROOTCA is the root file merged with the last element of the CA's latest response, deduplicated. Istio serves
 * only the response's last element; we add the root file because it is the bundle the CA leader distributes
 * (istio-ca-root-cert) and, during a root rotation, whichever of the two learns the new root first widens trust
 * in time, and a change of the file alone (no renewal needed) reaches Envoy at once. A root dropped from both is
 * dropped from ROOTCA at the next change of either.
 */
import { createHash } from 'node:crypto';
import { backoffDelay, type Backoff } from '../backoff.js';
import type { Clock, Timer } from '../clock.js';
import { toCitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CaIssuer } from './ca-issuer.js';
import { watchFiles, type FileWatcher } from '../file-watch.js';
import { mergeTrustBundles } from './material.js';
import type { AgentMetrics } from './metrics.js';
import type { WorkloadSecretsPublisher } from './secret-store.js';

/** initialMs default 500 ms; maxMs (the bound while a valid certificate is served) default 60 s. */
export interface BackoffPolicy extends Backoff {
  /**
   * Upper bound while no valid certificate is served (default 5 s): the workload has no identity, so a CA or
   * apiserver that comes back must be used within seconds, whatever the failure count has climbed to.
   */
  readonly maxUnservedMs: number;
  /** Relative jitter, e.g. 0.1 = ±10 % (default 0.1). */
  readonly jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 60_000, maxUnservedMs: 5000, jitter: 0.1 };
/** Istio's SECRET_GRACE_PERIOD_RATIO_JITTER. */
export const DEFAULT_GRACE_JITTER = 0.01;

/**
 * When to renew: `notAfter - (ratio ± U(0, jitter)) * (notAfter - receivedAt)`, i.e. with ratio 0.5 halfway
 * through the lifetime as seen from when the certificate arrived. `random` returns [0, 1).
 */
export function renewalTime(opts: { receivedAt: number; notAfter: number; graceRatio: number; jitter?: number; random?: () => number }): number {
  const random = opts.random ?? Math.random;
  const jitter = opts.jitter ?? DEFAULT_GRACE_JITTER;
  const ratio = Math.min(1, Math.max(0, opts.graceRatio + (random() * 2 - 1) * jitter));
  const lifetime = Math.max(0, opts.notAfter - opts.receivedAt);
  return Math.round(opts.notAfter - ratio * lifetime);
}

/**
 * Delay before the next attempt after `failures` consecutive failures: the exponential backoff, but
 * - while a still-valid certificate is served, never more than half of its remaining life (and not below the
 *   initial delay), so that a CA that comes back shortly before the expiry is used in time (Istio's fixed 60 s cap
 *   would let a short-lived certificate expire while the CA is already back);
 * - while none is served (none yet, or expired), never more than `maxUnservedMs` (jittered below it): the
 *   failure count climbs fast near the expiry, and the full backoff would keep the workload without an identity
 *   for up to a minute after the fault has cleared.
 */
export function retryDelay(opts: { failures: number; policy?: BackoffPolicy; random?: () => number; now: number; notAfter?: number }): number {
  const policy = opts.policy ?? DEFAULT_BACKOFF;
  if (opts.notAfter === undefined || opts.notAfter <= opts.now) {
    return backoffDelay(opts.failures, { ...policy, maxMs: Math.min(policy.maxMs, policy.maxUnservedMs) }, opts.random);
  }
  const delay = backoffDelay(opts.failures, policy, opts.random);
  return Math.max(policy.initialMs, Math.min(delay, Math.floor((opts.notAfter - opts.now) / 2)));
}

export interface SecretCacheDeps {
  issuer: CaIssuer;
  secrets: WorkloadSecretsPublisher;
  /** The root bundle file (also what the CA connection trusts); watched for changes. */
  rootCertPath: string;
  /** The token file; watched so that a new token after a failure is tried at once. */
  tokenPath: string;
  graceRatio: number;
  graceJitter?: number;
  backoff?: BackoffPolicy;
  clock: Clock;
  log: Logger;
  metrics?: AgentMetrics;
  random?: () => number;
  /** Poll interval of the root and token file watcher (default 2 s). */
  rootPollMs?: number;
}

export interface SecretCache {
  /** Reads the root file, publishes ROOTCA if it has one, and starts issuing (does not wait for the CA). */
  start(): Promise<void>;
  /** Stops timers, watchers and any call in flight. */
  stop(): void;
  /** When the next issue attempt is due (ms), if one is scheduled. */
  nextAttemptAt(): number | undefined;
  /** Consecutive failed attempts since the last success. */
  failures(): number;
  /** Resolves once a certificate has been published (or rejects when stopped first). */
  whenIssued(): Promise<void>;
  /**
   * Resolves once the first attempt has sent its request to the CA, has failed, or the cache has stopped: start-up
   * work that can wait should wait for this, so it overlaps the CA's answer instead of delaying the request.
   */
  whenRequested(): Promise<void>;
}

/** Creates the cache; nothing happens until start(). */
export function createSecretCache(deps: SecretCacheDeps): SecretCache {
  const log = deps.log;
  const random = deps.random ?? Math.random;
  const backoff = deps.backoff ?? DEFAULT_BACKOFF;
  let stopped = false;
  let timer: Timer | undefined;
  let dueAt: number | undefined;
  let inFlight: AbortController | undefined;
  let failures = 0;
  /** The root or token file changed while an attempt was in flight: if it fails, try again at once. */
  let changedDuringAttempt = false;
  let tokenDigest: string | undefined;
  let rootFilePem: string | undefined;
  let responseRootsPem: string | undefined;
  let watcher: FileWatcher | undefined;
  let issued!: () => void;
  let notIssued!: (err: Error) => void;
  const firstIssue = new Promise<void>((resolve, reject) => {
    issued = resolve;
    notIssued = reject;
  });
  firstIssue.catch(() => undefined);
  let requested!: () => void;
  const firstRequest = new Promise<void>((resolve) => (requested = resolve));

  const publishTrust = () => {
    if (!rootFilePem && !responseRootsPem) return;
    try {
      deps.secrets.publishTrustBundle(mergeTrustBundles([rootFilePem, responseRootsPem], deps.clock.now()));
    } catch (err) {
      log.error({ err: toCitadelError(err) }, 'trust bundle not published: no usable certificate');
    }
  };

  /** Takes in new root file content; returns true when it changed what is trusted. */
  const onRootFile = (text: string | undefined): boolean => {
    if (text === undefined || text.trim() === '') {
      if (!rootFilePem) return false;
      log.warn({ path: deps.rootCertPath }, 'root file is gone; keeping the CA-provided roots');
      rootFilePem = undefined;
    } else {
      if (text === rootFilePem) return false;
      try {
        mergeTrustBundles([text]);
      } catch (err) {
        log.error({ path: deps.rootCertPath, err: toCitadelError(err) }, 'root file holds no usable certificate; keeping the last one');
        return false;
      }
      rootFilePem = text;
      log.info({ path: deps.rootCertPath }, 'root file loaded');
    }
    publishTrust();
    return true;
  };

  const schedule = (delayMs: number) => {
    timer?.cancel();
    if (stopped) return;
    dueAt = deps.clock.now() + delayMs;
    timer = deps.clock.setTimer(() => void attempt(), delayMs);
  };

  /**
   * After a failure, a new root file or token is likely what fixes it (the CA moved to a root the pod had not
   * seen yet; kubelet wrote a fresh token): try at once instead of waiting out the backoff.
   */
  const retryAfterChange = (what: string) => {
    if (stopped || failures === 0) return;
    if (inFlight) {
      changedDuringAttempt = true;
      return;
    }
    log.info({ changed: what, failures }, 'input changed after a failed attempt; retrying now');
    schedule(0);
  };

  const attempt = async () => {
    timer = undefined;
    dueAt = undefined;
    if (stopped) return;
    changedDuringAttempt = false;
    inFlight = new AbortController();
    try {
      const result = await deps.issuer.issue(inFlight.signal, requested);
      if (stopped) return;
      failures = 0;
      responseRootsPem = result.responseRootsPem;
      publishTrust();
      deps.secrets.publishCertificate(result.certificate);
      issued();
      const at = renewalTime({ receivedAt: result.receivedAt, notAfter: result.certificate.notAfter, graceRatio: deps.graceRatio, jitter: deps.graceJitter, random });
      log.info({ serial: result.certificate.serialHex, renewAt: new Date(at).toISOString() }, 'renewal scheduled');
      schedule(Math.max(0, at - deps.clock.now()));
    } catch (err) {
      requested();
      if (stopped) return;
      const e = toCitadelError(err);
      failures++;
      deps.metrics?.outgoingRetries.inc({ request_type: 'csr' });
      const current = deps.secrets.certificate();
      const now = deps.clock.now();
      const delay = changedDuringAttempt ? 0 : retryDelay({ failures, policy: backoff, random, now, notAfter: current?.notAfter });
      log.warn(
        {
          err: e,
          failures,
          retryInMs: delay,
          serving: current ? { serial: current.serialHex, expired: current.notAfter <= now, notAfter: new Date(current.notAfter).toISOString() } : undefined,
        },
        current && current.notAfter > now ? 'certificate renewal failed; still serving the current certificate' : 'cannot get a workload certificate',
      );
      schedule(delay);
    } finally {
      inFlight = undefined;
    }
  };

  return {
    async start() {
      watcher = watchFiles({
        paths: [deps.rootCertPath, deps.tokenPath],
        clock: deps.clock,
        log,
        pollMs: deps.rootPollMs,
        onWatchFailure: () => deps.metrics?.fileWatcherFailures.inc(),
        onChange: (contents) => {
          // Only a digest of the token is kept: the issuer reads the token itself on every attempt.
          const token = contents.get(deps.tokenPath);
          const digest = token === undefined ? undefined : createHash('sha256').update(token).digest('hex');
          const tokenChanged = digest !== tokenDigest;
          tokenDigest = digest;
          const rootChanged = onRootFile(contents.get(deps.rootCertPath));
          if (rootChanged) retryAfterChange('root file');
          else if (tokenChanged && token !== undefined) retryAfterChange('token file');
        },
      });
      await watcher.checkNow();
      schedule(0);
    },
    stop() {
      stopped = true;
      timer?.cancel();
      timer = undefined;
      dueAt = undefined;
      inFlight?.abort(new Error('agent stopping'));
      watcher?.close();
      deps.issuer.close();
      notIssued(new Error('stopped before a certificate was issued'));
      requested();
    },
    nextAttemptAt: () => dueAt,
    failures: () => failures,
    whenIssued: () => firstIssue,
    whenRequested: () => firstRequest,
  };
}
