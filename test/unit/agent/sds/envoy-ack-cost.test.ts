/**
 * What each rotation costs the agent's memory when the SDS peer is a real Envoy. Envoy sends its whole Node (every
 * compiled-in extension: 61 KB from Envoy 1.40) on every request, ACKs included; the agent reads only node.id. The
 * bench's leak row saw the agent's RSS climb from 102 to 244 MiB over 2,001 rotations while its heap after a full
 * GC stayed flat: decoding that Node (about 1 MB of short-lived objects per ACK) kept V8's heap and the malloc
 * arenas growing. Measured here in-process: bytes allocated per rotation (V8's sampling heap profiler, counting
 * objects already collected) and the heap retained after full GCs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../../../src/clock.js';
import { silentLogger } from '../../../../src/log.js';
import { SecretStore } from '../../../../src/agent/secret-store.js';
import { sdsServiceDefinition } from '../../../../src/grpc/protos.js';
import { startAgentSocket, type AgentSocket } from '../../../../src/cli/agent-socket.js';
import { envoySdsAck, envoySdsRequest } from '../../../support/envoy-request.js';
import { allocatedDuring, heapAfterGc } from '../../../support/memory.js';
import { makeCa } from '../../grpc/tls-fixtures.js';
import { Queue, type WireResponse } from './sds-client.js';

describe('an Envoy that ACKs every rotation', () => {
  let dir: string;
  let store: SecretStore;
  let server: AgentSocket;
  let client: grpc.Client;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sds-ack-'));
    store = new SecretStore({ clock: systemClock, log: silentLogger });
    server = await startAgentSocket({ socketPath: join(dir, 'socket'), store, log: silentLogger });
    // Envoy's bytes go out as captured: the client does not encode (nor need to know) Envoy's Node.
    const stream = sdsServiceDefinition().StreamSecrets!;
    const Client = grpc.makeGenericClientConstructor({ StreamSecrets: { ...stream, requestSerialize: (bytes: Buffer) => bytes } }, 'SecretDiscoveryService');
    client = new Client(`unix:${join(dir, 'socket')}`, grpc.credentials.createInsecure());
  });

  afterEach(async () => {
    client.close();
    await server.stop(500);
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('costs little memory per rotation, and keeps none of it', async () => {
    const ca = await makeCa();
    const leaves = await Promise.all(Array.from({ length: 20 }, (_, i) => ca.issue({ spiffeId: `spiffe://cluster.local/ns/app/sa/web-${i}` })));
    const rotations = [0];
    const rotate = () => {
      const leaf = leaves[++rotations[0]! % leaves.length]!;
      store.setTlsCertificate('default', leaf.certPem + ca.pem, leaf.keyPem);
      store.setValidationContext('ROOTCA', ca.pem);
    };
    rotate();
    const request = envoySdsRequest();
    const call = (client as unknown as { StreamSecrets(): grpc.ClientDuplexStream<Buffer, WireResponse> }).StreamSecrets();
    const responses = new Queue<WireResponse>();
    call.on('data', (res: WireResponse) => responses.push(res));
    call.on('error', () => undefined);
    call.write(request);
    // Envoy ACKs each push with its whole request again; each rotation is one push and one ACK.
    const cycle = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const res = await responses.next();
        call.write(envoySdsAck(request, res.version_info, res.nonce));
        rotate();
      }
    };
    await cycle(50);
    const N = 300;
    const perRotationKb = (await allocatedDuring(() => cycle(N))) / 1024 / N;
    // Retention is measured apart from the profiler (which holds its samples until it stops).
    const heapBefore = heapAfterGc();
    await cycle(2 * N);
    const retainedKb = (heapAfterGc() - heapBefore) / 1024 / (2 * N);
    console.log(`Envoy request of ${request.length} bytes; per rotation: ${perRotationKb.toFixed(0)} KB allocated, ${retainedKb.toFixed(2)} KB retained after GC`);
    // Measured here: 148 KB per rotation while Envoy's Node was decoded in full, 30 KB since.
    expect(perRotationKb).toBeLessThan(64);
    // Nothing is kept per rotation (-2.6 to +0.6 KB here, the heap's own jitter over 600 rotations; negative over
    // 3,000); a Secret kept per rotation would be 3 KB or more.
    expect(retainedKb).toBeLessThan(2);
    call.cancel();
  }, 60_000);
});
