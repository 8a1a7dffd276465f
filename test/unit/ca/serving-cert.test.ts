import { describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial } from '../../../src/ca/material.js';
import { createServingCertManager, serviceDnsNames, servingKeyType, type ServingMaterial } from '../../../src/ca/serving-cert.js';
import { silentLogger } from '../../../src/log.js';
import { parseCertificates, parsePrivateKeyPem } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { waitFor } from '../../support/wait.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD } from './fixtures.js';

describe('serving certificate', () => {
  it('follows the CA key type and names the Service', () => {
    expect(servingKeyType('ecdsa-p384')).toBe('ecdsa-p384');
    expect(servingKeyType('rsa-4096')).toBe('rsa-2048');
    expect(serviceDnsNames('cs', ['x.example', 'citadel.cs.svc'])).toEqual(['citadel.cs.svc', 'citadel.cs.svc.cluster.local', 'x.example']);
  });

  it('is issued by the CA, renewed at half-life and re-issued when the key material changes', async () => {
    const now = Date.UTC(2026, 5, 1);
    const clock = new FakeClock(now);
    const root = await makeRoot('R', now - DAY);
    const i1 = await makeIntermediate(root, 'I1', now - DAY);
    const i2 = await makeIntermediate(root, 'I2', now - DAY);
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: 90 * DAY });
    keyring.install(loadPluggedMaterial(istioFiles(i1, root), 't', now));
    const updates: ServingMaterial[] = [];
    const m = createServingCertManager({
      keyring, dnsNames: serviceDnsNames('cs'), spiffeId: `spiffe://${TD}/ns/cs/sa/citadel`, ttlMs: DAY, clock, log: silentLogger,
      onUpdate: (u) => updates.push(u),
    });
    const first = await m.issue();
    const [leaf, inter] = parseCertificates(first.certChainPem);
    expect(leaf!.dnsNames).toEqual(['citadel.cs.svc', 'citadel.cs.svc.cluster.local']);
    expect(inter!.subject).toBe(i1.cert.subject);
    expect(parsePrivateKeyPem(first.keyPem).asymmetricKeyType).toBe('ec');
    expect(first.clientCaPem).toContain(root.cert.pem.trim());
    await clock.advance(DAY / 2 + 1000);
    // Key generation runs on libuv's pool, so on a busy machine it can outlast a few microtask rounds.
    await waitFor('the renewal', () => updates.length >= 2, { intervalMs: 5, timeoutMs: 5000 });
    expect(updates).toHaveLength(2);
    keyring.install(loadPluggedMaterial(istioFiles(i2, root), 't', clock.now()));
    await waitFor('the re-issue', () => updates.length >= 3, { intervalMs: 5, timeoutMs: 5000 });
    expect(updates).toHaveLength(3);
    expect(parseCertificates(updates[2]!.certChainPem)[1]!.subject).toBe(i2.cert.subject);
    m.stop();
  });
});
