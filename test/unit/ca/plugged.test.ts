/** Plugged-in sources on a real temp directory, driven by a fake clock (poll timer and fs.watch debounce). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { createCaMetrics } from '../../../src/ca/metrics.js';
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
    const src = startDirectorySource({ keyring, clock, log: silentLogger, metrics, dir, pollIntervalMs: 5000 });
    expect(keyring.current()!.signer.cert.subject).toBe(i1.cert.subject);
    const reloadErrors = async () => /(\d+)$/m.exec(await metrics.registry.getSingleMetricAsString('citadel_server_key_material_reload_err_count'))?.[1];
    // Half-written update: the new cert without its key. Refused, counted once, old material kept.
    fs.writeFileSync(path.join(dir, 'ca-cert.pem'), i2.pem);
    await clock.advance(5000);
    await waitFor('the refused reload to be counted', async () => (await reloadErrors()) === '1');
    expect(keyring.current()!.signer.cert.subject).toBe(i1.cert.subject);
    await clock.advance(5000);
    await new Promise((r) => setTimeout(r, 50));
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
    expect(() => startDirectorySource({ keyring, clock: new FakeClock(NOW), log: silentLogger, dir, pollIntervalMs: 1000 })).toThrow(/ca-cert\.pem, ca-key\.pem, cert-chain\.pem: missing/);
    expect(keyring.isReady()).toBe(false);
  });

  it('follows Secret updates and keeps the material when the Secret is deleted', () => {
    const clock = new FakeClock(NOW);
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
    const secret = (inter: TestCa, rv: string) => ({ name: 'cacerts', namespace: 'n', resourceVersion: rv, data: istioFiles(inter, root) });
    const src = startSecretSource({ keyring, clock, log: silentLogger, initial: secret(i1, '1') });
    expect(src.description).toBe('secret n/cacerts');
    src.onSecret(secret(i2, '2'));
    expect(keyring.current()!.signer.cert.subject).toBe(i2.cert.subject);
    src.onSecret(undefined);
    expect(keyring.current()!.signer.cert.subject).toBe(i2.cert.subject);
  });
});
