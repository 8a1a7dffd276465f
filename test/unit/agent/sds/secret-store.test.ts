import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../../src/log.js';
import { SecretStore, type SecretResolver, type SecretSink } from '../../../../src/agent/sds/secret-store.js';
import { FakeClock } from '../../../support/fake-clock.js';
import { makeCa } from '../../grpc/tls-fixtures.js';

describe('SecretStore', () => {
  it('versions content: a change gets a new version and one notification, identical content neither', async () => {
    const ca = await makeCa();
    const clock = new FakeClock(Date.now());
    const store = new SecretStore({ clock, log: silentLogger });
    const seen: string[] = [];
    const off = store.subscribe((n) => seen.push(n));
    expect(store.get('ROOTCA')).toBeUndefined();
    expect(store.setValidationContext('ROOTCA', ca.pem)).toBe(true);
    const v1 = store.get('ROOTCA')!.version;
    expect(v1).toMatch(/^\d{4}-\d\d-\d\dT.*Z\/\d+$/);
    await clock.advance(1000);
    expect(store.setValidationContext('ROOTCA', ca.pem)).toBe(false);
    expect(store.get('ROOTCA')!.version).toBe(v1);
    const other = await makeCa('o');
    expect(store.setValidationContext('ROOTCA', ca.pem + other.pem)).toBe(true);
    expect(store.get('ROOTCA')!.version).not.toBe(v1);
    expect(seen).toEqual(['ROOTCA', 'ROOTCA']);
    store.delete('ROOTCA');
    store.delete('ROOTCA');
    expect(seen).toEqual(['ROOTCA', 'ROOTCA', 'ROOTCA']);
    off();
    store.setValidationContext('ROOTCA', ca.pem);
    expect(seen).toHaveLength(3);
  });

  it('names the Any after the key it is stored under (Envoy ignores a mismatched name)', async () => {
    const ca = await makeCa();
    const store = new SecretStore({ clock: new FakeClock(Date.now()), log: silentLogger });
    store.setValidationContext('a', ca.pem);
    store.set('b', store.get('a')!.resource);
    expect(store.get('b')!.resource.name).toBe('b');
  });

  it('keeps the old entry when validation fails', async () => {
    const ca = await makeCa();
    const store = new SecretStore({ clock: new FakeClock(Date.now()), log: silentLogger });
    const leaf = await ca.issue({ spiffeId: 'spiffe://td/ns/a/sa/b' });
    store.setTlsCertificate('default', leaf.certPem, leaf.keyPem);
    const before = store.get('default');
    const other = await ca.issue({ spiffeId: 'spiffe://td/ns/a/sa/b' });
    expect(() => store.setTlsCertificate('default', other.certPem, leaf.keyPem)).toThrow();
    expect(store.get('default')).toEqual(before);
  });

  it('starts a resolver on the first acquire, stops it on the last release, and isolates failures', async () => {
    const ca = await makeCa();
    const events: string[] = [];
    let sink: SecretSink | undefined;
    const resolvers: SecretResolver[] = [
      { resolve: (name) => (name === 'boom' ? (() => { throw new Error('resolver bug'); })() : undefined) },
      {
        resolve(name, s) {
          if (!name.startsWith('dyn:')) return undefined;
          events.push(`start ${name}`);
          sink = s;
          s.setValidationContext(name, ca.pem);
          return { stop: () => events.push(`stop ${name}`) };
        },
      },
    ];
    const store = new SecretStore({ clock: new FakeClock(Date.now()), log: silentLogger, resolvers });
    store.subscribe(() => {
      throw new Error('listener bug');
    });
    store.acquire('dyn:x');
    store.acquire('dyn:x');
    expect(events).toEqual(['start dyn:x']);
    expect(store.get('dyn:x')).toBeDefined();
    store.release('dyn:x');
    expect(events).toEqual(['start dyn:x']);
    store.release('dyn:x');
    expect(events).toEqual(['start dyn:x', 'stop dyn:x']);
    expect(store.get('dyn:x')).toBeUndefined();
    expect(sink).toBeDefined();
    // Names no resolver takes just stay pending; a throwing resolver does not break acquire.
    store.acquire('plain');
    store.acquire('boom');
    expect(store.get('plain')).toBeUndefined();
    store.release('plain');
    store.release('never-acquired');
    store.acquire('dyn:y');
    store.close();
    expect(events).toContain('stop dyn:y');
  });
});
