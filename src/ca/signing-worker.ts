/**
 * A signing worker thread (started by src/ca/signing-pool.ts): answers the pool's messages with
 * `createSignJobHandler` (src/ca/signing-messages.ts), i.e. `signCsr`, the same function the main thread runs when
 * `--signing-workers 0`. Messages arrive in order, so the pool's signer message precedes the first job that needs it.
 */
import { parentPort } from 'node:worker_threads';
import { createSignJobHandler, type PoolRequest } from './signing-messages.js';

if (!parentPort) throw new Error('signing-worker.js runs only as a worker thread');
const port = parentPort;
const handle = createSignJobHandler();
port.on('message', (msg: PoolRequest) => {
  const reply = handle(msg);
  if (reply) port.postMessage(reply);
});
