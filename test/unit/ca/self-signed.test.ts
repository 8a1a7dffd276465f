/**
 * istio-ca-secret handling over an in-memory NamespaceSecrets (our own seam; the real one is exercised by
 * test/integration/ca*.test.ts): create, the create race, rotation with the same key, leader-only writes.
 */
import { describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { startSelfSigned, type SelfSignedOptions } from '../../../src/ca/self-signed.js';
import type { CreateSecretResult, SecretData, NamespaceSecrets, UpdateSecretResult } from '../../../src/kube/secrets.js';
import { silentLogger } from '../../../src/log.js';
import { generateKeyPair, parseCertificate, parseCertificates, spkiOf, verifyChain } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { DAY, TD } from './fixtures.js';

class MemorySecrets implements NamespaceSecrets {
  secrets = new Map<string, SecretData>();
  version = 0;
  /** Called before a create lands: lets a test simulate another replica winning the race. */
  beforeCreate?: () => void;

  async read(name: string) {
    return this.secrets.get(name);
  }
  async create(s: { name: string; type: string; data: Record<string, string> }): Promise<CreateSecretResult> {
    this.beforeCreate?.();
    if (this.secrets.has(s.name)) return { created: false };
    const secret = { name: s.name, namespace: 'ns', type: s.type, data: { ...s.data }, resourceVersion: String(++this.version) };
    this.secrets.set(s.name, secret);
    return { created: true, secret };
  }
  async update(name: string, rv: string, data: Record<string, string>): Promise<UpdateSecretResult> {
    const cur = this.secrets.get(name);
    if (!cur) return { updated: false, reason: 'gone' };
    if (cur.resourceVersion !== rv) return { updated: false, reason: 'conflict' };
    const secret = { ...cur, data: { ...data }, resourceVersion: String(++this.version) };
    this.secrets.set(name, secret);
    return { updated: true, secret };
  }
}

const OPTIONS: SelfSignedOptions = { trustDomain: TD, keyType: 'ecdsa-p256', rootTtlMs: 100 * DAY, checkIntervalMs: 3600_000, gracePercent: 20, publishDelayMs: 0 };

function setup(secrets = new MemorySecrets(), clock = new FakeClock()) {
  const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: 10 * DAY });
  return { secrets, clock, keyring };
}

describe('self-signed root', () => {
  it("creates istio-ca-secret with Istio's keys and type", async () => {
    const { secrets, clock, keyring } = setup();
    const src = await startSelfSigned({ keyring, secrets, clock, log: silentLogger, namespace: 'ns', options: OPTIONS, random: () => 0.5 });
    const s = secrets.secrets.get('istio-ca-secret')!;
    expect(s.type).toBe('istio.io/ca-root');
    expect(Object.keys(s.data).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'key.pem', 'root-cert.pem']);
    expect(s.data['ca-key.pem']).toMatch(/^-----BEGIN EC PRIVATE KEY-----/);
    expect(s.data['root-cert.pem']).toBe(s.data['ca-cert.pem']);
    const root = parseCertificate(s.data['ca-cert.pem']!);
    expect(root.subject).toBe(`O=${TD}`);
    expect(keyring.trustBundlePem()).toBe(root.pem);
    await src.stop();
  });

  it('uses the root another replica created first', async () => {
    const secrets = new MemorySecrets();
    const other = setup(secrets);
    await (await startSelfSigned({ ...other, log: silentLogger, namespace: 'ns', options: OPTIONS })).stop();
    const winner = secrets.secrets.get('istio-ca-secret')!;
    // This replica read "absent", then lost the create.
    const late = new MemorySecrets();
    late.beforeCreate = () => late.secrets.set('istio-ca-secret', winner);
    const me = setup(late);
    await (await startSelfSigned({ ...me, log: silentLogger, namespace: 'ns', options: OPTIONS })).stop();
    expect(me.keyring.trustBundlePem()).toBe(parseCertificate(winner.data['ca-cert.pem']!).pem);
  });

  it('rotates in the last 20% of life with the same key, publishing the next root before it signs, only when allowed to write', async () => {
    const { secrets, clock, keyring } = setup();
    let leader = false;
    // Checks driven by hand here (interval 0); the timer path is covered below.
    const options = { ...OPTIONS, checkIntervalMs: 0, publishDelayMs: 3600_000 };
    const src = await startSelfSigned({ keyring, secrets, clock, log: silentLogger, namespace: 'ns', options, canWrite: () => leader });
    const first = keyring.current()!.signer.cert;
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const oldLeaf = keyring.issueWorkload({ publicKey, spiffeId: `spiffe://${TD}/ns/a/sa/x`, ttlMs: 90 * DAY });

    await clock.advance(79 * DAY);
    leader = true;
    expect(await src.checkRotation()).toBe(false); // 21% left
    await clock.advance(2 * DAY);
    leader = false;
    expect(await src.checkRotation()).toBe(false); // due, but not the leader
    leader = true;

    // Phase 1: the next root is published; the current one still signs.
    expect(await src.checkRotation()).toBe(true);
    const serials = (pem: string) => parseCertificates(pem).map((c) => c.serialHex);
    let stored = secrets.secrets.get('istio-ca-secret')!;
    expect(parseCertificate(stored.data['ca-cert.pem']!).serialHex).toBe(first.serialHex);
    const published = serials(stored.data['root-cert.pem']!);
    expect(published).toHaveLength(2);
    expect(published[0]).toBe(first.serialHex);
    const nextSerial = published[1]!;
    expect(keyring.bundleRoots().map((c) => c.serialHex)).toEqual([first.serialHex, nextSerial]);
    expect(parseCertificate(keyring.issueWorkload({ publicKey, spiffeId: `spiffe://${TD}/ns/a/sa/x`, ttlMs: DAY }).chain[0]!).issuer).toBe(first.subject);
    // Not before the publish delay.
    await clock.advance(3599_000);
    expect(await src.checkRotation()).toBe(false);
    await clock.advance(1000);
    // Phase 2: the next root signs; the old one stays trusted.
    expect(await src.checkRotation()).toBe(true);
    const next = keyring.current()!.signer.cert;
    expect(next.serialHex).toBe(nextSerial);
    expect(spkiOf(next.publicKey).equals(spkiOf(first.publicKey))).toBe(true);
    expect(next.subject).toBe(first.subject);
    stored = secrets.secrets.get('istio-ca-secret')!;
    expect(serials(stored.data['root-cert.pem']!)).toEqual([next.serialHex, first.serialHex]);
    expect(keyring.bundleRoots().map((c) => c.serialHex)).toEqual([next.serialHex, first.serialHex]);
    expect(await src.checkRotation()).toBe(false);
    // Same key and name: a leaf of either root verifies under the other.
    const newLeaf = keyring.issueWorkload({ publicKey, spiffeId: `spiffe://${TD}/ns/a/sa/x`, ttlMs: DAY });
    expect(() => verifyChain({ leaf: parseCertificate(newLeaf.chain[0]!), intermediates: [], roots: [first], now: clock.now() })).not.toThrow();
    expect(() => verifyChain({ leaf: parseCertificate(oldLeaf.chain[0]!), intermediates: [], roots: [next], now: clock.now() })).not.toThrow();
    await src.stop();
  });

  it('rotates from its hourly timer once due', async () => {
    const { secrets, clock, keyring } = setup();
    const src = await startSelfSigned({ keyring, secrets, clock, log: silentLogger, namespace: 'ns', options: OPTIONS, random: () => 0.25 });
    const first = keyring.current()!.signer.cert.serialHex;
    await clock.advance(79 * DAY);
    expect(keyring.current()!.signer.cert.serialHex).toBe(first);
    await clock.advance(DAY + 2 * 3600_000);
    expect(keyring.current()!.signer.cert.serialHex).not.toBe(first);
    expect(keyring.bundleRoots()).toHaveLength(2);
    await src.stop();
  });

  it('installs a root rotated by another replica and refuses unusable Secret content', async () => {
    const { secrets, clock, keyring } = setup();
    const src = await startSelfSigned({ keyring, secrets, clock, log: silentLogger, namespace: 'ns', options: OPTIONS, canWrite: () => false });
    const before = keyring.current()!.fingerprint;
    const cur = secrets.secrets.get('istio-ca-secret')!;
    src.onSecret({ ...cur, resourceVersion: '99', data: { ...cur.data, 'ca-key.pem': 'garbage' } });
    expect(keyring.current()!.fingerprint).toBe(before);
    // A valid change (an extra root appended) is picked up.
    const other = setup();
    await (await startSelfSigned({ ...other, log: silentLogger, namespace: 'ns', options: OPTIONS })).stop();
    const extra = other.secrets.secrets.get('istio-ca-secret')!.data['ca-cert.pem']!;
    src.onSecret({ ...cur, resourceVersion: '100', data: { ...cur.data, 'root-cert.pem': cur.data['root-cert.pem']! + extra } });
    expect(keyring.bundleRoots()).toHaveLength(2);
    await src.stop();
  });
});
