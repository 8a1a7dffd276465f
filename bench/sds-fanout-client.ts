/**
 * The SDS client of the fan-out figure (bench/agent.ts measureSdsFanout), in a process of its own so that its
 * work (1,000 streams decoding, ACKing and timing) does not share an event loop with the runner's: `streams`
 * StreamSecrets streams for `default` over `channels` connections, ACKing as Envoy does. Prints one JSON line
 * when every stream holds a first secret ({"served": ms since the first stream opened}) and one when every stream
 * has seen a new version ({"first", "last"}: when the first and the last stream saw it, epoch ms, so that several
 * clients' figures combine), then keeps the streams open until killed.
 *
 *   node dist/bench/sds-fanout-client.js <socket> <streams> <channels>
 */
import * as grpc from '@grpc/grpc-js';
import { SECRET_TYPE_URL } from '../src/agent/sds/xds-types.js';
import { sdsClientConstructor } from '../src/grpc/protos.js';

const [socket, streamsArg, channelsArg] = process.argv.slice(2);
const streams = Number(streamsArg);
const channels = Number(channelsArg);
if (!socket || !(streams > 0) || !(channels > 0)) {
  process.stderr.write('usage: sds-fanout-client <socket> <streams> <channels>\n');
  process.exit(2);
}
const Sds = sdsClientConstructor();
const clients = Array.from({ length: channels }, () => new Sds(`unix:${socket}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
const firstVersion: (string | undefined)[] = new Array(streams).fill(undefined);
const rotatedAt: (number | undefined)[] = new Array(streams).fill(undefined);
let served = 0;
let rotated = 0;
const t0 = performance.now();
for (let i = 0; i < streams; i++) {
  const client = clients[i % clients.length]! as unknown as { StreamSecrets: () => grpc.ClientDuplexStream<unknown, unknown> };
  const call = client.StreamSecrets();
  call.on('error', () => {});
  call.on('data', (msg: { version_info?: string; nonce?: string }) => {
    const version = msg.version_info ?? '';
    call.write({ node: { id: `bench-${i}` }, resource_names: ['default'], type_url: SECRET_TYPE_URL, version_info: version, response_nonce: msg.nonce ?? '' });
    if (firstVersion[i] === undefined) {
      firstVersion[i] = version;
      if (++served === streams) process.stdout.write(`${JSON.stringify({ served: performance.now() - t0 })}\n`);
    } else if (version !== firstVersion[i] && rotatedAt[i] === undefined) {
      rotatedAt[i] = performance.timeOrigin + performance.now();
      if (++rotated === streams) {
        const times = rotatedAt as number[];
        process.stdout.write(`${JSON.stringify({ first: Math.min(...times), last: Math.max(...times) })}\n`);
      }
    }
  });
  call.write({ node: { id: `bench-${i}` }, resource_names: ['default'], type_url: SECRET_TYPE_URL });
}
setInterval(() => {}, 60_000);
