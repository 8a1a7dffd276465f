import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { connect, type PeerCertificate } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { CitadelError } from '../../../src/errors.js';
import { caServiceBinding, type CsrRequest } from '../../../src/grpc/ca-service.js';
import { createCaClient } from '../../../src/grpc/client.js';
import { ReloadableServerCredentials, bearerToken, grpcBindAddress, startGrpcServer, unverifiedPeerCount, type CallContext, type RunningServer } from '../../../src/grpc/server.js';
import { waitFor } from '../../support/wait.js';
import { makeCa } from './tls-fixtures.js';
import * as grpc from '@grpc/grpc-js';

const SERVER_NAME = 'citadel.citadel-system.svc';

/** Opens a raw TLS connection and returns the serving certificate (serial in upper-case hex, as Node reports it). */
function servedCertificate(port: number, rootPem: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: SERVER_NAME, ca: rootPem, ALPNProtocols: ['h2'] }, () => {
      const cert = socket.getPeerCertificate();
      socket.destroy();
      resolve(cert);
    });
    socket.on('error', reject);
  });
}

describe('grpc server', () => {
  const running: RunningServer[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((s) => s.stop(1000)));
  });

  async function serve(handler: (req: CsrRequest, ctx: CallContext) => Promise<string[]>, creds: grpc.ServerCredentials) {
    const server = await startGrpcServer({ address: '127.0.0.1:0', credentials: creds, services: [caServiceBinding({ createCertificate: handler })] });
    running.push(server);
    return server;
  }

  it('normalises bind addresses', () => {
    expect(grpcBindAddress(':15012')).toBe('0.0.0.0:15012');
    expect(grpcBindAddress('127.0.0.1:1')).toBe('127.0.0.1:1');
    expect(grpcBindAddress('unix:/tmp/x.sock')).toBe('unix:/tmp/x.sock');
  });

  it('serves a swapped certificate to new connections without a restart, and rejects a bad swap', async () => {
    const ca = await makeCa();
    const first = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    const second = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    const creds = new ReloadableServerCredentials({ certChainPem: first.certPem, keyPem: first.keyPem, clientCaPem: ca.pem });
    const server = await serve(async () => ['leaf'], creds);

    expect((await servedCertificate(server.port, ca.pem)).serialNumber.toLowerCase()).toBe(first.serialHex);
    // A gRPC call works on the first cert.
    const client = createCaClient({ address: `127.0.0.1:${server.port}`, rootCaPem: ca.pem, serverName: SERVER_NAME });
    expect(await client.createCertificate({ csr: 'x', validityDurationSeconds: 60 })).toEqual(['leaf']);

    creds.update({ certChainPem: second.certPem, keyPem: second.keyPem, clientCaPem: ca.pem });
    expect((await servedCertificate(server.port, ca.pem)).serialNumber.toLowerCase()).toBe(second.serialHex);
    // The already-open channel keeps working; a new one works too.
    expect(await client.createCertificate({ csr: 'x', validityDurationSeconds: 60 })).toEqual(['leaf']);
    client.close();
    const fresh = createCaClient({ address: `127.0.0.1:${server.port}`, rootCaPem: ca.pem, serverName: SERVER_NAME });
    expect(await fresh.createCertificate({ csr: 'x', validityDurationSeconds: 60 })).toEqual(['leaf']);
    fresh.close();

    // A key that does not match its certificate is refused and the served certificate stays.
    expect(() => creds.update({ certChainPem: first.certPem, keyPem: second.keyPem })).toThrow(CitadelError);
    expect((await servedCertificate(server.port, ca.pem)).serialNumber.toLowerCase()).toBe(second.serialHex);
  });

  it('refuses TLS below 1.2', async () => {
    const ca = await makeCa();
    const leaf = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/a/sa/b', dnsNames: [SERVER_NAME] });
    const server = await serve(async () => ['x'], new ReloadableServerCredentials({ certChainPem: leaf.certPem, keyPem: leaf.keyPem }));
    const err = await new Promise<Error>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: server.port, ca: ca.pem, servername: SERVER_NAME, minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }, () => {
        socket.destroy();
        resolve(new Error('connected'));
      });
      socket.on('error', resolve);
    });
    expect(err.message).not.toBe('connected');
  });

  it('passes the request, token, headers and any client certificate presented (verified by TLS or not) to the handler', async () => {
    const ca = await makeCa();
    const serving = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    const workload = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/app/sa/web' });
    const stranger = await (await makeCa('other')).issue({ spiffeId: 'spiffe://cluster.local/ns/app/sa/evil' });
    const seen: Array<{ req: CsrRequest; ctx: CallContext; clusterId: string | undefined }> = [];
    const server = await serve(async (req, ctx) => {
      seen.push({ req, ctx, clusterId: ctx.header('ClusterID') });
      return ['a', 'b'];
    }, new ReloadableServerCredentials({ certChainPem: serving.certPem, keyPem: serving.keyPem, clientCaPem: ca.pem }));
    const address = `127.0.0.1:${server.port}`;

    const plain = createCaClient({ address, rootCaPem: ca.pem, serverName: SERVER_NAME, headers: { ClusterID: 'Kubernetes' } });
    await plain.createCertificate({ csr: 'CSR', validityDurationSeconds: 86400, bearerToken: 'tok.en', metadata: { CertSigner: 'x', n: 1, nested: { ok: true } } });
    plain.close();
    const mtls = createCaClient({ address, rootCaPem: ca.pem, serverName: SERVER_NAME, clientCertChainPem: workload.certPem, clientKeyPem: workload.keyPem });
    await mtls.createCertificate({ csr: 'CSR2', validityDurationSeconds: 0 });
    mtls.close();
    const foreign = createCaClient({ address, rootCaPem: ca.pem, serverName: SERVER_NAME, clientCertChainPem: stranger.certPem, clientKeyPem: stranger.keyPem });
    await foreign.createCertificate({ csr: 'CSR3', validityDurationSeconds: 5 });
    foreign.close();

    expect(seen).toHaveLength(3);
    const [a, b, c] = seen;
    expect(a!.req).toEqual({ csr: 'CSR', validityDurationSeconds: 86400, metadata: { CertSigner: 'x', n: 1, nested: { ok: true } } });
    expect(a!.ctx.bearerToken).toBe('tok.en');
    expect(a!.clusterId).toBe('Kubernetes');
    expect(a!.ctx.peerCertificateDer).toBeUndefined();
    expect(a!.ctx.peerAddress).toMatch(/127\.0\.0\.1/);
    expect(b!.req).toEqual({ csr: 'CSR2', validityDurationSeconds: 0, metadata: {} });
    expect(b!.ctx.bearerToken).toBeUndefined();
    const { X509Certificate } = await import('node:crypto');
    expect(b!.ctx.peerCertificateDer).toBeDefined();
    expect(new X509Certificate(b!.ctx.peerCertificateDer!).serialNumber.toLowerCase()).toBe(new X509Certificate(workload.certPem).serialNumber.toLowerCase());
    // A certificate from another CA does not fail the handshake, and the handler sees it too (to refuse it with a
    // reason); the record of it goes with the connection.
    expect(new X509Certificate(c!.ctx.peerCertificateDer!).serialNumber.toLowerCase()).toBe(new X509Certificate(stranger.certPem).serialNumber.toLowerCase());
    await waitFor('the closed connection to be forgotten', () => unverifiedPeerCount() === 0);
  });

  it('maps handler errors to statuses and client errors to CitadelErrors', async () => {
    const ca = await makeCa();
    const serving = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    const server = await serve(async (req) => {
      if (req.csr === 'authn') throw new CitadelError('UNAUTHENTICATED', 'no token', 'secret detail');
      if (req.csr === 'denied') throw new CitadelError('PERMISSION_DENIED', 'not yours');
      if (req.csr === 'empty') return [];
      throw new Error('boom with internals');
    }, new ReloadableServerCredentials({ certChainPem: serving.certPem, keyPem: serving.keyPem }));
    const client = createCaClient({ address: `127.0.0.1:${server.port}`, rootCaPem: ca.pem, serverName: SERVER_NAME });
    const failure = (csr: string) => client.createCertificate({ csr, validityDurationSeconds: 1 }).then(() => undefined, (e: unknown) => e as CitadelError);

    const authn = await failure('authn');
    expect(authn).toBeInstanceOf(CitadelError);
    expect(authn!.code).toBe('UNAUTHENTICATED');
    expect(authn!.message).toContain('no token');
    expect(authn!.message).not.toContain('secret detail');
    expect((await failure('denied'))!.code).toBe('PERMISSION_DENIED');
    expect((await failure('empty'))!.code).toBe('CERT_INVALID');
    const internal = await failure('other');
    expect(internal!.code).toBe('UPSTREAM_UNAVAILABLE');
    expect(internal!.message).toBe('CreateCertificate: INTERNAL: internal error');
    client.close();
  });

  it('fails closed on the wrong server name or an untrusted root, as UPSTREAM_UNAVAILABLE', async () => {
    const ca = await makeCa();
    const other = await makeCa('other');
    const serving = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    let calls = 0;
    const server = await serve(async () => {
      calls++;
      return ['x'];
    }, new ReloadableServerCredentials({ certChainPem: serving.certPem, keyPem: serving.keyPem }));
    const address = `127.0.0.1:${server.port}`;
    for (const opts of [{ rootCaPem: ca.pem, serverName: 'istiod.istio-system.svc' }, { rootCaPem: other.pem, serverName: SERVER_NAME }]) {
      const client = createCaClient({ address, ...opts, timeoutMs: 2000 });
      const err = await client.createCertificate({ csr: 'x', validityDurationSeconds: 1 }).catch((e: unknown) => e as CitadelError);
      client.close();
      expect(err).toBeInstanceOf(CitadelError);
      expect((err as CitadelError).code).toBe('UPSTREAM_UNAVAILABLE');
    }
    expect(calls).toBe(0);
  });

  it('reports an unreachable CA as UPSTREAM_UNAVAILABLE within the deadline', async () => {
    const ca = await makeCa();
    const client = createCaClient({ address: '127.0.0.1:1', rootCaPem: ca.pem, serverName: SERVER_NAME, timeoutMs: 500 });
    const err = await client.createCertificate({ csr: 'x', validityDurationSeconds: 1 }).catch((e: unknown) => e as CitadelError);
    client.close();
    expect((err as CitadelError).code).toBe('UPSTREAM_UNAVAILABLE');
  });

  it('stops gracefully, giving up on what is left after the grace period', async () => {
    let arrived!: () => void;
    const inHandler = new Promise<void>((resolve) => (arrived = resolve));
    const ca = await makeCa();
    const serving = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    const server = await startGrpcServer({
      address: '127.0.0.1:0',
      credentials: new ReloadableServerCredentials({ certChainPem: serving.certPem, keyPem: serving.keyPem }),
      services: [caServiceBinding({ createCertificate: () => {
        arrived();
        return new Promise(() => undefined);
      } })],
    });
    // grpc-js does not cancel a call on a session that tryShutdown is already closing; in the CA the process exit
    // that follows ends it. Here the client's own deadline does.
    const client = createCaClient({ address: `127.0.0.1:${server.port}`, rootCaPem: ca.pem, serverName: SERVER_NAME, timeoutMs: 2_000 });
    const pending = client.createCertificate({ csr: 'x', validityDurationSeconds: 1 }).catch((e: unknown) => e as CitadelError);
    await inHandler;
    const started = Date.now();
    expect(await server.stop(300)).toBe(false);
    expect(Date.now() - started).toBeLessThan(3000);
    expect((await pending as CitadelError).code).toBe('UPSTREAM_UNAVAILABLE');
    client.close();
  });

  it('stops as soon as no call is left instead of waiting out the grace for a connection that never spoke HTTP/2', async () => {
    const ca = await makeCa();
    const serving = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/citadel-system/sa/citadel', dnsNames: [SERVER_NAME] });
    const server = await startGrpcServer({
      address: '127.0.0.1:0',
      credentials: new ReloadableServerCredentials({ certChainPem: serving.certPem, keyPem: serving.keyPem }),
      services: [caServiceBinding({ createCertificate: async () => ['leaf'] })],
    });
    const idle = netConnect(server.port, '127.0.0.1');
    await once(idle, 'connect');
    let calls = 1;
    setTimeout(() => (calls = 0), 300); // a call in progress that ends after 300 ms, not a wait
    const started = Date.now();
    expect(await server.stop(10_000, () => calls)).toBe(true);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(300);
    expect(took).toBeLessThan(3_000);
    idle.destroy();
  });

  it('reads bearer tokens case-insensitively and ignores other schemes', () => {
    const md = new grpc.Metadata();
    md.set('authorization', 'Basic abc');
    expect(bearerToken(md)).toBeUndefined();
    md.add('authorization', 'bearer tok');
    expect(bearerToken(md)).toBe('tok');
  });
});
