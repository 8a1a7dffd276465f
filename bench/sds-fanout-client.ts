/**
 * The SDS client of the fan-out figure (bench/agent.ts measureSdsFanout), in a process of its own: `streams`
 * StreamSecrets streams for `default` over `channels` HTTP/2 connections, ACKing every response as Envoy does.
 * It speaks gRPC over node:http2 itself so that a stream's arrival time is taken when its bytes are read, before
 * anything is decoded: decoding and ACKing run afterwards, so one process's queue of 1,000 responses does not pass
 * for the agent's fan-out. Prints one JSON line when every stream holds a first secret ({"served": ms since the
 * first stream opened}) and one when every stream has seen a second response ({"first", "last"}: when the first
 * and the last stream's bytes arrived, epoch ms, so that several clients' figures combine), then keeps the streams
 * open until killed.
 *
 *   node dist/bench/sds-fanout-client.js <socket> <streams> <channels>
 */
import http2 from 'node:http2';
import net from 'node:net';
import { SECRET_TYPE_URL } from '../src/agent/sds/xds-types.js';
import { sdsServiceDefinition } from '../src/grpc/protos.js';

const [socket, streamsArg, channelsArg] = process.argv.slice(2);
const streams = Number(streamsArg);
const channels = Number(channelsArg);
if (!socket || !(streams > 0) || !(channels > 0)) {
  process.stderr.write('usage: sds-fanout-client <socket> <streams> <channels>\n');
  process.exit(2);
}
const method = sdsServiceDefinition().StreamSecrets!;
/** One length-prefixed gRPC message. */
const frame = (request: unknown): Buffer => {
  const body = method.requestSerialize(request);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
};
const sessions = Array.from({ length: channels }, () => http2.connect('http://localhost', { createConnection: () => net.connect(socket) }));
const now = () => performance.timeOrigin + performance.now();
const t0 = performance.now();
let served = 0;
let rotated = 0;
const rotatedAt: number[] = [];

for (let i = 0; i < streams; i++) {
  const stream = sessions[i % channels]!.request({ ':method': 'POST', ':path': method.path, 'content-type': 'application/grpc', te: 'trailers' });
  const node = { id: `bench-${i}` };
  let buffered = Buffer.alloc(0);
  let responses = 0;
  stream.on('error', () => {});
  stream.on('data', (chunk: Buffer) => {
    // The arrival of a response after the first is the rotation reaching this stream: timed before decoding.
    if (responses === 1 && rotatedAt[i] === undefined) rotatedAt[i] = now();
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      if (buffered.length < 5) return;
      const length = buffered.readUInt32BE(1);
      if (buffered.length < 5 + length) return;
      const message = buffered.subarray(5, 5 + length);
      buffered = buffered.subarray(5 + length);
      responses++;
      setImmediate(() => {
        const res = method.responseDeserialize(message) as { version_info?: string; nonce?: string };
        stream.write(frame({ node, resource_names: ['default'], type_url: SECRET_TYPE_URL, version_info: res.version_info ?? '', response_nonce: res.nonce ?? '' }));
      });
      if (responses === 1 && ++served === streams) process.stdout.write(`${JSON.stringify({ served: performance.now() - t0 })}\n`);
      if (responses === 2 && ++rotated === streams) process.stdout.write(`${JSON.stringify({ first: Math.min(...rotatedAt), last: Math.max(...rotatedAt) })}\n`);
    }
  });
  stream.write(frame({ node, resource_names: ['default'], type_url: SECRET_TYPE_URL }));
}
setInterval(() => {}, 60_000);
