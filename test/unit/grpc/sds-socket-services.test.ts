import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { SecretStore } from '../../../src/agent/secret-store.js';
import { systemClock } from '../../../src/clock.js';
import { silentLogger } from '../../../src/log.js';
import { caClientConstructor, caServiceDefinition } from '../../../src/grpc/protos.js';
import { startSdsServer } from '../../../src/grpc/sds-server.js';

describe('the SDS socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'citadel-sds-extra-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('serves further services beside SDS on the same socket', async () => {
    const server = await startSdsServer({
      socketPath: join(dir, 'sock'),
      store: new SecretStore({ clock: systemClock, log: silentLogger }),
      log: silentLogger,
      // Any other service will do: the CA API stands in for the next resource type.
      extraServices: [{ definition: caServiceDefinition(), implementation: { CreateCertificate: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { cert_chain: ['extra'] }) } }],
    });
    const Client = caClientConstructor();
    const client = new Client(`unix:${server.socketPath}`, grpc.credentials.createInsecure());
    try {
      const res = await new Promise<{ cert_chain: string[] }>((resolve, reject) =>
        (client as unknown as { CreateCertificate: (req: unknown, cb: (err: Error | null, res: { cert_chain: string[] }) => void) => void }).CreateCertificate({ csr: 'x' }, (err, r) => (err ? reject(err) : resolve(r))),
      );
      expect(res.cert_chain).toEqual(['extra']);
      expect(server.service.activeStreams).toBe(0);
    } finally {
      client.close();
      await server.stop();
    }
  });
});
