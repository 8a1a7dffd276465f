/**
 * Authentication over an in-memory TokenReviewer (our own seam; the real apiserver is in
 * test/integration/ca.test.ts): cache bounds, no caching of failures, ServiceAccount checks, client certificates.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator, createTokenAuthenticator, jwtExpiry, tokenFingerprint, type Caller } from '../../../src/ca/authn.js';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial } from '../../../src/ca/material.js';
import { createCaMetrics } from '../../../src/ca/metrics.js';
import { isCitadelError } from '../../../src/errors.js';
import type { TokenReviewer, TokenReviewResult } from '../../../src/kube/tokenreview.js';
import { silentLogger } from '../../../src/log.js';
import { generateKeyPair, parseCertificate } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD, type TestCa } from './fixtures.js';

const jwt = (claims: Record<string, unknown>) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

function reviewer(verdict: (token: string) => TokenReviewResult | Error) {
  const calls: string[][] = [];
  const r: TokenReviewer = {
    async review(token, audiences) {
      calls.push([...audiences]);
      const v = verdict(token);
      if (v instanceof Error) throw v;
      return v;
    },
  };
  return { r, calls };
}

const ok = (ns: string, sa: string, extra: Record<string, string[]> = {}): TokenReviewResult => ({
  authenticated: true,
  username: `system:serviceaccount:${ns}:${sa}`,
  groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
  extra,
  audiences: ['istio-ca'],
});

describe('token authentication', () => {
  it('maps a ServiceAccount token to its SPIFFE ID with pod name and uid, asking for the configured audiences', async () => {
    const clock = new FakeClock();
    const { r, calls } = reviewer(() => ok('ns1', 'sa1', { 'authentication.kubernetes.io/pod-name': ['p1'], 'authentication.kubernetes.io/pod-uid': ['u1'] }));
    const a = createTokenAuthenticator({ reviewer: r, audiences: ['istio-ca'], trustDomain: () => TD, clock, cacheTtlMs: 10_000 });
    const caller = await a.authenticate(jwt({ exp: clock.now() / 1000 + 3600 }));
    expect(caller).toEqual({ identity: `spiffe://${TD}/ns/ns1/sa/sa1`, method: 'token', namespace: 'ns1', serviceAccount: 'sa1', podName: 'p1', podUid: 'u1' });
    expect(calls).toEqual([['istio-ca']]);
  });

  it('reuses a success for the cache TTL but never past the token exp; does not cache failures', async () => {
    const clock = new FakeClock();
    let accept = true;
    const { r, calls } = reviewer(() => (accept ? ok('a', 'b') : { authenticated: false, groups: [], extra: {}, audiences: [], error: 'nope' }));
    const a = createTokenAuthenticator({ reviewer: r, audiences: ['istio-ca'], trustDomain: () => TD, clock, cacheTtlMs: 10_000 });
    const long = jwt({ exp: clock.now() / 1000 + 3600 });
    await a.authenticate(long);
    await a.authenticate(long);
    expect(calls).toHaveLength(1);
    await clock.advance(10_001);
    await a.authenticate(long);
    expect(calls).toHaveLength(2);
    // A token expiring in 3 s is cached for 3 s only.
    const short = jwt({ exp: clock.now() / 1000 + 3 });
    await a.authenticate(short);
    await clock.advance(3001);
    await a.authenticate(short);
    expect(calls).toHaveLength(4);
    // No exp claim: never cached.
    const noExp = jwt({});
    await a.authenticate(noExp);
    await a.authenticate(noExp);
    expect(calls).toHaveLength(6);
    // Failures are asked again every time.
    accept = false;
    const bad = jwt({ exp: clock.now() / 1000 + 3600 });
    await expect(a.authenticate(bad)).rejects.toThrow('token rejected');
    await expect(a.authenticate(bad)).rejects.toThrow('token rejected');
    expect(calls).toHaveLength(8);
  });

  it('shares one review between concurrent calls with the same token', async () => {
    const clock = new FakeClock();
    const { r, calls } = reviewer(() => ok('a', 'b'));
    const a = createTokenAuthenticator({ reviewer: r, audiences: ['istio-ca'], trustDomain: () => TD, clock, cacheTtlMs: 0 });
    const t = jwt({ exp: clock.now() / 1000 + 3600 });
    await Promise.all([a.authenticate(t), a.authenticate(t), a.authenticate(t)]);
    expect(calls).toHaveLength(1);
  });

  it('refuses users that are not ServiceAccounts and reports an unreachable apiserver as UPSTREAM_UNAVAILABLE', async () => {
    const clock = new FakeClock();
    const user = reviewer(() => ({ authenticated: true, username: 'alice', groups: ['system:authenticated'], extra: {}, audiences: ['istio-ca'] }));
    const a = createTokenAuthenticator({ reviewer: user.r, audiences: ['istio-ca'], trustDomain: () => TD, clock, cacheTtlMs: 1000 });
    await expect(a.authenticate('x.y.z')).rejects.toThrow('not a ServiceAccount token');
    const down = reviewer(() => new Error('connect ECONNREFUSED'));
    const b = createTokenAuthenticator({ reviewer: down.r, audiences: ['istio-ca'], trustDomain: () => TD, clock, cacheTtlMs: 1000 });
    await b.authenticate('x.y.z').then(
      () => expect.fail('accepted'),
      (err) => expect(isCitadelError(err, 'UPSTREAM_UNAVAILABLE')).toBe(true),
    );
  });

  it('refuses a review that reports none of the requested audiences, including an empty list', async () => {
    const clock = new FakeClock();
    for (const audiences of [[], ['kubernetes.default.svc']]) {
      const r = reviewer(() => ({ ...ok('ns', 'sa'), audiences }));
      const a = createTokenAuthenticator({ reviewer: r.r, audiences: ['istio-ca'], trustDomain: () => TD, clock, cacheTtlMs: 1000 });
      await expect(a.authenticate('x.y.z')).rejects.toThrow('token audience rejected');
    }
  });

  it('reads exp without trusting it and fingerprints tokens irreversibly', () => {
    expect(jwtExpiry(jwt({ exp: 100 }))).toBe(100_000);
    expect(jwtExpiry('garbage')).toBeUndefined();
    expect(tokenFingerprint('secret-token')).toMatch(/^[0-9a-f]{16}$/);
    expect(tokenFingerprint('secret-token')).not.toContain('secret');
  });
});

describe('createAuthenticator', () => {
  const NOW = Date.UTC(2026, 5, 1);
  let root: TestCa;
  let inter: TestCa;
  let foreign: TestCa;
  beforeAll(async () => {
    root = await makeRoot('R', NOW - DAY);
    inter = await makeIntermediate(root, 'I', NOW - DAY);
    foreign = await makeRoot('F', NOW - DAY);
  });

  async function leafFrom(ca: TestCa, spiffeId: string) {
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const keyring = new Keyring({ clock: new FakeClock(NOW), log: silentLogger, maxWorkloadTtlMs: DAY });
    keyring.install(loadPluggedMaterial({ 'ca-cert.pem': ca.pem, 'ca-key.pem': ca.keyPem, 'cert-chain.pem': '', 'root-cert.pem': ca.pem }, 't', NOW));
    return parseCertificate(keyring.issueWorkload({ publicKey, spiffeId, ttlMs: DAY / 2 }).chain[0]!).der;
  }

  function setup(tokenResult: () => Promise<Caller>) {
    const clock = new FakeClock(NOW);
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
    keyring.install(loadPluggedMaterial(istioFiles(inter, root), 't', NOW));
    const metrics = createCaMetrics();
    let tokenCalls = 0;
    const authn = createAuthenticator({
      token: { authenticate: async () => { tokenCalls++; return tokenResult(); } },
      verificationMaterial: () => keyring.verificationMaterial(),
      trustDomain: () => TD,
      clock,
      log: silentLogger,
      metrics,
    });
    return { keyring, authn, metrics, tokenCalls: () => tokenCalls };
  }

  it('takes a client certificate that chains to the bundle, without a TokenReview', async () => {
    const { authn, tokenCalls } = setup(async () => { throw new Error('unused'); });
    const der = await leafFrom(inter, `spiffe://${TD}/ns/n/sa/s`);
    expect(await authn.authenticate({ bearerToken: 'tok', peerCertificateDer: der })).toMatchObject({ identity: `spiffe://${TD}/ns/n/sa/s`, method: 'client-certificate' });
    expect(tokenCalls()).toBe(0);
  });

  it('falls back to the token when the certificate does not chain, and answers UNAUTHENTICATED with a counted reason when nothing works', async () => {
    const { authn, metrics } = setup(async () => { throw new Error('unused'); });
    const foreignDer = await leafFrom(foreign, `spiffe://${TD}/ns/n/sa/s`);
    const otherTd = await leafFrom(inter, 'spiffe://other.domain/ns/n/sa/s');
    const cases: Array<[Buffer | undefined, string]> = [
      [undefined, 'no credentials'],
      [foreignDer, 'client certificate rejected: not issued by this CA'],
      [otherTd, `client certificate rejected: not in trust domain ${TD}`],
      [Buffer.from('30030201', 'hex'), 'client certificate rejected: malformed'],
    ];
    for (const [peerCertificateDer, reason] of cases) {
      await authn.authenticate({ bearerToken: undefined, peerCertificateDer }).then(
        () => expect.fail('accepted'),
        (err) => {
          expect(isCitadelError(err, 'UNAUTHENTICATED')).toBe(true);
          expect((err as Error).message).toBe(`authentication failed: ${reason}`);
        },
      );
    }
    const text = await metrics.registry.getSingleMetricAsString('citadel_server_authentication_failure_count');
    expect(text).toContain('reason="no_credentials"} 1');
    expect(text).toContain('reason="client_certificate_untrusted"} 1');
    expect(text).toContain('reason="client_certificate_not_workload"} 1');
    expect(text).toContain('reason="client_certificate_malformed"} 1');
  });

  it('tells an expired client certificate apart, by message and label', async () => {
    const { metrics } = setup(async () => { throw new Error('unused'); });
    const der = await leafFrom(inter, `spiffe://${TD}/ns/n/sa/s`);
    const later = createAuthenticator({
      token: { authenticate: async () => { throw new Error('unused'); } },
      verificationMaterial: () => {
        const keyring = new Keyring({ clock: new FakeClock(NOW), log: silentLogger, maxWorkloadTtlMs: DAY });
        keyring.install(loadPluggedMaterial(istioFiles(inter, root), 't', NOW));
        return keyring.verificationMaterial();
      },
      trustDomain: () => TD,
      clock: new FakeClock(NOW + DAY),
      log: silentLogger,
      metrics,
    });
    await expect(later.authenticate({ bearerToken: undefined, peerCertificateDer: der })).rejects.toThrow(/^authentication failed: client certificate rejected: expired$/);
    expect(await metrics.registry.getSingleMetricAsString('citadel_server_authentication_failure_count')).toContain('reason="client_certificate_expired"} 1');
  });
});
