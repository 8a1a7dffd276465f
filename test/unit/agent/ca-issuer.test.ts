import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCaIssuer } from '../../../src/agent/ca-issuer.js';
import { silentLogger } from '../../../src/log.js';
import { BACKDATE_MS, parseCertificate, type KeyType } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { fakeCaClients, fakeToken, makeTestCa, tempDir } from './support.js';

async function setup(keyType: KeyType, opts: { namespace?: string; serviceAccount?: string; token?: string } = {}) {
  const clock = new FakeClock(Date.now());
  const ca = await makeTestCa(clock.now());
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'root.pem'), ca.rootPem);
  if (opts.token !== '') fs.writeFileSync(path.join(dir, 'token'), opts.token ?? fakeToken('ns1', 'sa1'));
  const fake = fakeCaClients({ ca: () => ca, clock });
  const issuer = createCaIssuer({
    clientFactory: fake.factory, rootCertPath: path.join(dir, 'root.pem'), tokenPath: path.join(dir, 'token'), trustDomain: 'td.example',
    namespace: opts.namespace, serviceAccount: opts.serviceAccount, certTtlMs: 3_600_000, keyType, clock, log: silentLogger, currentCertificate: () => undefined,
  });
  return { issuer, fake, dir };
}

describe('CA issuer', () => {
  it.each(['ecdsa-p384', 'rsa-2048'] as const)('makes a %s key and CSR', async (keyType) => {
    const t = await setup(keyType);
    const issued = await t.issuer.issue();
    const leaf = parseCertificate(issued.certificate.certificateChainPem);
    expect(leaf.key.type).toBe(keyType);
    expect(issued.identity.spiffeId).toBe('spiffe://td.example/ns/ns1/sa/sa1');
  });

  it('uses the configured identity (POD_NAMESPACE/SERVICE_ACCOUNT) when the token is opaque', async () => {
    const t = await setup('ecdsa-p256', { namespace: 'shop', serviceAccount: 'cart', token: 'opaque-token' });
    await t.issuer.issue();
    expect(t.fake.calls[0]!.csrSpiffeIds).toEqual(['spiffe://td.example/ns/shop/sa/cart']);
    expect(t.fake.calls[0]!.bearerToken).toBe('opaque-token');
  });

  it('fails closed without a token and without a certificate to renew with', async () => {
    const t = await setup('ecdsa-p256', { namespace: 'shop', serviceAccount: 'cart', token: '' });
    await expect(t.issuer.issue()).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(t.fake.calls).toHaveLength(0);
  });

  it('fails when the root file is missing or holds no certificate, before dialling', async () => {
    const t = await setup('ecdsa-p256');
    fs.writeFileSync(path.join(t.dir, 'root.pem'), 'not a certificate');
    await expect(t.issuer.issue()).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    fs.rmSync(path.join(t.dir, 'root.pem'));
    await expect(t.issuer.issue()).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    expect(t.fake.connections).toHaveLength(0);
  });

  it('sends a CSR whose only SAN is the SPIFFE ID, and never writes the key anywhere', async () => {
    const t = await setup('ecdsa-p256');
    const before = fs.readdirSync(t.dir).sort();
    const issued = await t.issuer.issue();
    expect(fs.readdirSync(t.dir).sort()).toEqual(before);
    expect(issued.certificate.privateKeyPem).toContain('PRIVATE KEY');
    expect(t.fake.calls[0]!.csrSpiffeIds).toEqual(['spiffe://td.example/ns/ns1/sa/sa1']);
  });

  describe('with a CA whose clock runs ahead', () => {
    /**
     * The CA signs at `aheadMs` past the agent's clock without backdating: every certificate it returns (its
     * root too) starts `aheadMs` after the agent's now. (Our own CA backdates by 2 minutes, so this is also our CA
     * with a clock 2 minutes + `aheadMs` ahead.)
     */
    async function skewed(aheadMs: number) {
      const clock = new FakeClock(Date.UTC(2026, 5, 1));
      const caClock = new FakeClock(clock.now() + aheadMs + BACKDATE_MS);
      const ca = await makeTestCa(caClock.now());
      const dir = tempDir();
      fs.writeFileSync(path.join(dir, 'root.pem'), ca.rootPem);
      fs.writeFileSync(path.join(dir, 'token'), fakeToken('ns1', 'sa1'));
      const fake = fakeCaClients({ ca: () => ca, clock: caClock });
      const issuer = createCaIssuer({
        clientFactory: fake.factory, rootCertPath: path.join(dir, 'root.pem'), tokenPath: path.join(dir, 'token'), trustDomain: 'td.example',
        certTtlMs: 3_600_000, keyType: 'ecdsa-p256', clock, log: silentLogger, currentCertificate: () => undefined,
      });
      return { clock, ca, issuer };
    }

    it('accepts a chain that starts a minute after its own clock (the tolerance of material.ts, now applied to the chain)', async () => {
      const t = await skewed(60_000);
      expect(parseCertificate(t.ca.rootPem).notBefore).toBe(t.clock.now() + 60_000);
      const issued = await t.issuer.issue();
      expect(issued.certificate.notBefore).toBe(t.clock.now() + 60_000);
      expect(issued.certificate.uris).toEqual(['spiffe://td.example/ns/ns1/sa/sa1']);
    });

    it('refuses one that starts further ahead than the tolerance, saying it is not valid yet', async () => {
      const t = await skewed(61_000);
      await expect(t.issuer.issue()).rejects.toMatchObject({ code: 'CHAIN_INVALID', message: expect.stringMatching(/not valid yet/) });
    });
  });
});
