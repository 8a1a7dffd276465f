import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { SecretStore } from '../../../src/agent/secret-store.js';
import type { SecretResolver, SecretSink } from '../../../src/agent/sds/secret-source.js';
import { mergeTrustBundles, validateCertificateMaterial, validateCrlMaterial } from '../../../src/agent/material.js';
import { generateKeyPair, issueCrl, issueWorkloadCertificate } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { makeCa } from '../grpc/tls-fixtures.js';
import { makeTestCa } from './support.js';

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

describe('SecretStore: the agent publishes default and ROOTCA', () => {
  it('serves published material as Envoy secrets, versions each change once, and is ready with both', async () => {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const store = new SecretStore({ clock, log: silentLogger });
    const seen: string[] = [];
    const off = store.subscribe((n) => seen.push(n));
    const leaf = async (ttlMs = 60_000) => {
      const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
      const cert = issueWorkloadCertificate({ signer: ca.signer, publicKey, spiffeId: 'spiffe://td/ns/n/sa/s', ttlMs, now: clock.now() });
      return validateCertificateMaterial({ chain: cert.pem, key: privateKey, now: clock.now() });
    };

    store.publishTrustBundle(mergeTrustBundles([ca.rootPem]));
    expect(store.get('ROOTCA')!.resource.validation_context!.trusted_ca.inline_bytes.toString()).toBe(ca.rootPem.trim() + '\n');
    expect(store.ready()).toBe(false);
    const first = await leaf();
    store.publishCertificate(first);
    expect(store.certificate()).toBe(first);
    expect(store.ready()).toBe(true);
    const v1 = store.get('default')!.version;
    const served = store.get('default')!.resource.tls_certificate!;
    expect(served.certificate_chain.inline_bytes.toString()).toContain(first.certificateChainPem.trim());
    expect(served.private_key.inline_bytes.toString()).toBe(first.privateKeyPem);

    store.publishCertificate(first); // same content: no event, no new version
    store.publishTrustBundle(mergeTrustBundles([ca.rootPem]));
    expect(store.get('default')!.version).toBe(v1);
    const second = await leaf();
    store.publishCertificate(second);
    expect(store.get('default')!.version).not.toBe(v1);
    expect(store.certificate()).toBe(second);
    expect(seen).toEqual(['ROOTCA', 'default', 'default']);

    await clock.advance(61_000);
    expect(store.ready()).toBe(false); // the certificate expired
    off();
    store.publishCertificate(await leaf());
    expect(seen).toHaveLength(3);
  });

  it('refuses a trust bundle whose every certificate has expired and keeps the old one', async () => {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const store = new SecretStore({ clock, log: silentLogger });
    const bundle = mergeTrustBundles([ca.rootPem]);
    store.publishTrustBundle(bundle);
    const before = store.get('ROOTCA');
    const other = await makeTestCa(clock.now(), 'other');
    await clock.advance(bundle.lastNotAfter - clock.now());
    expect(() => store.publishTrustBundle(mergeTrustBundles([ca.rootPem, other.rootPem]))).toThrow(/every certificate in the trust bundle has expired/);
    expect(store.get('ROOTCA')).toEqual(before);
    expect(store.trustBundle()).toBe(bundle);
  });

  it('serves CRLs in ROOTCA whether they arrive before or after the bundle, and drops them again', async () => {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const store = new SecretStore({ clock, log: silentLogger });
    const seen: string[] = [];
    store.subscribe((n) => seen.push(n));
    const crl = validateCrlMaterial(issueCrl({ signer: ca.signer, number: 1, thisUpdate: clock.now(), nextUpdate: clock.now() + 3_600_000, entries: [{ serialHex: '0abc', revokedAt: clock.now() }] }).pem)!;
    const crlOf = () => store.get('ROOTCA')?.resource.validation_context?.crl?.inline_bytes.toString();

    store.publishCrl(crl); // no bundle yet: nothing to serve, nothing announced
    expect(store.get('ROOTCA')).toBeUndefined();
    expect(seen).toEqual([]);
    store.publishTrustBundle(mergeTrustBundles([ca.rootPem]));
    expect(crlOf()).toBe(crl.pem.trim() + '\n');
    expect(store.crl()).toBe(crl);
    store.publishCrl(undefined);
    expect(crlOf()).toBeUndefined();
    store.publishCrl(crl);
    store.publishCrl(crl); // same PEM: no change
    expect(crlOf()).toBe(crl.pem.trim() + '\n');
    expect(seen).toEqual(['ROOTCA', 'ROOTCA', 'ROOTCA']);
  });
});
