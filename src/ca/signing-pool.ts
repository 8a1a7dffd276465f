/**
 * Where CSRs are checked and signed: inline on the main thread, or in a fixed pool of worker threads
 * (`--signing-workers`). Both run `signCsr` (src/ca/signing-policy.ts), so the policy exists once.
 *
 * The pool sends each worker the signer (certificate DER + private KeyObject, cloned by postMessage) before the
 * first job that uses it; a job names its signer, so after a key material switch the next job on every worker signs
 * with the new key, and a job started just before the switch still signs with the old one (as inline signing would).
 * A worker that dies fails its in-flight calls with CERT_GEN_ERROR and is replaced.
 *
 * A call that has the CA to itself (`signInlineWhen` says so and no job is on a worker) is signed on the calling
 * thread instead: the hop to a worker and back wakes two sleeping threads, which on a small VM costs about as much
 * CPU as the signature itself, and buys nothing when no other call is waiting for the main thread. See
 * createCallTracker (src/ca/server.ts) for what "alone" means.
 */
import { Worker } from 'node:worker_threads';
import { systemClock, type Clock } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Signer } from '../pki/index.js';
import { createAdmissionQueue } from './admission.js';
import { errorFromData, type PoolReply, type PoolRequest } from './signing-messages.js';
import { signCsr, type SignCsrJob, type SignCsrResult } from './signing-policy.js';

/** Checks and signs CSRs with a given signer. */
export interface CsrSigner {
  /**
   * Runs `signCsr(signer, job)`, waiting for a turn when the pool is full, as long as the answer can still come
   * before `deadline` (ms since the epoch; default none).
   * @throws CitadelError what signCsr throws (same codes); CERT_GEN_ERROR when a worker died with the call;
   *   CA_BUSY when the job cannot get a turn in time (src/ca/admission.ts); CA_NOT_READY once closed.
   */
  sign(signer: Signer, job: SignCsrJob, deadline?: number): Promise<SignCsrResult>;
  /**
   * Waits for calls in progress (up to `deadlineMs`, default 10 s; calls still running then fail with
   * CERT_GEN_ERROR), then stops the workers.
   */
  close(deadlineMs?: number): Promise<void>;
}

/** `--signing-workers 0`: sign on the calling thread. */
export const inlineCsrSigner: CsrSigner = {
  sign(signer, job) {
    try {
      return Promise.resolve(signCsr(signer, job));
    } catch (err) {
      return Promise.reject(err);
    }
  },
  close: () => Promise.resolve(),
};

export interface SigningPoolDeps {
  /** Number of worker threads, at least 1. */
  readonly size: number;
  readonly log: Logger;
  /** Calls running over all workers (posted to a worker); more wait for a turn. Default 256 per worker. */
  readonly maxPending?: number;
  /** Calls that may wait for a turn; beyond it sign() fails with CA_BUSY. Default 2048. */
  readonly maxQueued?: number;
  /** Longest wait for a turn, whatever the call's deadline. Default 10 s (the agent's own deadline). */
  readonly maxWaitMs?: number;
  /** For waits and deadlines (gRPC deadlines are wall-clock). Default the system clock. */
  readonly clock?: Clock;
  /** The worker script; default the compiled signing-worker.js next to this module. */
  readonly workerUrl?: URL;
  /** True when the caller is alone (e.g. the only CSR call in progress): then sign inline if no job is on a worker. */
  readonly signInlineWhen?: () => boolean;
}

export interface SigningPool extends CsrSigner {
  readonly size: number;
  /** Calls waiting or running. */
  pending(): number;
}

interface Call {
  resolve(r: SignCsrResult): void;
  reject(e: Error): void;
}

interface Slot {
  worker: Worker | undefined;
  /** The signer this worker holds (the last one sent to it). */
  signerId: number | undefined;
  calls: Map<number, Call>;
  /** Messages not yet posted: everything dispatched in one turn of the event loop goes in one postMessage. */
  outbox: PoolRequest[];
}

/**
 * Starts `size` workers. Jobs go to the worker with the fewest calls in flight.
 * @throws RangeError when size < 1.
 */
export function createSigningPool(deps: SigningPoolDeps): SigningPool {
  if (!Number.isInteger(deps.size) || deps.size < 1) throw new RangeError('a signing pool needs at least one worker');
  const workerUrl = deps.workerUrl ?? new URL('./signing-worker.js', import.meta.url);
  const maxPending = deps.maxPending ?? 256 * deps.size;
  const admission = createAdmissionQueue({ capacity: maxPending, maxQueued: deps.maxQueued ?? 2048, maxWaitMs: deps.maxWaitMs ?? 10_000, clock: deps.clock ?? systemClock });
  const log = deps.log;
  const signerIds = new WeakMap<Signer, number>();
  let nextSignerId = 1;
  let nextCallId = 1;
  let inFlight = 0;
  let closing = false;
  let closed: Promise<void> | undefined;
  let drained: (() => void) | undefined;
  const slots: Slot[] = Array.from({ length: deps.size }, () => ({ worker: undefined, signerId: undefined, calls: new Map(), outbox: [] }));

  const settle = () => {
    inFlight--;
    if (inFlight === 0) drained?.();
  };

  const spawn = (slot: Slot): Worker => {
    const worker = new Worker(workerUrl);
    slot.worker = worker;
    slot.signerId = undefined;
    let online = false;
    worker.once('online', () => {
      online = true;
    });
    worker.on('message', (replies: PoolReply[]) => {
      for (const reply of replies) {
        const call = slot.calls.get(reply.id);
        if (!call) continue;
        slot.calls.delete(reply.id);
        settle();
        if ('result' in reply) call.resolve(reply.result);
        else call.reject(errorFromData(reply.error));
      }
    });
    worker.on('error', (err) => log.error({ err }, 'signing worker failed'));
    worker.on('exit', (code) => {
      if (slot.worker !== worker) return; // terminated by close()
      slot.worker = undefined;
      slot.signerId = undefined;
      slot.outbox = [];
      const lost = [...slot.calls.values()];
      slot.calls.clear();
      if (!closing) log.error({ code, failedCalls: lost.length }, 'signing worker exited; replacing it');
      for (const call of lost) {
        settle();
        call.reject(new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', `signing worker exited with code ${code}`));
      }
      // A worker that never came up would fail again at once: start the next one with the next job instead.
      if (!closing && online) spawn(slot);
    });
    return worker;
  };
  for (const slot of slots) spawn(slot);

  let rr = 0;
  const pick = (): Slot => {
    let best = slots[rr % slots.length]!;
    for (let i = 1; i < slots.length; i++) {
      const s = slots[(rr + i) % slots.length]!;
      if (s.calls.size < best.calls.size) best = s;
    }
    rr++;
    return best;
  };

  const flush = (slot: Slot) => {
    const batch = slot.outbox;
    slot.outbox = [];
    if (batch.length === 0 || !slot.worker) return; // the worker died meanwhile: its exit handler failed the calls
    try {
      slot.worker.postMessage(batch);
    } catch (err) {
      // Not cloneable, or the worker is gone: fail what this batch carried, and send the signer again next time.
      slot.signerId = undefined;
      for (const msg of batch) {
        if (msg.kind !== 'job') continue;
        const call = slot.calls.get(msg.id);
        if (!call) continue;
        slot.calls.delete(msg.id);
        settle();
        call.reject(new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', err instanceof Error ? err.message : String(err)));
      }
    }
  };

  /**
   * Queues the job for the least busy worker. Each postMessage wakes the worker thread and each reply wakes this
   * one; one message per job cost about 140 us of CPU per P-256 certificate at 16 calls in flight, more than half
   * of what signCsr itself costs (bench/ca-path.ts), so what is dispatched in one turn of the event loop is posted
   * as one batch.
   */
  const dispatch = (signer: Signer, job: SignCsrJob): Promise<SignCsrResult> => {
    if (closing) return Promise.reject(new CitadelError('CA_NOT_READY', 'the CA is shutting down'));
    const slot = pick();
    if (!slot.worker) spawn(slot);
    let signerId = signerIds.get(signer);
    if (signerId === undefined) {
      signerId = nextSignerId++;
      signerIds.set(signer, signerId);
    }
    if (slot.outbox.length === 0) setImmediate(flush, slot);
    if (slot.signerId !== signerId) {
      slot.outbox.push({ kind: 'signer', signerId, certDer: signer.cert.der, key: signer.key });
      slot.signerId = signerId;
    }
    const id = nextCallId++;
    slot.outbox.push({ kind: 'job', id, signerId, job });
    inFlight++;
    return new Promise<SignCsrResult>((resolve, reject) => slot.calls.set(id, { resolve, reject }));
  };

  return {
    size: deps.size,
    pending: () => inFlight + admission.waiting(),
    sign(signer, job, deadline) {
      if (closing) return Promise.reject(new CitadelError('CA_NOT_READY', 'the CA is shutting down'));
      if (inFlight === 0 && admission.waiting() === 0 && deps.signInlineWhen?.()) return inlineCsrSigner.sign(signer, job);
      const run = (release: () => void) => dispatch(signer, job).finally(release);
      // Straight to a worker when there is room (no extra turn of the event loop); otherwise wait for a turn.
      const release = admission.tryAdmit();
      return release ? run(release) : admission.admit(deadline).then(run);
    },
    close(deadlineMs = 10_000) {
      closing = true;
      closed ??= (async () => {
        if (inFlight > 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            drained = resolve;
            timer = setTimeout(resolve, deadlineMs);
          });
          clearTimeout(timer);
        }
        const workers = slots.map((s) => s.worker).filter((w): w is Worker => w !== undefined);
        for (const s of slots) s.worker = undefined;
        // What is still running after the deadline is not waited for: its callers hear so.
        const abandoned = slots.flatMap((s) => [...s.calls.values()]);
        for (const s of slots) s.calls.clear();
        if (abandoned.length > 0) log.warn({ calls: abandoned.length, deadlineMs }, 'signing pool closed with calls still running');
        for (const call of abandoned) {
          settle();
          call.reject(new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', 'the CA shut down while signing'));
        }
        await Promise.all(workers.map((w) => w.terminate()));
      })();
      return closed;
    },
  };
}
