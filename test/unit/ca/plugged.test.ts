/** Plugged-in sources on a real temp directory, driven by a fake clock (poll timer and fs.watch debounce). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { createCaMetrics } from '../../../src/ca/metrics.js';
import { createServingCertManager } from '../../../src/ca/serving-cert.js';
import { generateKeyPair, parseCertificate, parseCertificates } from '../../../src/pki/index.js';
import { cacertsFromSecret, hasPluggedFiles, readCacertsDir, startDirectorySource, startSecretSource } from '../../../src/ca/plugged.js';
import { silentLogger } from '../../../src/log.js';
import { FakeClock } from '../../support/fake-clock.js';
import { waitFor } from '../../support/wait.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, type TestCa } from './fixtures.js';

const NOW = Date.now();
let root: TestCa;
let i1: TestCa;
let i2: TestCa;
const dirs: string[] = [];

beforeAll(async () => {
  root = await makeRoot('R', NOW - DAY);
  i1 = await makeIntermediate(root, 'I1', NOW - DAY);
  i2 = await makeIntermediate(root, 'I2', NOW - DAY);
});

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function dirWith(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cacerts-'));
  dirs.push(dir);
  for (const [k, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, k), v);
  return dir;
}

describe('plugged-in sources', () => {
  it('reads only the known files; a missing directory is empty', () => {
    const dir = dirWith({ ...istioFiles(i1, root), 'README': 'x', 'istio-generated': '' });
    expect(Object.keys(readCacertsDir(dir)).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
    expect(readCacertsDir(path.join(dir, 'nope'))).toEqual({});
    expect(hasPluggedFiles({})).toBe(false);
    expect(hasPluggedFiles({ 'root-cert.pem': 'x' })).toBe(true);
    expect(cacertsFromSecret({ name: 'cacerts', namespace: 'n', data: { 'tls.crt': 'a', 'other': 'b' } })).toEqual({ 'tls.crt': 'a' });
  });

  it('reloads the directory on the poll timer, switching only to valid material', async () => {
    const dir = dirWith(istioFiles(i1, root));
    const clock = new FakeClock(NOW);
    const metrics = createCaMetrics();
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY, metrics });
    const src = startDirectorySource({ keyring, clock, log: silentLogger, metrics, publishDelayMs: 60_000, dir, pollIntervalMs: 5000 });
    expect(keyring.current()!.signer.cert.subject).toBe(i1.cert.subject);
    const reloadErrors = async () => /(\d+)$/m.exec(await metrics.registry.getSingleMetricAsString('citadel_server_key_material_reload_err_count'))?.[1];
    // Half-written update: the new cert without its key. Refused, counted once, old material kept.
    fs.writeFileSync(path.join(dir, 'ca-cert.pem'), i2.pem);
    await clock.advance(5000);
    await waitFor('the refused reload to be counted', async () => (await reloadErrors()) === '1');
    expect(keyring.current()!.signer.cert.subject).toBe(i1.cert.subject);
    // The next poll reads the same files; it has finished once it has armed the poll after it.
    const timers = clock.pendingTimers;
    await clock.advance(5000);
    await waitFor('the next poll to finish', () => clock.pendingTimers === timers);
    expect(await reloadErrors()).toBe('1'); // the same files are not refused again
    fs.writeFileSync(path.join(dir, 'ca-key.pem'), i2.keyPem);
    fs.writeFileSync(path.join(dir, 'cert-chain.pem'), i2.pem + root.pem);
    await clock.advance(5000);
    await waitFor('the completed set to be installed', () => keyring.current()!.signer.cert.subject === i2.cert.subject);
    await src.stop();
  });

  it('refuses an incomplete directory at start', () => {
    const dir = dirWith({ 'root-cert.pem': root.pem });
    const keyring = new Keyring({ clock: new FakeClock(NOW), log: silentLogger, maxWorkloadTtlMs: DAY });
    expect(() => startDirectorySource({ keyring, clock: new FakeClock(NOW), log: silentLogger, publishDelayMs: 60_000, dir, pollIntervalMs: 1000 })).toThrow(/ca-cert\.pem, ca-key\.pem, cert-chain\.pem: missing/);
    expect(keyring.isReady()).toBe(false);
  });

  it('follows Secret updates and keeps the material when the Secret is deleted', () => {
    const clock = new FakeClock(NOW);
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
    const secret = (inter: TestCa, rv: string) => ({ name: 'cacerts', namespace: 'n', resourceVersion: rv, data: istioFiles(inter, root) });
    const src = startSecretSource({ keyring, clock, log: silentLogger, publishDelayMs: 60_000, initial: secret(i1, '1') });
    expect(src.description).toBe('secret n/cacerts');
    src.onSecret(secret(i2, '2'));
    expect(keyring.current()!.signer.cert.subject).toBe(i2.cert.subject);
    src.onSecret(undefined);
    expect(keyring.current()!.signer.cert.subject).toBe(i2.cert.subject);
  });

  describe('a new root (the whole Secret replaced at once)', () => {
    const DELAY = 120_000;
    async function replaced() {
      const clock = new FakeClock(NOW);
      const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
      const served: string[] = [];
      const serving = createServingCertManager({
        keyring, dnsNames: ['citadel.n.svc'], spiffeId: 'spiffe://cluster.local/ns/n/sa/citadel', ttlMs: DAY, clock, log: silentLogger,
        onUpdate: (m) => served.push(parseCertificates(m.certChainPem)[0]!.issuer),
      });
      const src = startSecretSource({ keyring, clock, log: silentLogger, publishDelayMs: DELAY, initial: { name: 'cacerts', namespace: 'n', resourceVersion: '1', data: istioFiles(i1, root) } });
      await serving.issue();
      const root2 = await makeRoot('R2', NOW - DAY);
      const j = await makeIntermediate(root2, 'J', NOW - DAY);
      const { publicKey } = await generateKeyPair('ecdsa-p256');
      const issuerOfLeaves = () => parseCertificate(keyring.issueWorkload({ publicKey, spiffeId: 'spiffe://cluster.local/ns/a/sa/b', ttlMs: 3600_000 }).chain[0]!).issuer;
      return { clock, keyring, src, serving, served, root2, j, issuerOfLeaves, newSecret: { name: 'cacerts', namespace: 'n', resourceVersion: '2', data: istioFiles(j, root2) } };
    }

    it('publishes the new root at once and signs under it (leaves and the serving certificate) only after the publish delay', async () => {
      const t = await replaced();
      t.src.onSecret(t.newSecret);
      expect(t.keyring.bundleRoots().map((r) => r.subject)).toEqual([root.cert.subject, t.root2.cert.subject]);
      expect(t.issuerOfLeaves()).toBe(i1.cert.subject);
      // The serving certificate is re-issued for the wider client CA list, still under the old root.
      await waitFor('the serving certificate re-issued', () => t.serving.current()!.clientCaPem.includes(t.root2.pem.trim()));
      expect(new Set(t.served)).toEqual(new Set([i1.cert.subject]));
      await t.clock.advance(DELAY - 1);
      expect(t.issuerOfLeaves()).toBe(i1.cert.subject);
      await t.clock.advance(1);
      expect(t.issuerOfLeaves()).toBe(t.j.cert.subject);
      await waitFor('the serving certificate under the new root', () => t.served.at(-1) === t.j.cert.subject);
      // The old root stays trusted for the leaves issued under it.
      expect(t.keyring.bundleRoots().map((r) => r.subject).sort()).toEqual([root.cert.subject, t.root2.cert.subject].sort());
      t.serving.stop();
    });

    it('switches at once with a publish delay of 0, and for a new intermediate under a root already trusted', async () => {
      const t = await replaced();
      t.src.onSecret({ ...t.newSecret, data: istioFiles(i2, root) });
      expect(t.issuerOfLeaves()).toBe(i2.cert.subject);
      const clock = new FakeClock(NOW);
      const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
      const src = startSecretSource({ keyring, clock, log: silentLogger, publishDelayMs: 0, initial: { name: 'cacerts', namespace: 'n', resourceVersion: '1', data: istioFiles(i1, root) } });
      src.onSecret(t.newSecret);
      expect(keyring.current()!.signer.cert.subject).toBe(t.j.cert.subject);
      t.serving.stop();
    });

    it('drops a staged root that a newer update abandons, without ever signing under it', async () => {
      const t = await replaced();
      t.src.onSecret(t.newSecret);
      expect(t.keyring.trusts(t.root2.cert)).toBe(true);
      t.src.onSecret({ name: 'cacerts', namespace: 'n', resourceVersion: '3', data: istioFiles(i1, root) }); // changed their mind
      await t.clock.advance(2 * DELAY + 1);
      expect(t.issuerOfLeaves()).toBe(i1.cert.subject);
      expect(t.keyring.trusts(t.root2.cert)).toBe(false);
      t.serving.stop();
    });
  });
});
