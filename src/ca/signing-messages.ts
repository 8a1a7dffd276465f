/**
 * What the signing pool (src/ca/signing-pool.ts) and its workers (src/ca/signing-worker.ts) say to each other: the
 * signer, the jobs, the replies, and errors as plain data that keep their codes across the thread boundary.
 */
import type { KeyObject } from 'node:crypto';
import type { MessagePort } from 'node:worker_threads';
import { CitadelError, ERROR_TABLE, type ErrorCode } from '../errors.js';
import { parseCertificate, type Signer } from '../pki/index.js';
import { signCsr, type SignCsrJob, type SignCsrResult } from './signing-policy.js';

/** A CitadelError as plain data, to cross a thread boundary. */
export interface ErrorData {
  readonly code: ErrorCode;
  readonly message: string;
  readonly detail?: string;
}

/** Anything thrown -> ErrorData; what is not a CitadelError is a bug and becomes CERT_GEN_ERROR (message kept in detail). */
export function errorToData(err: unknown): ErrorData {
  if (err instanceof CitadelError) return { code: err.code, message: err.message, ...(err.detail !== undefined ? { detail: err.detail } : {}) };
  return { code: 'CERT_GEN_ERROR', message: 'certificate generation failed', detail: err instanceof Error ? err.message : String(err) };
}

/** ErrorData -> the CitadelError it came from (same code, so the same gRPC status and metric label). */
export function errorFromData(data: ErrorData): CitadelError {
  if (!Object.hasOwn(ERROR_TABLE, data.code)) return new CitadelError('CERT_GEN_ERROR', 'certificate generation failed', `unknown error code ${String(data.code)}: ${data.message}`);
  return new CitadelError(data.code, data.message, data.detail);
}

/** Pool -> worker: the signer for the jobs that follow (certificate DER + private key; KeyObject clones). */
export interface SignerMessage {
  readonly kind: 'signer';
  readonly signerId: number;
  readonly certDer: Uint8Array;
  readonly key: KeyObject;
}
/** Pool -> worker: one job, naming the signer it must be signed with. */
export interface JobMessage {
  readonly kind: 'job';
  readonly id: number;
  readonly signerId: number;
  readonly job: SignCsrJob;
}
export type PoolRequest = SignerMessage | JobMessage;
/** Worker -> pool. */
export type PoolReply = { readonly id: number; readonly result: SignCsrResult } | { readonly id: number; readonly error: ErrorData };

/**
 * The signing worker's message handler: remembers the last signer and answers each job with signCsr, or with
 * CERT_GEN_ERROR when the job names a signer it does not hold (the pool always sends the signer first). Returns
 * the reply to post, or undefined for a signer message.
 */
export function createSignJobHandler(): (msg: PoolRequest) => PoolReply | undefined {
  let current: { id: number; signer: Signer } | undefined;
  return (msg) => {
    if (msg.kind === 'signer') {
      current = { id: msg.signerId, signer: { cert: parseCertificate(Buffer.from(msg.certDer)), key: msg.key } };
      return undefined;
    }
    try {
      if (current?.id !== msg.signerId) throw new Error(`signer ${msg.signerId} is not loaded in this worker`);
      return { id: msg.id, result: signCsr(current.signer, msg.job) };
    } catch (err) {
      return { id: msg.id, error: errorToData(err) };
    }
  };
}

/**
 * Answers the pool's batches on `port` (a worker's parentPort) with `handle`. The replies to every job that arrived
 * before the thread next waits for messages go back in one postMessage, for the same reason the pool batches its
 * jobs: each message wakes the other thread.
 */
export function serveSignJobs(port: Pick<MessagePort, 'on' | 'postMessage'>, handle: (msg: PoolRequest) => PoolReply | undefined = createSignJobHandler()): void {
  let replies: PoolReply[] = [];
  const flush = () => {
    const batch = replies;
    replies = [];
    port.postMessage(batch);
  };
  port.on('message', (batch: PoolRequest[]) => {
    for (const msg of batch) {
      const reply = handle(msg);
      if (!reply) continue;
      // setImmediate runs once the messages already queued for this thread have been handled.
      if (replies.length === 0) setImmediate(flush);
      replies.push(reply);
    }
  });
}
