import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createFileCertSource, hasMountedCerts, type FileCertSource } from '../../../src/agent/file-certs.js';
import { createAgentMetrics } from '../../../src/agent/metrics.js';
import { SecretStore } from '../../../src/agent/secret-store.js';
import { silentLogger } from '../../../src/log.js';
import { generateKeyPair, issueWorkloadCertificate, privateKeyToPem } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { makeTestCa, tempDir, waitFor, type TestCa } from './support.js';

async function leafFor(ca: TestCa, now: number, ttlMs = 3_600_000) {
  const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
  const cert = issueWorkloadCertificate({ signer: ca.signer, publicKey, spiffeId: 'spiffe://cluster.local/ns/legacy/sa/app', ttlMs, now });
  return { certPem: cert.pem, keyPem: privateKeyToPem(privateKey), serialHex: cert.serialHex };
}

describe('file-mounted certificates', () => {
  let source: FileCertSource | undefined;
  afterEach(() => source?.stop());

  async function setup() {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const dir = tempDir('filecerts-');
    const leaf = await leafFor(ca, clock.now());
    fs.writeFileSync(path.join(dir, 'cert-chain.pem'), leaf.certPem);
    fs.writeFileSync(path.join(dir, 'key.pem'), leaf.keyPem);
    fs.writeFileSync(path.join(dir, 'root-cert.pem'), ca.rootPem);
    const metrics = createAgentMetrics({ clock });
    const secrets = new SecretStore({ clock, log: silentLogger, metrics });
    const changes: string[] = [];
    secrets.subscribe((n) => changes.push(n));
    source = createFileCertSource({ dir, secrets, clock, log: silentLogger, metrics, pollMs: 1000 });
    return { clock, ca, dir, leaf, secrets, changes, metrics, source };
  }

  it('detects the layout only when all three files exist', async () => {
    const dir = tempDir('filecerts-');
    expect(hasMountedCerts(dir)).toBe(false);
    fs.writeFileSync(path.join(dir, 'cert-chain.pem'), 'x');
    fs.writeFileSync(path.join(dir, 'key.pem'), 'x');
    expect(hasMountedCerts(dir)).toBe(false);
    fs.writeFileSync(path.join(dir, 'root-cert.pem'), 'x');
    expect(hasMountedCerts(dir)).toBe(true);
  });

  it('serves the files and becomes ready', async () => {
    const t = await setup();
    await t.source.start();
    expect(t.secrets.certificate()!.serialHex).toBe(t.leaf.serialHex);
    expect(t.secrets.trustBundle()!.trustedCaPem.trim()).toBe(t.ca.rootPem.trim());
    expect(t.secrets.ready()).toBe(true);
  });

  it('pushes a rewritten certificate, and swaps through a ..data symlink like a Secret volume', async () => {
    const t = await setup();
    await t.source.start();
    const next = await leafFor(t.ca, t.clock.now());
    fs.writeFileSync(path.join(t.dir, 'key.pem'), next.keyPem);
    fs.writeFileSync(path.join(t.dir, 'cert-chain.pem'), next.certPem);
    await t.clock.advance(1000);
    await waitFor(() => t.secrets.certificate()!.serialHex === next.serialHex, 'the new certificate');

    // Kubernetes layout: files are symlinks into ..data, which is swapped atomically.
    const vol = tempDir('secretvol-');
    const third = await leafFor(t.ca, t.clock.now());
    const writeVersion = (name: string, files: Record<string, string>) => {
      fs.mkdirSync(path.join(vol, name));
      for (const [f, c] of Object.entries(files)) fs.writeFileSync(path.join(vol, name, f), c);
    };
    writeVersion('v1', { 'cert-chain.pem': next.certPem, 'key.pem': next.keyPem, 'root-cert.pem': t.ca.rootPem });
    fs.symlinkSync('v1', path.join(vol, '..data'));
    for (const f of ['cert-chain.pem', 'key.pem', 'root-cert.pem']) fs.symlinkSync(path.join('..data', f), path.join(vol, f));
    t.source.stop();
    const source2 = createFileCertSource({ dir: vol, secrets: t.secrets, clock: t.clock, log: silentLogger, pollMs: 1000 });
    source = source2;
    await source2.start();
    writeVersion('v2', { 'cert-chain.pem': third.certPem, 'key.pem': third.keyPem, 'root-cert.pem': t.ca.rootPem });
    fs.symlinkSync('v2', path.join(vol, '..data_tmp'));
    fs.renameSync(path.join(vol, '..data_tmp'), path.join(vol, '..data'));
    await t.clock.advance(1000);
    await waitFor(() => t.secrets.certificate()!.serialHex === third.serialHex, 'the swapped certificate');
  });

  it('keeps the last good certificate when the key does not match, and counts the failure', async () => {
    const t = await setup();
    await t.source.start();
    const other = await leafFor(t.ca, t.clock.now());
    fs.writeFileSync(path.join(t.dir, 'cert-chain.pem'), other.certPem); // key.pem still the old key
    await t.clock.advance(1000);
    // The failure is counted as the pair is refused, so the old certificate is still the one served.
    await waitFor(async () => /file_secret_failures_total\{resource_name="default"\} 1/.test(await t.metrics.registry.metrics()), 'a counted failure');
    expect(t.secrets.certificate()!.serialHex).toBe(t.leaf.serialHex);
    fs.writeFileSync(path.join(t.dir, 'key.pem'), other.keyPem); // the writer finishes
    await t.clock.advance(1000);
    await waitFor(() => t.secrets.certificate()!.serialHex === other.serialHex, 'the completed pair');
  });

  it('does not serve an expired certificate', async () => {
    const t = await setup();
    const old = await leafFor(t.ca, t.clock.now() - 7_200_000, 3_600_000);
    fs.writeFileSync(path.join(t.dir, 'cert-chain.pem'), old.certPem);
    fs.writeFileSync(path.join(t.dir, 'key.pem'), old.keyPem);
    await t.source.start();
    expect(t.secrets.certificate()).toBeUndefined();
    expect(t.secrets.trustBundle()).toBeDefined();
    expect(t.secrets.ready()).toBe(false);
  });

  it('serves a kubelet-projected credential bundle (key first, then chain) and its trust bundle, and follows rewrites', async () => {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const dir = tempDir('podcert-');
    const credentialBundle = path.join(dir, 'credentialbundle.pem');
    const trustBundle = path.join(dir, 'trust-bundle.pem');
    const first = await leafFor(ca, clock.now());
    fs.writeFileSync(credentialBundle, first.keyPem + first.certPem);
    fs.writeFileSync(trustBundle, ca.rootPem);
    const metrics = createAgentMetrics({ clock });
    const secrets = new SecretStore({ clock, log: silentLogger, metrics });
    source = createFileCertSource({ credentialBundle: { credentialBundle, trustBundle }, secrets, clock, log: silentLogger, metrics, pollMs: 1000 });
    await source.start();
    expect(secrets.certificate()!.serialHex).toBe(first.serialHex);
    expect(secrets.certificate()!.privateKeyPem).toBe(first.keyPem);
    expect(secrets.trustBundle()!.trustedCaPem.trim()).toBe(ca.rootPem.trim());

    // The kubelet refreshes: one atomic rewrite of the one file.
    const next = await leafFor(ca, clock.now());
    fs.writeFileSync(credentialBundle, next.keyPem + next.certPem);
    await clock.advance(1000);
    await waitFor(() => secrets.certificate()!.serialHex === next.serialHex, 'the refreshed certificate');

    // A bundle that does not start with its key is refused; the last good one stays.
    fs.writeFileSync(credentialBundle, next.certPem + next.keyPem);
    await clock.advance(1000);
    await waitFor(async () => (await metrics.registry.getSingleMetricAsString('istio_agent_num_file_secret_failures_total')).includes('resource_name="default"} 1'), 'the failure counted');
    expect(secrets.certificate()!.serialHex).toBe(next.serialHex);
  });
});
