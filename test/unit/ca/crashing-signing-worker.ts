/**
 * A signing worker that can be killed from a test: the real job handler, except that a job whose CSR is the text
 * `CRASH` ends the thread (exit code 3) instead of being answered, and one whose CSR is `HANG` is never answered.
 * Used by signing-pool.test.ts through its compiled copy in dist/.
 */
import { parentPort } from 'node:worker_threads';
import { createSignJobHandler, serveSignJobs } from '../../../src/ca/signing-messages.js';

const handle = createSignJobHandler();
if (!parentPort) throw new Error('a worker thread only');
serveSignJobs(parentPort, (msg) => {
  if (msg.kind === 'job' && msg.job.csrPem === 'CRASH') process.exit(3);
  if (msg.kind === 'job' && msg.job.csrPem === 'HANG') return undefined;
  return handle(msg);
});
