import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { watchCrlFile } from '../../../src/agent/crl-file.js';
import { mergeTrustBundles } from '../../../src/agent/material.js';
import { createAgentMetrics } from '../../../src/agent/metrics.js';
import { SecretStore } from '../../../src/agent/secret-store.js';
import type { FileWatcher } from '../../../src/file-watch.js';
import { silentLogger } from '../../../src/log.js';
import { issueCrl } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { makeTestCa, tempDir } from './support.js';

describe('CRL file -> ROOTCA crl', () => {
  let watcher: FileWatcher | undefined;
  afterEach(() => watcher?.close());

  it('serves the CRLs in ROOTCA, keeps them when the file turns bad, and drops them when it empties or goes', async () => {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const metrics = createAgentMetrics({ clock });
    // One store: what the CRL watcher publishes is what SDS serves.
    const store = new SecretStore({ clock, log: silentLogger, metrics });
    const secrets = store;
    secrets.publishTrustBundle(mergeTrustBundles([ca.rootPem]));
    const crlOf = () => store.get('ROOTCA')!.resource.validation_context!.crl?.inline_bytes.toString();
    const file = path.join(tempDir('crl-'), 'ca-crl.pem');
    const crl = issueCrl({ signer: ca.signer, number: 1, thisUpdate: clock.now(), nextUpdate: clock.now() + 3_600_000, entries: [{ serialHex: '0abc', revokedAt: clock.now() }] }).pem;

    // Missing at start (an optional ConfigMap not there yet): no crl.
    watcher = await watchCrlFile({ path: file, secrets, clock, log: silentLogger, metrics, pollMs: 1000 });
    expect(crlOf()).toBeUndefined();
    const v0 = store.get('ROOTCA')!.version;

    fs.writeFileSync(file, crl);
    await watcher.checkNow();
    expect(crlOf()).toBe(crl);
    expect(store.get('ROOTCA')!.version).not.toBe(v0);
    expect(store.get('ROOTCA')!.resource.validation_context!.trusted_ca.inline_bytes.toString()).toContain(ca.rootPem.trim());

    fs.writeFileSync(file, '-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n');
    await watcher.checkNow();
    expect(crlOf()).toBe(crl);
    expect((await metrics.registry.getSingleMetric('istio_agent_num_file_secret_failures_total')!.get()).values[0]!.value).toBe(1);

    fs.writeFileSync(file, '');
    await watcher.checkNow();
    expect(crlOf()).toBeUndefined();

    fs.writeFileSync(file, crl);
    await watcher.checkNow();
    expect(crlOf()).toBe(crl);
    fs.rmSync(file);
    await watcher.checkNow();
    expect(crlOf()).toBeUndefined();
  });
});
