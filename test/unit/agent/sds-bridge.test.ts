import { describe, expect, it } from 'vitest';
import { validateCertificateMaterial, mergeTrustBundles } from '../../../src/agent/material.js';
import { bridgeWorkloadSecrets } from '../../../src/agent/sds-bridge.js';
import { SecretStore } from '../../../src/agent/sds/secret-store.js';
import { createWorkloadSecrets } from '../../../src/agent/workload-secrets.js';
import { silentLogger } from '../../../src/log.js';
import { generateKeyPair, issueWorkloadCertificate } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { makeTestCa } from './support.js';

describe('bridge into the SDS secret store', () => {
  it('copies default and ROOTCA now and on change, and the store versions each change once', async () => {
    const clock = new FakeClock(Date.now());
    const ca = await makeTestCa(clock.now());
    const secrets = createWorkloadSecrets({ clock, log: silentLogger });
    const store = new SecretStore({ clock, log: silentLogger });
    const seen: string[] = [];
    store.subscribe((n) => seen.push(n));
    secrets.publishTrustBundle(mergeTrustBundles([ca.rootPem]));
    const stop = bridgeWorkloadSecrets({ secrets, sink: store, log: silentLogger });
    expect(store.get('ROOTCA')).toBeDefined();
    expect(store.get('default')).toBeUndefined();

    const leaf = async () => {
      const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
      const cert = issueWorkloadCertificate({ signer: ca.signer, publicKey, spiffeId: 'spiffe://td/ns/n/sa/s', ttlMs: 60_000, now: clock.now() });
      return validateCertificateMaterial({ chain: cert.pem, key: privateKey, now: clock.now() });
    };
    const first = await leaf();
    secrets.publishCertificate(first);
    const v1 = store.get('default')!.version;
    expect(store.get('default')!.resource.tls_certificate!.certificate_chain.inline_bytes.toString()).toContain(first.certificateChainPem.trim());
    secrets.publishCertificate(first); // same content: no event, no new version
    expect(store.get('default')!.version).toBe(v1);
    secrets.publishCertificate(await leaf());
    expect(store.get('default')!.version).not.toBe(v1);
    expect(seen).toEqual(['ROOTCA', 'default', 'default']);
    stop();
    secrets.publishCertificate(await leaf());
    expect(seen).toHaveLength(3);
  });
});
