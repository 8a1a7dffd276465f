/**
 * citadel's SDS server (src/cli/agent-socket.ts over a SecretStore) driving a real Envoy 1.40, state-of-the-world
 * and incremental: Envoy warms from it, a rotation reaches new handshakes while an open connection keeps passing
 * bytes, a secret Envoy rejects is NACKed and never resent (Envoy keeps the last good one), and a restarted SDS
 * server on the same socket heals Envoy without a restart of Envoy.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { captureLogs, type CapturedLogs } from '../support/log-capture.js';
import { waitFor } from '../support/wait.js';
import { SecretStore } from '../../src/agent/secret-store.js';
import { SECRET_TYPE_URL } from '../../src/agent/sds/xds-types.js';
import { startAgentSocket, type AgentSocket } from '../../src/cli/agent-socket.js';
import { freePort, startEnvoy, type EnvoyProcess } from '../harness/index.js';
import { makeCa, type TestCa } from '../unit/grpc/tls-fixtures.js';

const ID = 'spiffe://cluster.local/ns/sds/sa/server';

function bootstrap(opts: { socketPath: string; port: number; appPort: number; apiType: 'GRPC' | 'DELTA_GRPC' }): object {
  const sdsConfig = {
    resource_api_version: 'V3',
    initial_fetch_timeout: '0s',
    api_config_source: {
      api_type: opts.apiType,
      transport_api_version: 'V3',
      grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc', retry_policy: { retry_back_off: { base_interval: '0.1s', max_interval: '0.5s' } } } }],
    },
  };
  const cluster = (name: string, address: object, extra: object = {}) => ({
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address } }] }] },
    ...extra,
  });
  return {
    node: { id: `sds-${opts.apiType.toLowerCase()}`, cluster: 'citadel-sds-test' },
    static_resources: {
      clusters: [
        cluster('sds-grpc', { pipe: { path: opts.socketPath } }, {
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
        }),
        cluster('app', { socket_address: { address: '127.0.0.1', port_value: opts.appPort } }),
      ],
      listeners: [{
        name: 'inbound',
        address: { socket_address: { address: '127.0.0.1', port_value: opts.port } },
        filter_chains: [{
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
              disable_stateless_session_resumption: true,
              disable_stateful_session_resumption: true,
              common_tls_context: {
                tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: sdsConfig }],
                validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: sdsConfig },
              },
            },
          },
          filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'inbound', cluster: 'app' } }],
        }],
      }],
    },
  };
}

/** The serial (lower-case hex) Envoy's listener presents to a new handshake. */
function servedSerial(port: number, ca: TestCa): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: ca.pem, servername: 'x', checkServerIdentity: () => undefined }, () => {
      const serial = s.getPeerCertificate().serialNumber.toLowerCase();
      s.destroy();
      resolve(serial.replace(/^0+/, ''));
    });
    s.on('error', reject);
  });
}

/** Polls `fn` until `ok` holds for its value, naming the last value on timeout. */
async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
  let last: T | undefined;
  const hit = await waitFor(what, async () => {
    last = await fn();
    return ok(last) ? { value: last } : undefined;
  }, { timeoutMs, context: () => `last: ${JSON.stringify(last)}` });
  return hit.value;
}

/** Sends a line over a TLS connection and waits for its echo. */
function echo(socket: TLSSocket, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) {
        socket.off('data', onData);
        resolve(buf.trim());
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(line + '\n');
  });
}

const strip = (hex: string) => hex.toLowerCase().replace(/^0+/, '');

for (const apiType of ['GRPC', 'DELTA_GRPC'] as const) {
  describe(`real Envoy over citadel SDS (${apiType})`, () => {
    let dir: string;
    let socketPath: string;
    let ca: TestCa;
    let store: SecretStore;
    let registry: Registry;
    let logs: CapturedLogs;
    let server: AgentSocket;
    let envoy: EnvoyProcess;
    let app: Server;
    const appSockets = new Set<Socket>();
    let port: number;

    async function rotate(): Promise<string> {
      const leaf = await ca.issue({ spiffeId: ID, dnsNames: ['sds.test'] });
      store.setTlsCertificate('default', leaf.certPem + ca.pem, leaf.keyPem);
      return strip(leaf.serialHex);
    }
    const pushes = async (name: string) => {
      const m = new RegExp(`citadel_agent_sds_pushes_total\\{resource_name="${name}"\\} (\\d+)`).exec(await registry.metrics());
      return Number(m?.[1] ?? 0);
    };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'sdse-'));
      socketPath = join(dir, 'socket');
      ca = await makeCa();
      store = new SecretStore({ clock: systemClock, log: silentLogger });
      registry = new Registry();
      logs = captureLogs();
      server = await startAgentSocket({ socketPath, store, log: logs.log, registry });
      app = createServer((s) => {
        appSockets.add(s);
        s.on('close', () => appSockets.delete(s));
        s.on('data', (d) => s.write(d));
      });
      await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
      port = await freePort();
      envoy = await startEnvoy({
        name: `sds-${apiType}`,
        bootstrap: bootstrap({ socketPath, port, appPort: (app.address() as { port: number }).port, apiType }),
        componentLogLevel: 'secret:debug,config:debug',
      });
    }, 60_000);

    afterAll(async () => {
      await envoy?.stop();
      await server?.stop(500);
      for (const s of appSockets) s.destroy();
      await new Promise<void>((r) => app?.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    });

    it('warms from SDS (one stream per secret), rotates without dropping an open connection, survives a NACK', async () => {
      // Nothing to serve yet: Envoy waits (initial_fetch_timeout 0s) with both streams open.
      await eventually(async () => server.service.activeStreams, (n) => n === 2, 'two SDS streams');
      // Envoy picked the API the bootstrap names.
      expect(await registry.metrics()).toMatch(new RegExp(`citadel_agent_sds_active_streams\\{api="${apiType === 'GRPC' ? 'sotw' : 'delta'}"\\} 2`));
      expect((await envoy.admin('/ready')).status).toBe(503);
      const serial1 = await rotate();
      store.setValidationContext('ROOTCA', ca.pem);
      await envoy.waitReady(20_000);
      const stats = await envoy.stats('^sds\\.');
      expect(stats['sds.default.update_success']).toBeGreaterThanOrEqual(1);
      expect(stats['sds.ROOTCA.update_success']).toBeGreaterThanOrEqual(1);
      expect(stats['sds.default.update_rejected'] ?? 0).toBe(0);
      expect(await servedSerial(port, ca)).toBe(serial1);
      const dump = await envoy.configDump('dynamic_active_secrets');
      const versions = (dump.configs as Array<{ name: string; version_info: string }>).map((c) => [c.name, c.version_info]);
      expect(Object.fromEntries(versions)).toEqual({ default: store.get('default')!.version, ROOTCA: store.get('ROOTCA')!.version });

      // A connection opened before the rotation.
      const longLived = await new Promise<TLSSocket>((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca: ca.pem, checkServerIdentity: () => undefined }, () => resolve(s));
        s.on('error', reject);
      });
      expect(await echo(longLived, 'before')).toBe('before');

      const serial2 = await rotate();
      await eventually(() => servedSerial(port, ca), (s) => s === serial2, 'the rotated certificate on a new handshake');
      expect(await echo(longLived, 'after')).toBe('after');
      // Envoy ACKed each response once and we never answered an ACK: exactly one push per change, no loop. An ACK
      // is handled at once, so once the server has logged it, any answer would have been counted.
      const lastDefaultPush = logs.matching('pushing secrets').filter((l) => (l.resources as string[]).includes('default')).at(-1)!;
      await eventually(async () => logs.matching('ACK', { nonce: lastDefaultPush.nonce }).length, (n) => n === 1, 'Envoy to ACK the rotation');
      expect(await pushes('default')).toBe(2);
      expect(await pushes('ROOTCA')).toBe(1);

      // Bypass validation to hand Envoy a pair it must reject: it NACKs, keeps serving serial2, and we do not resend.
      const a = await ca.issue({ spiffeId: ID });
      const b = await ca.issue({ spiffeId: ID });
      const good = store.get('default')!.resource;
      store.set('default', {
        '@type': SECRET_TYPE_URL,
        name: 'default',
        tls_certificate: { certificate_chain: { inline_bytes: Buffer.from(a.certPem) }, private_key: { inline_bytes: Buffer.from(b.keyPem) } },
      });
      await eventually(() => envoy.stats('^sds\\.default\\.update_rejected$'), (s) => s['sds.default.update_rejected'] === 1, 'Envoy rejecting the mismatched pair');
      // The NACK is counted while it is handled; a resend would have been counted by then too.
      await eventually(async () => registry.metrics(), (m) => /citadel_agent_sds_rejections_total\{resource_name="default"\} 1/.test(m), 'the NACK to reach the server');
      expect(await pushes('default')).toBe(3);
      expect((await envoy.stats('^sds\\.default\\.update_rejected$'))['sds.default.update_rejected']).toBe(1);
      expect(await servedSerial(port, ca)).toBe(serial2);
      expect(good.tls_certificate).toBeDefined();

      const serial3 = await rotate();
      await eventually(() => servedSerial(port, ca), (s) => s === serial3, 'a good certificate after the NACK');
      expect(await echo(longLived, 'still')).toBe('still');
      longLived.destroy();
    }, 90_000);

    it('heals after the SDS server restarts on the same socket, keeping its certificate meanwhile', async () => {
      const before = await servedSerial(port, ca);
      const connectFailures = async () => (await envoy.stats('^cluster\\.sds-grpc\\.upstream_cx_connect_fail$'))['cluster.sds-grpc.upstream_cx_connect_fail'] ?? 0;
      const failedBefore = await connectFailures();
      await server.stop(500);
      // While the agent is gone (Envoy has tried to reconnect and failed) Envoy keeps serving.
      await eventually(connectFailures, (n) => n > failedBefore, 'Envoy to fail to reconnect to the stopped SDS server');
      expect(await servedSerial(port, ca)).toBe(before);
      const fresh = new SecretStore({ clock: systemClock, log: silentLogger });
      store = fresh;
      const serial = await rotate();
      fresh.setValidationContext('ROOTCA', ca.pem);
      registry = new Registry();
      server = await startAgentSocket({ socketPath, store: fresh, log: silentLogger, registry });
      await eventually(() => servedSerial(port, ca), (s) => s === serial, 'the new agent certificate');
      await eventually(async () => server.service.activeStreams, (n) => n === 2, 'Envoy reconnected both streams');
    }, 60_000);
  });
}
