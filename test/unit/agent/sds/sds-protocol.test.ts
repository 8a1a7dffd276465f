/**
 * The SDS protocol over a real Unix socket with our own grpc-js client playing Envoy: SotW ACK/NACK/nonce/version
 * rules, pending names, many streams, Delta subscribe/unsubscribe/removed/initial versions, FetchSecrets.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile, rename } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../../../src/clock.js';
import { CitadelError } from '../../../../src/errors.js';
import { silentLogger } from '../../../../src/log.js';
import { fileSecretResolver } from '../../../../src/agent/sds/file-resolver.js';
import { SecretStore } from '../../../../src/agent/secret-store.js';
import { SECRET_TYPE_URL } from '../../../../src/agent/sds/xds-types.js';
import { startAgentSocket, type AgentSocket } from '../../../../src/cli/agent-socket.js';
import { listenUnixSocket } from '../../../../src/grpc/unix-listener.js';
import { waitFor } from '../../../support/wait.js';
import { makeCa, type TestCa } from '../../grpc/tls-fixtures.js';
import { captureLogs, type CapturedLogs } from '../../../support/log-capture.js';
import { SdsTestClient, decodeSecret, expectNothingSent } from './sds-client.js';

const WORKLOAD = 'spiffe://cluster.local/ns/app/sa/web';

describe('SDS over a Unix socket', () => {
  let dir: string;
  let socketPath: string;
  let store: SecretStore;
  let server: AgentSocket;
  let client: SdsTestClient;
  let registry: Registry;
  let logs: CapturedLogs;
  let ca: TestCa;
  /** The server has handled every request sent so far and sent nothing the test has not taken. */
  const nothingSent = () => expectNothingSent(client.traffic, logs, { request: 'SDS request', response: 'pushing secrets' });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sds-'));
    socketPath = join(dir, 'workload-spiffe-uds', 'socket');
    logs = captureLogs();
    store = new SecretStore({ clock: systemClock, log: silentLogger, resolvers: [fileSecretResolver({ clock: systemClock, log: logs.log, debounceMs: 30, pollMs: 400 })] });
    registry = new Registry();
    server = await startAgentSocket({ socketPath, store, log: logs.log, registry });
    client = new SdsTestClient(socketPath);
    ca ??= await makeCa();
  });

  afterEach(async () => {
    client.close();
    await server.stop(500);
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function setWorkload(): Promise<{ certPem: string; keyPem: string }> {
    const leaf = await ca.issue({ spiffeId: WORKLOAD });
    store.setTlsCertificate('default', leaf.certPem + ca.pem, leaf.keyPem);
    return leaf;
  }

  it('creates the socket with mode 0666 in a fresh directory', async () => {
    const s = await stat(socketPath);
    expect(s.isSocket()).toBe(true);
    expect(s.mode & 0o777).toBe(0o666);
  });

  it('sends a requested secret once, with type_url, a version and a nonce, and never answers the ACK', async () => {
    const leaf = await setWorkload();
    const stream = client.stream();
    stream.send({ resource_names: ['default'] });
    const res = await stream.responses.next();
    expect(res.type_url).toBe(SECRET_TYPE_URL);
    expect(res.version_info).not.toBe('');
    expect(res.nonce).not.toBe('');
    expect(res.resources).toHaveLength(1);
    const secret = decodeSecret(res.resources[0]!);
    expect(secret.name).toBe('default');
    expect(secret.chain).toContain(leaf.certPem.trim());
    expect(secret.key?.trim()).toBe(leaf.keyPem.trim());
    stream.ack(res, ['default']);
    await nothingSent();
    // Setting identical content is not a change.
    store.setTlsCertificate('default', leaf.certPem + ca.pem, leaf.keyPem);
    await nothingSent();
  });

  it('pushes a change with a new version and a new nonce; a stale nonce is ignored', async () => {
    await setWorkload();
    const stream = client.stream();
    stream.send({ resource_names: ['default'] });
    const first = await stream.responses.next();
    await setWorkload();
    const second = await stream.responses.next();
    expect(second.version_info).not.toBe(first.version_info);
    expect(second.nonce).not.toBe(first.nonce);
    expect(decodeSecret(second.resources[0]!).chain).not.toBe(decodeSecret(first.resources[0]!).chain);
    // Envoy's (late) ACK of the first response carries a stale nonce: ignored, even with other names.
    stream.send({ resource_names: ['default', 'ROOTCA'], version_info: first.version_info, response_nonce: first.nonce });
    store.setValidationContext('ROOTCA', ca.pem);
    await nothingSent();
    stream.ack(second, ['default']);
    await nothingSent();
  });

  it('after a NACK keeps quiet, never resends the rejected version, and pushes the next change', async () => {
    await setWorkload();
    const stream = client.stream();
    stream.send({ resource_names: ['default'] });
    const good = await stream.responses.next();
    stream.ack(good, ['default']);
    await setWorkload();
    const rejected = await stream.responses.next();
    stream.nack(rejected, ['default'], good.version_info);
    await nothingSent();
    // A later request of the same names (e.g. Envoy re-sending its state with the NACKed nonce) does not resend it.
    stream.send({ resource_names: ['default'], version_info: good.version_info, response_nonce: rejected.nonce });
    await nothingSent();
    await setWorkload();
    const next = await stream.responses.next();
    expect(next.version_info).not.toBe(rejected.version_info);
    expect(next.version_info).not.toBe(good.version_info);
    const text = await registry.metrics();
    expect(text).toMatch(/citadel_agent_sds_rejections_total\{resource_name="default"\} 1/);
  });

  it('leaves unknown names pending without closing the stream and pushes them when they appear', async () => {
    const stream = client.stream();
    stream.send({ resource_names: ['no-such-secret'] });
    await nothingSent();
    store.setValidationContext('no-such-secret', ca.pem);
    const res = await stream.responses.next();
    expect(decodeSecret(res.resources[0]!)).toMatchObject({ name: 'no-such-secret', trustedCa: ca.pem.trim() + '\n' });
  });

  it('serves several names on one stream and follows name changes', async () => {
    await setWorkload();
    store.setValidationContext('ROOTCA', ca.pem);
    const stream = client.stream();
    stream.send({ resource_names: ['default', 'ROOTCA'] });
    const both = await stream.responses.next();
    expect(both.resources.map((r) => decodeSecret(r).name).sort()).toEqual(['ROOTCA', 'default']);
    stream.ack(both, ['default', 'ROOTCA']);
    await nothingSent();
    const other = await makeCa('other');
    store.setValidationContext('ROOTCA', ca.pem + other.pem);
    const changed = await stream.responses.next();
    expect(changed.version_info).not.toBe(both.version_info);
    const root = changed.resources.map(decodeSecret).find((s) => s.name === 'ROOTCA');
    expect(root?.trustedCa).toContain(other.pem.trim());
    // Dropping a name: nothing to send; a change of the dropped name is not sent either.
    stream.send({ resource_names: ['default'], version_info: changed.version_info, response_nonce: changed.nonce });
    await nothingSent();
    store.setValidationContext('ROOTCA', ca.pem);
    await nothingSent();
  });

  it('answers a first request that carries a nonce from an earlier stream', async () => {
    await setWorkload();
    const stream = client.stream();
    stream.send({ resource_names: ['default'], version_info: 'old', response_nonce: 'nonce-of-another-stream' });
    const res = await stream.responses.next();
    expect(res.resources).toHaveLength(1);
  });

  it('resends the current secret on a reconnect that carries the last accepted version', async () => {
    await setWorkload();
    const a = client.stream();
    a.send({ resource_names: ['default'] });
    const res = await a.responses.next();
    a.ack(res, ['default']);
    a.cancel();
    const b = client.stream();
    b.send({ resource_names: ['default'], version_info: res.version_info });
    const again = await b.responses.next();
    expect(again.version_info).toBe(res.version_info);
    expect(again.nonce).not.toBe(res.nonce);
  });

  it('pushes a rotation to every one of 240 concurrent streams holding the name', async () => {
    await setWorkload();
    store.setValidationContext('ROOTCA', ca.pem);
    const streams = Array.from({ length: 240 }, (_, i) => ({ name: i % 2 === 0 ? 'default' : 'ROOTCA', s: client.stream() }));
    for (const { name, s } of streams) s.send({ resource_names: [name] });
    const initial = await Promise.all(streams.map(({ s }) => s.responses.next(10_000)));
    streams.forEach(({ name, s }, i) => s.ack(initial[i]!, [name]));
    await nothingSent();
    expect(server.service.activeStreams).toBe(240);
    expect(await registry.metrics()).toMatch(/citadel_agent_sds_active_streams\{api="sotw"\} 240/);
    await setWorkload();
    const holders = streams.filter((x) => x.name === 'default');
    const pushed = await Promise.all(holders.map(({ s }) => s.responses.next(10_000)));
    const versions = new Set(pushed.map((p) => p.version_info));
    expect(versions.size).toBe(1);
    expect([...versions][0]).not.toBe(initial[0]!.version_info);
    expect(new Set(pushed.map((p) => p.nonce)).size).toBe(holders.length);
    for (const { s } of streams.filter((x) => x.name === 'ROOTCA')) expect(s.responses.length).toBe(0);
    for (const { s } of streams) s.cancel();
    await waitFor('every cancelled stream released', () => server.service.activeStreams === 0, { timeoutMs: 10_000 });
  });

  it('refuses a mismatched key or an expired certificate before anything is sent', async () => {
    const leaf = await setWorkload();
    const stream = client.stream();
    stream.send({ resource_names: ['default'] });
    const res = await stream.responses.next();
    const other = await ca.issue({ spiffeId: WORKLOAD });
    expect(() => store.setTlsCertificate('default', other.certPem, leaf.keyPem)).toThrow(expect.objectContaining({ code: 'KEY_MISMATCH' }));
    const expired = await ca.issue({ spiffeId: WORKLOAD, now: Date.now() - 3 * 3600_000, ttlMs: 3600_000 });
    expect(() => store.setTlsCertificate('default', expired.certPem, expired.keyPem)).toThrow(expect.objectContaining({ code: 'CERT_EXPIRED' }));
    expect(() => store.setValidationContext('ROOTCA', '')).toThrow(CitadelError);
    await nothingSent();
    expect(store.get('default')!.version).toBe(res.version_info);
  });

  it('closes a stream that asks for another type with INVALID_ARGUMENT', async () => {
    const stream = client.stream();
    stream.send({ resource_names: ['x'], type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' });
    const status = await stream.status;
    expect(status.code).toBe(3);
  });

  it('serves file-cert and file-root names from files and pushes when they change', async () => {
    const certPath = join(dir, 'cert-chain.pem');
    const keyPath = join(dir, 'key.pem');
    const rootPath = join(dir, 'root-cert.pem');
    const first = await ca.issue({ spiffeId: WORKLOAD });
    await writeFile(certPath, first.certPem);
    await writeFile(keyPath, first.keyPem);
    await writeFile(rootPath, ca.pem);
    const certName = `file-cert:${certPath}~${keyPath}`;
    const rootName = `file-root:${rootPath}`;
    const certs = client.stream();
    certs.send({ resource_names: [certName] });
    const roots = client.stream();
    roots.send({ resource_names: [rootName] });
    const c1 = await certs.responses.next();
    expect(decodeSecret(c1.resources[0]!)).toMatchObject({ name: certName, chain: first.certPem.trim() + '\n' });
    const r1 = await roots.responses.next();
    expect(decodeSecret(r1.resources[0]!).trustedCa).toBe(ca.pem.trim() + '\n');
    certs.ack(c1, [certName]);
    roots.ack(r1, [rootName]);

    // Atomic replacement of both files (write aside, rename into place).
    const second = await ca.issue({ spiffeId: WORKLOAD });
    await writeFile(certPath + '.tmp', second.certPem);
    await writeFile(keyPath + '.tmp', second.keyPem);
    await rename(keyPath + '.tmp', keyPath);
    await rename(certPath + '.tmp', certPath);
    const c2 = await certs.responses.next();
    expect(decodeSecret(c2.resources[0]!).chain).toBe(second.certPem.trim() + '\n');
    expect(c2.version_info).not.toBe(c1.version_info);
    await nothingSent();

    // Garbage in the root file keeps the last good bundle (nothing pushed); a valid new bundle is pushed (and is the
    // next response on the stream).
    await writeFile(rootPath, 'not a certificate');
    await waitFor('the garbage to be refused', () => logs.matching('cannot load secret files; keeping the last good content', { resource: rootName }).length === 1);
    await nothingSent();
    const other = await makeCa('other');
    await writeFile(rootPath, ca.pem + other.pem);
    const r2 = await roots.responses.next();
    expect(decodeSecret(r2.resources[0]!).trustedCa).toContain(other.pem.trim());
  });

  it('answers FetchSecrets with the available names', async () => {
    await setWorkload();
    store.setValidationContext('ROOTCA', ca.pem);
    const res = await client.fetch(['default', 'ROOTCA', 'unknown']);
    expect(res.type_url).toBe(SECRET_TYPE_URL);
    expect(res.nonce).not.toBe('');
    expect(res.resources.map((r) => decodeSecret(r).name).sort()).toEqual(['ROOTCA', 'default']);
    const rootPath = join(dir, 'root.pem');
    await writeFile(rootPath, ca.pem);
    const file = await client.fetch([`file-root:${rootPath}`]);
    expect(decodeSecret(file.resources[0]!).trustedCa).toBe(ca.pem.trim() + '\n');
    await expect(client.fetch(['default'], 'type.googleapis.com/other')).rejects.toMatchObject({ code: 3 });
  });

  it('Delta: answers subscribes with named, versioned resources and a nonce; unsubscribed names are not pushed', async () => {
    await setWorkload();
    store.setValidationContext('ROOTCA', ca.pem);
    const d = client.delta();
    d.send({ resource_names_subscribe: ['default', 'ROOTCA'] });
    const first = await d.responses.next();
    expect(first.type_url).toBe(SECRET_TYPE_URL);
    expect(first.nonce).not.toBe('');
    expect(first.system_version_info).not.toBe('');
    expect(first.removed_resources).toEqual([]);
    expect(first.resources.map((r) => r.name).sort()).toEqual(['ROOTCA', 'default']);
    for (const r of first.resources) {
      expect(r.version).toBe(store.get(r.name)!.version);
      expect(decodeSecret(r.resource).name).toBe(r.name);
    }
    d.ack(first);
    await nothingSent();

    d.send({ resource_names_unsubscribe: ['ROOTCA'] });
    await nothingSent();
    store.setValidationContext('ROOTCA', ca.pem + (await makeCa('x')).pem);
    await nothingSent();
    await setWorkload();
    const rotated = await d.responses.next();
    expect(rotated.resources.map((r) => r.name)).toEqual(['default']);
    expect(rotated.resources[0]!.version).not.toBe(first.resources.find((r) => r.name === 'default')!.version);
    expect(rotated.nonce).not.toBe(first.nonce);
    d.ack(rotated);

    // An explicit subscribe is answered even though the client had the resource before.
    d.send({ resource_names_subscribe: ['ROOTCA'] });
    const resub = await d.responses.next();
    expect(resub.resources.map((r) => r.name)).toEqual(['ROOTCA']);
    d.ack(resub);
    // Subscribing again to a name already held is answered too.
    d.send({ resource_names_subscribe: ['default'] });
    expect((await d.responses.next()).resources.map((r) => r.name)).toEqual(['default']);
  });

  it('Delta: sends removed_resources for a name that goes away, and the name again when it returns', async () => {
    store.setValidationContext('extra', ca.pem);
    const d = client.delta();
    d.send({ resource_names_subscribe: ['extra'] });
    const first = await d.responses.next();
    d.ack(first);
    store.delete('extra');
    const removed = await d.responses.next();
    expect(removed.removed_resources).toEqual(['extra']);
    expect(removed.resources).toEqual([]);
    d.ack(removed);
    await nothingSent();
    store.setValidationContext('extra', ca.pem);
    const back = await d.responses.next();
    expect(back.resources.map((r) => r.name)).toEqual(['extra']);
  });

  it('Delta: honours initial_resource_versions on reconnect and leaves pending names pending', async () => {
    await setWorkload();
    store.setValidationContext('ROOTCA', ca.pem);
    const current = store.get('default')!.version;
    const d = client.delta();
    d.send({ resource_names_subscribe: ['default', 'ROOTCA', 'later'], initial_resource_versions: { default: current, ROOTCA: 'old-version', later: 'v-from-previous-agent' } });
    const res = await d.responses.next();
    // default is current: not resent; ROOTCA is stale: resent; 'later' is unknown: pending, NOT removed.
    expect(res.resources.map((r) => r.name)).toEqual(['ROOTCA']);
    expect(res.removed_resources).toEqual([]);
    d.ack(res);
    await nothingSent();
    store.setValidationContext('later', ca.pem);
    expect((await d.responses.next()).resources.map((r) => r.name)).toEqual(['later']);
  });

  it('Delta: after a NACK the rejected version is not resent; the next change is', async () => {
    await setWorkload();
    const d = client.delta();
    d.send({ resource_names_subscribe: ['default'] });
    d.ack(await d.responses.next());
    await setWorkload();
    const bad = await d.responses.next();
    d.nack(bad);
    await nothingSent();
    await setWorkload();
    const next = await d.responses.next();
    expect(next.resources[0]!.version).not.toBe(bad.resources[0]!.version);
    expect(await registry.metrics()).toMatch(/citadel_agent_sds_active_streams\{api="delta"\} 1/);
  });

  it('ends every stream with OK on stop and removes the socket', async () => {
    await setWorkload();
    const a = client.stream();
    a.send({ resource_names: ['default'] });
    await a.responses.next();
    const d = client.delta();
    d.send({ resource_names_subscribe: ['default'] });
    await d.responses.next();
    await server.stop(500);
    expect((await a.status).code).toBe(0);
    expect((await d.status).code).toBe(0);
    await expect(stat(socketPath)).rejects.toThrow();
  });
});

describe('SDS socket housekeeping', () => {
  it('replaces a stale socket and refuses a live one or a non-socket', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sds-'));
    const path = join(dir, 'socket');
    const store = new SecretStore({ clock: systemClock, log: silentLogger });
    try {
      // Stale: a socket file nobody listens on (bound by a process that has exited).
      execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path]);
      expect((await stat(path)).isSocket()).toBe(true);
      const replaced = await startAgentSocket({ socketPath: path, store, log: silentLogger });
      await replaced.stop();
      await writeFile(join(dir, 'marker'), '');
      const again = createServer();
      await new Promise<void>((r) => again.listen(path, r));
      // Live now: refused.
      await expect(startAgentSocket({ socketPath: path, store, log: silentLogger })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
      await new Promise<void>((r) => again.close(() => r()));
      const started = await startAgentSocket({ socketPath: path, store, log: silentLogger });
      await started.stop();
      await expect(startAgentSocket({ socketPath: join(dir, 'marker'), store, log: silentLogger })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a socket path longer than sun_path holds, before creating anything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sds-'));
    const path = join(dir, 'd'.repeat(120), 'socket');
    const store = new SecretStore({ clock: systemClock, log: silentLogger });
    try {
      await expect(startAgentSocket({ socketPath: path, store, log: silentLogger })).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/longer than 107 bytes/) });
      await expect(stat(join(dir, 'd'.repeat(120)))).rejects.toThrow();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('holds a connection made before the SDS server exists and answers it once the server is up', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sds-'));
    const path = join(dir, 'socket');
    const store = new SecretStore({ clock: systemClock, log: silentLogger });
    const early = new SdsTestClient(path);
    let server: AgentSocket | undefined;
    try {
      // The agent listens before it loads gRPC: Envoy connects and sends its request into a socket nobody reads yet.
      const listener = await listenUnixSocket(path);
      expect((await stat(path)).mode & 0o777).toBe(0o666);
      const stream = early.stream();
      stream.send({ resource_names: ['ROOTCA'] });
      store.setValidationContext('ROOTCA', (await makeCa()).pem);
      // Nothing can have answered yet: there is no server.
      expect(stream.responses.length).toBe(0);
      server = await startAgentSocket({ socketPath: join(dir, 'ignored'), listener, store, log: silentLogger });
      const res = await stream.responses.next();
      expect(decodeSecret(res.resources[0]!).name).toBe('ROOTCA');
      // Later connections go straight to the server.
      const late = new SdsTestClient(path);
      try {
        const s2 = late.stream();
        s2.send({ resource_names: ['ROOTCA'] });
        expect((await s2.responses.next()).version_info).toBe(res.version_info);
      } finally {
        late.close();
      }
      await server.stop(500);
      expect((await stream.status).code).toBe(0);
      await expect(stat(path)).rejects.toThrow();
    } finally {
      early.close();
      await server?.stop(500);
      store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('closes a listener that never served: held connections end and the socket file goes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sds-'));
    const path = join(dir, 'socket');
    const early = new SdsTestClient(path);
    try {
      const listener = await listenUnixSocket(path);
      const stream = early.stream();
      stream.send({ resource_names: ['default'] });
      await listener.close();
      expect((await stream.status).code).not.toBe(0);
      await expect(stat(path)).rejects.toThrow();
    } finally {
      early.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
