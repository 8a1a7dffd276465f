/**
 * Writes test/support/fixtures/envoy-sds-request.bin: the first StreamSecrets request a real Envoy (the harness's,
 * with the e2e sidecar bootstrap) sends, as raw protobuf bytes. Envoy puts its whole Node in it (every compiled-in
 * extension; by default on every request, ACKs included), which is what the agent decodes on each ACK.
 *
 *   npm run build && node dist/test/support/capture-envoy-sds-request.js
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { sdsServiceDefinition } from '../../src/grpc/protos.js';
import { sidecarBootstrap } from '../e2e/support/bootstrap.js';
import { startEnvoy } from '../harness/envoy.js';
import { ENVOY_SDS_REQUEST_FIXTURE } from './envoy-request.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capture-sds-'));
const socketPath = path.join(dir, 'sds.sock');
const server = new grpc.Server();
const stream = sdsServiceDefinition().StreamSecrets!;
const captured = new Promise<Buffer>((resolve) => {
  server.addService({ StreamSecrets: { ...stream, requestDeserialize: (bytes: Buffer) => bytes } }, {
    StreamSecrets(call: grpc.ServerDuplexStream<Buffer, unknown>) {
      call.once('data', (bytes: Buffer) => resolve(bytes));
    },
  });
});
await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
const envoy = await startEnvoy({ name: 'capture-sds', bootstrap: sidecarBootstrap({ nodeId: 'sidecar~10.0.0.1~app.ns~ns.svc.cluster.local', sdsSocketPath: socketPath, inbound: { port: 15999, appPort: 15998, allowedClientIds: [] } }) });
try {
  const bytes = await captured;
  fs.writeFileSync(ENVOY_SDS_REQUEST_FIXTURE, bytes);
  console.log(`${ENVOY_SDS_REQUEST_FIXTURE}: ${bytes.length} bytes from Envoy`);
} finally {
  await envoy.stop();
  server.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
}
