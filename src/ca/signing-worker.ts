/**
 * A signing worker thread (started by src/ca/signing-pool.ts): answers the pool's batches with `signCsr`
 * (src/ca/signing-messages.ts), the same function the main thread runs when `--signing-workers 0`. Messages arrive in
 * order, so the pool's signer message precedes the first job that needs it.
 */
import { parentPort } from 'node:worker_threads';
import { serveSignJobs } from './signing-messages.js';

if (!parentPort) throw new Error('signing-worker.js runs only as a worker thread');
serveSignJobs(parentPort);
