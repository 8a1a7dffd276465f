/**
 * The SDS core (src/agent/sds/service.ts) as functions, without a socket: requests go in through the stream handle,
 * responses come out of a recording sink, and the agent's real SecretStore (on a fake clock) holds the secrets. Each
 * table row is a conversation: a step (a request from Envoy or a change in the store) and what the service must
 * answer to it. sds-protocol.test.ts shows the same rules over a real gRPC socket.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { prometheusSdsMetrics } from '../../../../src/agent/sds/metrics.js';
import { createSdsService } from '../../../../src/agent/sds/service.js';
import { SECRET_TYPE_URL, type DeltaDiscoveryResponse, type DiscoveryResponse, type SecretAny } from '../../../../src/agent/sds/xds-types.js';
import { SecretStore } from '../../../../src/agent/secret-store.js';
import type { CitadelError } from '../../../../src/errors.js';
import { silentLogger } from '../../../../src/log.js';
import type { ResponseSink } from '../../../../src/streams.js';
import { FakeClock } from '../../../support/fake-clock.js';

/** Secret content is written `name:kind@tag` in the tables: kind tls is a certificate and key, ca a validation context. */
function secret(name: string, kind: 'tls' | 'ca', tag: string): SecretAny {
  const bytes = (what: string) => ({ inline_bytes: Buffer.from(`${what} ${tag}`) });
  return kind === 'tls'
    ? { '@type': SECRET_TYPE_URL, name, tls_certificate: { certificate_chain: bytes('chain'), private_key: bytes('key') } }
    : { '@type': SECRET_TYPE_URL, name, validation_context: { trusted_ca: bytes('roots') } };
}

/** The table form of a resource sent: `name:kind@tag`. */
function describeResource(resource: SecretAny): string {
  if (resource.tls_certificate) return `${resource.name}:tls@${resource.tls_certificate.certificate_chain.inline_bytes.toString().split(' ')[1]}`;
  return `${resource.name}:ca@${resource.validation_context!.trusted_ca.inline_bytes.toString().split(' ')[1]}`;
}

class RecordingSink<T> implements ResponseSink<T> {
  readonly sent: T[] = [];
  ended = false;
  failure: CitadelError | undefined;
  send(message: T): void {
    this.sent.push(message);
  }
  end(): void {
    this.ended = true;
  }
  fail(err: CitadelError): void {
    this.failure = err;
  }
}

function setup(initial: readonly string[]) {
  const clock = new FakeClock();
  const store = new SecretStore({ clock, log: silentLogger });
  const registry = new Registry();
  const sds = createSdsService({ secrets: store, log: silentLogger, clock, metrics: prometheusSdsMetrics(registry), fetchWaitMs: 1000 });
  const put = (spec: string) => {
    const [, name, kind, tag] = /^(.+):(tls|ca)@(.+)$/.exec(spec)!;
    store.set(name!, secret(name!, kind as 'tls' | 'ca', tag!));
  };
  for (const spec of initial) put(spec);
  const counter = async (metric: string, resource: string) =>
    (await registry.getSingleMetric(metric)!.get()).values.find((v) => v.labels.resource_name === resource)?.value ?? 0;
  return { clock, store, sds, put, counter };
}

/** A store change: `put` sets `name:kind@tag`, `remove` deletes a name. */
type StoreStep = { put: string } | { remove: string };

describe('SDS core, state of the world', () => {
  /** A request; `nonce` says which response it answers: the last one sent, an unknown one, or none (default). */
  type Request = { names?: string[]; nonce?: 'last' | 'unknown'; nack?: boolean; type?: string };
  /** What a step must produce: one response holding exactly these resources, nothing (null), or the stream's end. */
  type Answer = string[] | null | { failed: string };
  type Step = (Request & { then: Answer }) | (StoreStep & { then: Answer });

  const rows: Array<{ rule: string; store: string[]; steps: Step[] }> = [
    {
      rule: 'the first request is answered with the secret, its version, type_url and a nonce',
      store: ['default:tls@v1'],
      steps: [{ names: ['default'], then: ['default:tls@v1'] }],
    },
    {
      rule: 'an empty type_url is taken as the Secret type',
      store: ['default:tls@v1'],
      steps: [{ names: ['default'], type: '', then: ['default:tls@v1'] }],
    },
    {
      rule: 'an ACK is never answered; a change is pushed with a new version',
      store: ['default:tls@v1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { names: ['default'], nonce: 'last', then: null },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
        { names: ['default'], nonce: 'last', then: null },
      ],
    },
    {
      rule: 'the same content stored again is no change: nothing is pushed',
      store: ['default:tls@v1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { put: 'default:tls@v1', then: null },
      ],
    },
    {
      rule: 'a NACK (error_detail) is not answered and the rejected version is never resent; the next change is',
      store: ['default:tls@v1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { names: ['default'], nonce: 'last', then: null },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
        { names: ['default'], nonce: 'last', nack: true, then: null },
        { names: ['default'], nonce: 'last', then: null },
        { put: 'default:tls@v3', then: ['default:tls@v3'] },
      ],
    },
    {
      rule: 'after a NACK, a change to another name on the stream goes out without the rejected secret',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [
        { names: ['default', 'ROOTCA'], then: ['default:tls@v1', 'ROOTCA:ca@r1'] },
        { put: 'default:tls@v2', then: ['default:tls@v2', 'ROOTCA:ca@r1'] },
        { names: ['default', 'ROOTCA'], nonce: 'last', nack: true, then: null },
        { put: 'ROOTCA:ca@r2', then: ['ROOTCA:ca@r2'] },
      ],
    },
    {
      rule: 'a request with a stale nonce is ignored, names and all',
      store: ['default:tls@v1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { names: ['default', 'ROOTCA'], nonce: 'unknown', then: null },
        { put: 'ROOTCA:ca@r1', then: null },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
      ],
    },
    {
      rule: 'a first request carrying a nonce (from an earlier stream) is answered as the first',
      store: ['default:tls@v1'],
      steps: [{ names: ['default'], nonce: 'unknown', then: ['default:tls@v1'] }],
    },
    {
      rule: 'an unknown name stays pending, the stream open; it is pushed when it appears',
      store: ['default:tls@v1'],
      steps: [
        { names: ['file-cert:/etc/certs/cert.pem~/etc/certs/key.pem'], then: null },
        { put: 'file-cert:/etc/certs/cert.pem~/etc/certs/key.pem:tls@f1', then: ['file-cert:/etc/certs/cert.pem~/etc/certs/key.pem:tls@f1'] },
      ],
    },
    {
      rule: 'ROOTCA is the validation context, default the certificate and key; both on one stream go out together',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [
        { names: ['default', 'ROOTCA'], then: ['default:tls@v1', 'ROOTCA:ca@r1'] },
        { names: ['default', 'ROOTCA'], nonce: 'last', then: null },
        { put: 'ROOTCA:ca@r2', then: ['default:tls@v1', 'ROOTCA:ca@r2'] },
      ],
    },
    {
      rule: 'a known name with an unknown one: the known one is sent, the other stays pending',
      store: ['ROOTCA:ca@r1'],
      steps: [
        { names: ['default', 'ROOTCA'], then: ['ROOTCA:ca@r1'] },
        { put: 'default:tls@v1', then: ['default:tls@v1', 'ROOTCA:ca@r1'] },
      ],
    },
    {
      rule: 'resubscribe: names changed in an ACK are sent, and a dropped name is no longer pushed',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { names: ['ROOTCA'], nonce: 'last', then: ['ROOTCA:ca@r1'] },
        { put: 'default:tls@v2', then: null },
        { names: ['default'], nonce: 'last', then: ['default:tls@v2'] },
      ],
    },
    {
      rule: 'a secret that goes away is not announced; it is pushed again when it returns',
      store: ['default:tls@v1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { remove: 'default', then: null },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
      ],
    },
    {
      rule: 'a request for another type ends the stream with CONFIG_INVALID (INVALID_ARGUMENT)',
      store: ['default:tls@v1'],
      steps: [
        { names: ['default'], then: ['default:tls@v1'] },
        { names: ['default'], nonce: 'last', type: 'type.googleapis.com/envoy.config.cluster.v3.Cluster', then: { failed: 'CONFIG_INVALID' } },
        { put: 'default:tls@v2', then: null },
      ],
    },
  ];

  it.each(rows)('$rule', ({ store: initial, steps }) => {
    const { store, sds, put } = setup(initial);
    const sink = new RecordingSink<DiscoveryResponse>();
    const stream = sds.openStream(sink, 'test');
    const nonces = new Set<string>();
    steps.forEach((step, i) => {
      const before = sink.sent.length;
      if ('put' in step) put(step.put);
      else if ('remove' in step) store.delete(step.remove);
      else {
        const last = sink.sent.at(-1);
        stream.onRequest({
          node: { id: 'sidecar~10.0.0.1~app.default~default.svc.cluster.local' },
          resource_names: step.names ?? [],
          type_url: step.type ?? SECRET_TYPE_URL,
          ...(step.nonce === 'last' ? { response_nonce: last!.nonce, version_info: last!.version_info } : {}),
          ...(step.nonce === 'unknown' ? { response_nonce: 'a-nonce-this-stream-never-sent' } : {}),
          ...(step.nack ? { error_detail: { code: 13, message: 'rejected by the test' } } : {}),
        });
      }
      const sent = sink.sent.slice(before);
      const where = `step ${i + 1}`;
      if (step.then === null || 'failed' in (step.then as object)) expect(sent, where).toEqual([]);
      if (step.then !== null && 'failed' in step.then) {
        expect(sink.failure?.code, where).toBe(step.then.failed);
        expect(sds.activeStreams, where).toBe(0);
        return;
      }
      if (step.then === null) return;
      expect(sent, where).toHaveLength(1);
      const res = sent[0]!;
      expect(res.resources.map(describeResource), where).toEqual(step.then);
      expect(res.type_url).toBe(SECRET_TYPE_URL);
      // One resource: its entry's version; several: a digest of name@version pairs.
      if (res.resources.length === 1) expect(res.version_info, where).toBe(store.get(res.resources[0]!.name)!.version);
      else expect(res.version_info, where).toMatch(/^[0-9a-f]{16}$/);
      expect(nonces.has(res.nonce), `${where}: a fresh nonce`).toBe(false);
      nonces.add(res.nonce);
    });
    expect(sink.ended).toBe(false);
  });

  it('counts a NACK per resource and releases the names of a closed stream', async () => {
    const { sds, store, counter } = setup(['default:tls@v1', 'ROOTCA:ca@r1']);
    const sink = new RecordingSink<DiscoveryResponse>();
    const stream = sds.openStream(sink, 'test');
    stream.onRequest({ resource_names: ['default', 'ROOTCA'], type_url: SECRET_TYPE_URL });
    stream.onRequest({ resource_names: ['default', 'ROOTCA'], type_url: SECRET_TYPE_URL, response_nonce: sink.sent[0]!.nonce, error_detail: { code: 13, message: 'no' } });
    expect(await counter('citadel_agent_sds_rejections_total', 'default')).toBe(1);
    expect(await counter('citadel_agent_sds_rejections_total', 'ROOTCA')).toBe(1);
    expect(await counter('citadel_agent_sds_pushes_total', 'default')).toBe(1);
    expect(sds.activeStreams).toBe(1);
    stream.onClose();
    stream.onClose();
    expect(sds.activeStreams).toBe(0);
    store.set('default', secret('default', 'tls', 'v2'));
    expect(sink.sent).toHaveLength(1);
  });

  it('close() ends every stream with OK and pushes nothing after', () => {
    const { sds, put } = setup(['default:tls@v1']);
    const sinks = [new RecordingSink<DiscoveryResponse>(), new RecordingSink<DiscoveryResponse>()];
    for (const sink of sinks) sds.openStream(sink, 'test').onRequest({ resource_names: ['default'], type_url: SECRET_TYPE_URL });
    sds.close();
    put('default:tls@v2');
    for (const sink of sinks) {
      expect(sink.ended).toBe(true);
      expect(sink.sent.map((r) => r.resources.map(describeResource))).toEqual([['default:tls@v1']]);
    }
    expect(sds.activeStreams).toBe(0);
  });
});

describe('SDS core, incremental (Delta)', () => {
  /** A request: names to (un)subscribe, the versions Envoy holds on the first one, which response it answers. */
  type Request = { subscribe?: string[]; unsubscribe?: string[]; initial?: Record<string, 'current' | 'old'>; nonce?: 'last' | 'unknown'; nack?: boolean };
  /** One response with these resources (and removed names after `-`), or nothing (null). */
  type Answer = string[] | null;
  type Step = (Request & { then: Answer }) | (StoreStep & { then: Answer });

  const rows: Array<{ rule: string; store: string[]; steps: Step[] }> = [
    {
      rule: 'subscribes are answered with named, versioned resources; an ACK is not answered',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [
        { subscribe: ['default', 'ROOTCA'], then: ['default:tls@v1', 'ROOTCA:ca@r1'] },
        { nonce: 'last', then: null },
      ],
    },
    {
      rule: 'a change sends only the changed resource',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [
        { subscribe: ['default', 'ROOTCA'], then: ['default:tls@v1', 'ROOTCA:ca@r1'] },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
      ],
    },
    {
      rule: 'an unsubscribed name is no longer pushed',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [
        { subscribe: ['default', 'ROOTCA'], then: ['default:tls@v1', 'ROOTCA:ca@r1'] },
        { unsubscribe: ['ROOTCA'], nonce: 'last', then: null },
        { put: 'ROOTCA:ca@r2', then: null },
      ],
    },
    {
      rule: 'a name that goes away is sent in removed_resources, and again when it returns',
      store: ['default:tls@v1'],
      steps: [
        { subscribe: ['default'], then: ['default:tls@v1'] },
        { remove: 'default', then: ['-default'] },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
      ],
    },
    {
      rule: 'an unknown name stays pending and is never announced as removed',
      store: [],
      steps: [
        { subscribe: ['ROOTCA'], then: null },
        { remove: 'ROOTCA', then: null },
        { put: 'ROOTCA:ca@r1', then: ['ROOTCA:ca@r1'] },
      ],
    },
    {
      rule: 'on the first request, a name Envoy holds at the current version is not resent; an old one is',
      store: ['default:tls@v1', 'ROOTCA:ca@r1'],
      steps: [{ subscribe: ['default', 'ROOTCA'], initial: { default: 'current', ROOTCA: 'old' }, then: ['ROOTCA:ca@r1'] }],
    },
    {
      rule: 'a later explicit subscribe is answered even when Envoy has the resource',
      store: ['default:tls@v1'],
      steps: [
        { subscribe: ['default'], then: ['default:tls@v1'] },
        { subscribe: ['default'], nonce: 'last', then: ['default:tls@v1'] },
      ],
    },
    {
      rule: 'after a NACK the rejected version is not resent; the next change is',
      store: ['default:tls@v1'],
      steps: [
        { subscribe: ['default'], then: ['default:tls@v1'] },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
        { nonce: 'last', nack: true, then: null },
        { put: 'default:tls@v3', then: ['default:tls@v3'] },
      ],
    },
    {
      rule: 'after a NACK, subscribing to the name again does not bring the rejected version back',
      store: ['default:tls@v1'],
      steps: [
        { subscribe: ['default'], then: ['default:tls@v1'] },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
        { nonce: 'last', nack: true, then: null },
        { subscribe: ['default'], then: null },
        { put: 'default:tls@v3', then: ['default:tls@v3'] },
      ],
    },
    {
      rule: 'an ACK for an unknown nonce changes nothing',
      store: ['default:tls@v1'],
      steps: [
        { subscribe: ['default'], then: ['default:tls@v1'] },
        { nonce: 'unknown', nack: true, then: null },
        { put: 'default:tls@v2', then: ['default:tls@v2'] },
      ],
    },
  ];

  it.each(rows)('$rule', ({ store: initial, steps }) => {
    const { store, sds, put } = setup(initial);
    const sink = new RecordingSink<DeltaDiscoveryResponse>();
    const stream = sds.openDeltaStream(sink, 'test');
    steps.forEach((step, i) => {
      const before = sink.sent.length;
      if ('put' in step) put(step.put);
      else if ('remove' in step) store.delete(step.remove);
      else {
        const initialVersions = Object.fromEntries(Object.entries(step.initial ?? {}).map(([name, which]) => [name, which === 'current' ? store.get(name)!.version : 'an-old-version']));
        stream.onRequest({
          type_url: SECRET_TYPE_URL,
          resource_names_subscribe: step.subscribe ?? [],
          resource_names_unsubscribe: step.unsubscribe ?? [],
          initial_resource_versions: initialVersions,
          ...(step.nonce === 'last' ? { response_nonce: sink.sent.at(-1)!.nonce } : {}),
          ...(step.nonce === 'unknown' ? { response_nonce: 'a-nonce-this-stream-never-sent' } : {}),
          ...(step.nack ? { error_detail: { code: 13, message: 'rejected by the test' } } : {}),
        });
      }
      const sent = sink.sent.slice(before);
      const where = `step ${i + 1}`;
      if (step.then === null) {
        expect(sent, where).toEqual([]);
        return;
      }
      expect(sent, where).toHaveLength(1);
      const res = sent[0]!;
      expect([...res.resources.map((r) => describeResource(r.resource)), ...res.removed_resources.map((n) => `-${n}`)], where).toEqual(step.then);
      for (const r of res.resources) expect(r.version, where).toBe(store.get(r.name)!.version);
      expect(res.type_url).toBe(SECRET_TYPE_URL);
      expect(res.nonce).not.toBe('');
    });
  });
});

describe('SDS core, FetchSecrets', () => {
  it('answers the available names at once, in the order asked', async () => {
    const { sds, store } = setup(['default:tls@v1', 'ROOTCA:ca@r1']);
    const res = await sds.fetch({ resource_names: ['ROOTCA', 'default'], type_url: SECRET_TYPE_URL });
    expect(res.resources.map(describeResource)).toEqual(['ROOTCA:ca@r1', 'default:tls@v1']);
    expect(res.type_url).toBe(SECRET_TYPE_URL);
    expect(res.version_info).toMatch(/^[0-9a-f]{16}$/);
    expect((await sds.fetch({ resource_names: ['default'] })).version_info).toBe(store.get('default')!.version);
  });

  it('waits up to fetchWaitMs for a missing name: answered as soon as it appears, without it after the wait', async () => {
    const { sds, clock, put } = setup(['default:tls@v1']);
    const appears = sds.fetch({ resource_names: ['default', 'file-root:/etc/ca.pem'] });
    await clock.advance(500);
    put('file-root:/etc/ca.pem:ca@f1');
    expect((await appears).resources.map(describeResource)).toEqual(['default:tls@v1', 'file-root:/etc/ca.pem:ca@f1']);

    let answered: DiscoveryResponse | undefined;
    void sds.fetch({ resource_names: ['default', 'never'] }).then((res) => (answered = res));
    await clock.advance(999);
    expect(answered).toBeUndefined();
    await clock.advance(1);
    expect(answered!.resources.map(describeResource)).toEqual(['default:tls@v1']);
    expect(clock.pendingTimers).toBe(0);
  });

  it('refuses another type with CONFIG_INVALID', async () => {
    const { sds } = setup(['default:tls@v1']);
    await expect(sds.fetch({ resource_names: ['default'], type_url: 'type.googleapis.com/envoy.config.listener.v3.Listener' })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });
});
