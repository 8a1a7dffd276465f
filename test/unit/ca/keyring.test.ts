import { beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial } from '../../../src/ca/material.js';
import { createCaMetrics } from '../../../src/ca/metrics.js';
import { isCitadelError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { generateKeyPair, parseCertificate, parseCertificates, verifyChain } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD, type TestCa } from './fixtures.js';

const START = Date.UTC(2026, 5, 1);
let rootA: TestCa;
let interA1: TestCa;
let interA2: TestCa;
let rootB: TestCa;
let interB: TestCa;

beforeAll(async () => {
  rootA = await makeRoot('Root A', START - DAY, 3650 * DAY);
  interA1 = await makeIntermediate(rootA, 'A1', START - DAY, 1000 * DAY);
  interA2 = await makeIntermediate(rootA, 'A2', START - DAY, 1000 * DAY);
  rootB = await makeRoot('Root B', START - DAY, 3650 * DAY);
  interB = await makeIntermediate(rootB, 'B1', START - DAY, 1000 * DAY);
});

const ID = `spiffe://${TD}/ns/default/sa/app`;

function setup(maxWorkloadTtlMs = 90 * DAY) {
  const clock = new FakeClock(START);
  const metrics = createCaMetrics();
  const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs, metrics });
  let changes = 0;
  keyring.onChange(() => changes++);
  return { clock, keyring, metrics, changes: () => changes };
}

const material = (inter: TestCa, root: TestCa, now: number) => loadPluggedMaterial(istioFiles(inter, root), 'test', now);

describe('Keyring', () => {
  it('is not ready and refuses to sign until material is installed', async () => {
    const { keyring } = setup();
    expect(keyring.isReady()).toBe(false);
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    try {
      keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: DAY });
      throw new Error('signed');
    } catch (err) {
      expect(isCitadelError(err, 'CA_NOT_READY')).toBe(true);
    }
  });

  it("signs with Istio's chain layout and switches intermediates atomically, emitting a change", async () => {
    const { keyring, clock, changes, metrics } = setup();
    keyring.install(material(interA1, rootA, clock.now()));
    expect(changes()).toBe(1);
    expect(keyring.install(material(interA1, rootA, clock.now()))).toBe(false);
    expect(changes()).toBe(1);
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const a = keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: DAY });
    expect(a.chain).toEqual([expect.any(String), interA1.cert.pem, rootA.cert.pem]);
    expect(a.notAfter).toBe(START + DAY);
    keyring.install(material(interA2, rootA, clock.now()));
    expect(changes()).toBe(2);
    const b = keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: DAY });
    expect(parseCertificate(b.chain[0]!).issuer).toBe(interA2.cert.subject);
    expect(keyring.trustBundlePem()).toBe(rootA.cert.pem);
    // A client certificate under the old intermediate still verifies (renewal after an intermediate switch).
    const vm = keyring.verificationMaterial();
    expect(() => verifyChain({ leaf: parseCertificate(a.chain[0]!), intermediates: vm.intermediates, roots: vm.roots, now: clock.now() })).not.toThrow();
    expect((await metrics.registry.getSingleMetricAsString('citadel_server_key_material_reload_count'))).toMatch(/ 1$/m);
  });

  it('keeps a replaced root in the bundle until no leaf under it can be valid, then drops it', async () => {
    const maxTtl = 30 * DAY;
    const { keyring, clock, changes } = setup(maxTtl);
    keyring.install(material(interA1, rootA, clock.now()));
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const old = keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: maxTtl });
    await clock.advance(DAY);
    keyring.install(material(interB, rootB, clock.now()));
    const bundle = parseCertificates(keyring.trustBundlePem()).map((c) => c.subject);
    expect(bundle).toEqual([rootB.cert.subject, rootA.cert.subject]);
    const fresh = keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: DAY });
    expect(parseCertificates(fresh.chain[2]!)).toHaveLength(2);
    // The old leaf still verifies against the published bundle.
    const vm = keyring.verificationMaterial();
    expect(() => verifyChain({ leaf: parseCertificate(old.chain[0]!), intermediates: [interA1.cert], roots: vm.roots, now: clock.now() })).not.toThrow();
    const before = changes();
    // Kept for max workload TTL after the switch (other replicas may have issued until then), then dropped.
    await clock.advance(maxTtl - 1000);
    expect(parseCertificates(keyring.trustBundlePem())).toHaveLength(2);
    await clock.advance(2000);
    expect(parseCertificates(keyring.trustBundlePem()).map((c) => c.subject)).toEqual([rootB.cert.subject]);
    expect(changes()).toBe(before + 1);
  });

  it('keeps a root that the new material still lists, without retention', () => {
    const { keyring, clock } = setup();
    keyring.install(material(interA1, rootA, clock.now()));
    keyring.install(loadPluggedMaterial({ ...istioFiles(interB, rootB), 'root-cert.pem': rootB.pem + rootA.pem }, 't', clock.now()));
    expect(parseCertificates(keyring.trustBundlePem()).map((c) => c.subject)).toEqual([rootB.cert.subject, rootA.cert.subject]);
    expect(keyring.bundleRoots()).toHaveLength(2);
  });

  it('clamps a leaf to the signing certificate and reports CA_NOT_READY once it has expired', async () => {
    const short = await makeIntermediate(rootA, 'short', START - DAY, 2 * DAY);
    const { keyring, clock } = setup();
    keyring.install(material(short, rootA, clock.now()));
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    expect(keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: 10 * DAY }).notAfter).toBe(short.cert.notAfter);
    await clock.advance(2 * DAY);
    expect(() => keyring.issueWorkload({ publicKey, spiffeId: ID, ttlMs: DAY })).toThrow(/expired/);
  });
});
