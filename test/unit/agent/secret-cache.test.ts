import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCaIssuer, type CsrClientFactory } from '../../../src/agent/ca-issuer.js';
import { createAgentMetrics } from '../../../src/agent/metrics.js';
import { createSecretCache, renewalTime, retryDelay, type SecretCache } from '../../../src/agent/secret-cache.js';
import { SecretStore } from '../../../src/agent/secret-store.js';
import { silentLogger } from '../../../src/log.js';
import { parseCertificates, privateKeyToPem } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { fakeCaClients, fakeToken, makeTestCa, tempDir, unavailable, waitFor, type TestCa } from './support.js';

describe('renewalTime', () => {
  const receivedAt = 1_000_000;
  const notAfter = receivedAt + 40_000;
  it('renews at the grace ratio of the lifetime seen from receipt', () => {
    expect(renewalTime({ receivedAt, notAfter, graceRatio: 0.5, random: () => 0.5 })).toBe(receivedAt + 20_000);
    expect(renewalTime({ receivedAt, notAfter, graceRatio: 0.2, jitter: 0, random: () => 0.9 })).toBe(receivedAt + 32_000);
  });
  it('jitters by at most ±jitter of the lifetime', () => {
    expect(renewalTime({ receivedAt, notAfter, graceRatio: 0.5, jitter: 0.01, random: () => 0 })).toBe(receivedAt + 20_400);
    expect(renewalTime({ receivedAt, notAfter, graceRatio: 0.5, jitter: 0.01, random: () => 0.999999 })).toBe(receivedAt + 19_600);
  });
  it('stays inside the lifetime', () => {
    expect(renewalTime({ receivedAt, notAfter, graceRatio: 1, jitter: 0.5, random: () => 0.99 })).toBe(receivedAt);
    expect(renewalTime({ receivedAt, notAfter, graceRatio: 0, jitter: 0.5, random: () => 0 })).toBe(notAfter);
  });
});

describe('retryDelay', () => {
  const mid = () => 0.5;
  it('is the backoff, capped at 5 s and jittered below it, when nothing valid is served', () => {
    expect(retryDelay({ failures: 3, random: mid, now: 0 })).toBe(2000);
    expect(retryDelay({ failures: 8, random: mid, now: 0 })).toBe(5000);
    expect(retryDelay({ failures: 8, random: mid, now: 100, notAfter: 50 })).toBe(5000);
    expect(retryDelay({ failures: 30, random: () => 0, now: 100, notAfter: 50 })).toBe(4500);
  });
  it('never waits beyond half the remaining life of the served certificate, nor below 500 ms', () => {
    expect(retryDelay({ failures: 5, random: mid, now: 0, notAfter: 600_000 })).toBe(8000);
    expect(retryDelay({ failures: 5, random: mid, now: 0, notAfter: 6000 })).toBe(3000);
    expect(retryDelay({ failures: 5, random: mid, now: 0, notAfter: 400 })).toBe(500);
  });
});

describe('secret cache with a CA', () => {
  const TTL = 40_000;
  let cache: SecretCache | undefined;
  afterEach(() => cache?.stop());

  async function setup(opts: { failWith?: () => Error | undefined; spiffeIdFor?: (asked: string) => string; leafPem?: (csrPem: string, ca: TestCa) => string; answerAfter?: Promise<void> } = {}) {
    const clock = new FakeClock(Date.UTC(2026, 5, 1));
    let ca: TestCa = await makeTestCa(clock.now());
    const dir = tempDir();
    const rootCertPath = path.join(dir, 'root-cert.pem');
    const tokenPath = path.join(dir, 'istio-token');
    fs.writeFileSync(rootCertPath, ca.rootPem);
    fs.writeFileSync(tokenPath, fakeToken('shop', 'cart'));
    let responseRoot: string | undefined;
    const fake = fakeCaClients({ ca: () => ca, clock, failWith: opts.failWith, spiffeIdFor: opts.spiffeIdFor, leafPem: opts.leafPem, responseRootPem: () => responseRoot });
    const metrics = createAgentMetrics({ clock });
    const secrets = new SecretStore({ clock, log: silentLogger, metrics });
    const changes: string[] = [];
    secrets.subscribe((n) => changes.push(n));
    const issuer = createCaIssuer({
      clientFactory: opts.answerAfter ? holdAnswers(fake.factory, opts.answerAfter) : fake.factory, rootCertPath, tokenPath, trustDomain: 'cluster.local', certTtlMs: TTL, keyType: 'ecdsa-p256',
      clock, log: silentLogger, metrics, currentCertificate: () => secrets.certificate(),
    });
    cache = createSecretCache({ issuer, secrets, rootCertPath, tokenPath, graceRatio: 0.5, clock, log: silentLogger, metrics, random: () => 0.5, rootPollMs: 1000 });
    return { clock, dir, rootCertPath, tokenPath, fake, metrics, secrets, changes, cache, setCa: (c: TestCa) => { ca = c; }, setResponseRoot: (pem: string) => { responseRoot = pem; } };
  }

  /** The CA answers only once `gate` resolves (a CA that is still signing). */
  function holdAnswers(factory: CsrClientFactory, gate: Promise<void>): CsrClientFactory {
    return (creds) => {
      const client = factory(creds);
      return {
        createCertificate: async (req) => {
          const answer = client.createCertificate(req);
          await gate;
          return answer;
        },
        close: () => client.close(),
      };
    };
  }

  /** Advances the fake clock to the next scheduled attempt and waits for the (real) crypto of that attempt. */
  async function runNextAttempt(t: Awaited<ReturnType<typeof setup>>) {
    const calls = t.fake.calls.length;
    const due = await waitFor(() => t.cache.nextAttemptAt(), 'a scheduled attempt');
    await t.clock.advance(Math.max(0, due - t.clock.now()));
    await waitFor(() => t.fake.calls.length > calls, 'a CA call');
    await waitFor(() => t.cache.nextAttemptAt() !== undefined, 'the attempt to finish');
  }

  it('issues at start with a CSR for the token identity and the configured TTL, and becomes ready', async () => {
    const t = await setup();
    await t.cache.start();
    expect(t.secrets.trustBundle()).toBeDefined(); // ROOTCA from the root file before any CA call
    await runNextAttempt(t);
    const cert = t.secrets.certificate()!;
    expect(cert.uris).toEqual(['spiffe://cluster.local/ns/shop/sa/cart']);
    expect(t.fake.calls[0]!.csrSpiffeIds).toEqual(['spiffe://cluster.local/ns/shop/sa/cart']);
    expect(t.fake.calls[0]!.validityDurationSeconds).toBe(40);
    expect(t.fake.calls[0]!.bearerToken).toBe(fakeToken('shop', 'cart'));
    expect(t.secrets.ready()).toBe(true);
    expect(parseCertificates(cert.certificateChainPem)).toHaveLength(1); // leaf only; the root goes to ROOTCA
    expect(t.changes).toEqual(['ROOTCA', 'default']);
    const text = await t.metrics.registry.metrics();
    expect(text).toMatch(/istio_agent_num_outgoing_requests\{request_type="csr"\} 1/);
    expect(text).toMatch(/istio_agent_cert_expiry_seconds\{resource_name="default"\} 40/);
  });

  it('says when the first request is on its way, before the CA has answered, so start-up work can overlap it', async () => {
    let answer!: () => void;
    const t = await setup({ answerAfter: new Promise<void>((resolve) => (answer = resolve)) });
    let requested = false;
    void t.cache.whenRequested().then(() => (requested = true));
    await t.cache.start();
    expect(requested).toBe(false);
    await t.clock.advance(0);
    await t.cache.whenRequested();
    expect(t.fake.calls).toHaveLength(1);
    expect(t.secrets.certificate()).toBeUndefined();
    answer();
    await t.cache.whenIssued();
    expect(t.secrets.certificate()?.uris).toEqual(['spiffe://cluster.local/ns/shop/sa/cart']);
  });

  it('says so too when the first attempt fails before sending anything', async () => {
    const t = await setup();
    fs.rmSync(t.rootCertPath);
    await t.cache.start();
    await t.clock.advance(0);
    await t.cache.whenRequested();
    expect(t.fake.calls).toHaveLength(0);
    expect(t.cache.failures()).toBe(1);
  });

  it('renews at half the lifetime with a new key each time, re-reading the token', async () => {
    const t = await setup();
    await t.cache.start();
    await runNextAttempt(t);
    const first = t.secrets.certificate()!;
    const issuedAt = t.clock.now();
    expect(t.cache.nextAttemptAt()).toBe(issuedAt + TTL / 2);
    fs.writeFileSync(t.tokenPath, fakeToken('shop', 'cart') + 'x'); // kubelet rotated the token
    await t.clock.advance(TTL / 2 - 1);
    expect(t.fake.calls).toHaveLength(1);
    await runNextAttempt(t);
    const second = t.secrets.certificate()!;
    expect(second.serialHex).not.toBe(first.serialHex);
    expect(t.fake.calls[1]!.publicKeyDer).not.toBe(t.fake.calls[0]!.publicKeyDer);
    expect(t.fake.calls[1]!.bearerToken).toMatch(/x$/);
    expect(t.clock.now()).toBe(issuedAt + TTL / 2);
    expect(t.cache.nextAttemptAt()).toBe(t.clock.now() + TTL / 2);
  });

  /** A cache that got its first certificate from a CA that is down from then on (until `setDown(false)`). */
  async function servedThenCaDown() {
    let down = false;
    const t = await setup({ failWith: () => (down ? unavailable() : undefined) });
    await t.cache.start();
    await runNextAttempt(t);
    down = true;
    return { t, served: t.secrets.certificate()!, setDown: (v: boolean) => { down = v; } };
  }

  it('keeps serving while the CA is down, backs off 0.5 s, 1 s, 2 s ... (within the remaining life), rebuilds the connection each time, then recovers', async () => {
    const { t, served, setDown } = await servedThenCaDown();
    const delays: number[] = [];
    await runNextAttempt(t); // the renewal at half-life fails
    for (let i = 0; i < 5; i++) {
      const before = t.clock.now();
      await runNextAttempt(t);
      delays.push(t.clock.now() - before);
    }
    // 8 s would be next, but only 12.5 s of the certificate's life are left: retry after half of that.
    expect(delays).toEqual([500, 1000, 2000, 4000, 6250]);
    expect(t.cache.failures()).toBe(6);
    expect(t.secrets.certificate()).toBe(served);
    expect(t.secrets.ready()).toBe(true);
    const connectionsWhileDown = t.fake.connections.length;
    expect(connectionsWhileDown).toBe(6); // the first one, then a new one after every failure
    const text = await t.metrics.registry.metrics();
    expect(text).toMatch(/istio_agent_num_failed_outgoing_requests\{request_type="csr",error="UPSTREAM_UNAVAILABLE"\} 6/);
    expect(text).toMatch(/istio_agent_num_outgoing_retries\{request_type="csr"\} 6/);
    setDown(false);
    await runNextAttempt(t);
    expect(t.secrets.certificate()!.serialHex).not.toBe(served.serialHex);
    expect(t.cache.failures()).toBe(0);
  });

  it('pushes a new ROOTCA when the root file changes, merged with the CA response roots', async () => {
    const t = await setup();
    await t.cache.start();
    await runNextAttempt(t);
    const before = t.secrets.trustBundle()!;
    expect(before.count).toBe(1);
    const other = await makeTestCa(t.clock.now(), 'next-root');
    const current = fs.readFileSync(t.rootCertPath, 'utf8');
    fs.writeFileSync(t.rootCertPath, current + other.rootPem);
    await t.clock.advance(1000); // the poll
    const after = await waitFor(() => (t.secrets.trustBundle()!.count === 2 ? t.secrets.trustBundle() : undefined), 'new ROOTCA');
    expect(after.trustedCaPem).toContain(other.rootPem.trim());
    expect(t.changes.filter((c) => c === 'ROOTCA')).toHaveLength(2);
    // Dropping the file's extra root drops it from ROOTCA; the CA's root stays.
    fs.writeFileSync(t.rootCertPath, other.rootPem);
    await t.clock.advance(1000);
    await waitFor(() => t.changes.filter((c) => c === 'ROOTCA').length === 3, 'third ROOTCA');
    expect(t.secrets.trustBundle()!.count).toBe(2); // the file's root + the CA response root
  });

  it('renews over mTLS with the current certificate when the token is gone (VM mode)', async () => {
    const t = await setup();
    await t.cache.start();
    await runNextAttempt(t);
    const first = t.secrets.certificate()!;
    fs.rmSync(t.tokenPath);
    await runNextAttempt(t);
    const call = t.fake.calls[1]!;
    expect(call.bearerToken).toBeUndefined();
    expect(call.creds.clientCertChainPem).toBe(first.certificateChainPem);
    expect(call.csrSpiffeIds).toEqual(['spiffe://cluster.local/ns/shop/sa/cart']);
    expect(t.secrets.certificate()!.serialHex).not.toBe(first.serialHex);
  });

  it('does not publish an answer for another identity', async () => {
    const t = await setup({ spiffeIdFor: () => 'spiffe://cluster.local/ns/shop/sa/admin' });
    await t.cache.start();
    await t.clock.advance(0);
    await waitFor(() => t.cache.failures() === 1, 'a refused answer');
    expect(t.fake.calls).toHaveLength(1);
    expect(t.secrets.certificate()).toBeUndefined();
    expect(await t.metrics.registry.metrics()).toMatch(/error="CERT_ERROR"\} 1/);
  });

  it('does not publish a leaf with a second URI SAN beside its own SPIFFE ID', async () => {
    // openssl signs the agent's own CSR with the test CA, adding a second URI SAN (not an X509-SVID).
    const twoUris = (csrPem: string, ca: TestCa) => {
      const dir = tempDir('two-uris-');
      fs.writeFileSync(path.join(dir, 'csr.pem'), csrPem);
      fs.writeFileSync(path.join(dir, 'ca.pem'), ca.rootPem);
      fs.writeFileSync(path.join(dir, 'ca-key.pem'), privateKeyToPem(ca.signer.key), { mode: 0o600 });
      fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=critical,URI:spiffe://cluster.local/ns/shop/sa/cart,URI:spiffe://cluster.local/ns/shop/sa/admin\nbasicConstraints=critical,CA:FALSE\n');
      execFileSync('openssl', ['x509', '-req', '-in', 'csr.pem', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '1', '-extfile', 'ext.cnf', '-out', 'leaf.pem'], { cwd: dir, stdio: 'pipe' });
      return fs.readFileSync(path.join(dir, 'leaf.pem'), 'utf8');
    };
    const t = await setup({ leafPem: twoUris });
    await t.cache.start();
    await t.clock.advance(0);
    await waitFor(() => t.cache.failures() === 1, 'a refused answer');
    expect(t.secrets.certificate()).toBeUndefined();
    expect(await t.metrics.registry.metrics()).toMatch(/error="CERT_ERROR"\} 1/);
  });

  it('does not publish a leaf that chains to no trusted root', async () => {
    const t = await setup();
    const rogue = await makeTestCa(t.clock.now(), 'rogue');
    const ours = fs.readFileSync(t.rootCertPath, 'utf8');
    t.setCa(rogue); // signs with the rogue key ...
    t.setResponseRoot(ours); // ... but claims our root in the response
    await t.cache.start();
    await t.clock.advance(0);
    await waitFor(() => t.cache.failures() === 1, 'a refused answer');
    expect(t.secrets.certificate()).toBeUndefined();
    expect(await t.metrics.registry.metrics()).toMatch(/error="CHAIN_ERROR"\} 1/);
  });

  it('fails without a token or configured identity and retries', async () => {
    const t = await setup();
    fs.rmSync(t.tokenPath);
    await t.cache.start();
    await t.clock.advance(0);
    await waitFor(() => t.cache.failures() === 1, 'first failure');
    expect(t.fake.calls).toHaveLength(0);
    expect(t.secrets.certificate()).toBeUndefined();
    fs.writeFileSync(t.tokenPath, fakeToken('shop', 'cart'));
    await runNextAttempt(t);
    expect(t.secrets.certificate()).toBeDefined();
  });

  it('once the certificate has expired with the CA down, retries every few seconds and recovers within them when the CA is back', async () => {
    const { t, served, setDown } = await servedThenCaDown();
    for (let i = 0; t.clock.now() < served.notAfter; i++) {
      expect(i, 'attempts before the expiry').toBeLessThan(100);
      await runNextAttempt(t);
    }
    expect(t.cache.failures()).toBeGreaterThan(8); // the plain backoff would be at its 60 s cap by now
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = t.clock.now();
      await runNextAttempt(t);
      delays.push(t.clock.now() - before);
    }
    expect(delays).toEqual([5000, 5000, 5000]);
    expect(t.secrets.ready()).toBe(false);
    setDown(false);
    const back = t.clock.now();
    await runNextAttempt(t);
    expect(t.clock.now() - back).toBeLessThanOrEqual(5000);
    expect(t.secrets.certificate()!.serialHex).not.toBe(served.serialHex);
    expect(t.secrets.ready()).toBe(true);
  });

  /** Fails until there are `n` failures and the next attempt is due later than the poll interval. */
  async function failUntil(t: Awaited<ReturnType<typeof setup>>, n: number) {
    await t.clock.advance(0);
    await waitFor(() => t.cache.failures() === 1, 'first failure');
    while (t.cache.failures() < n) {
      const f = t.cache.failures();
      const due = await waitFor(() => t.cache.nextAttemptAt(), 'a scheduled retry');
      await t.clock.advance(due - t.clock.now());
      await waitFor(() => t.cache.failures() > f && t.cache.nextAttemptAt() !== undefined, 'the next failure');
    }
    expect(t.cache.nextAttemptAt()! - t.clock.now()).toBeGreaterThan(1000);
  }

  /** A certificate arrives at once, well before the end of the backoff. */
  async function expectImmediateRetry(t: Awaited<ReturnType<typeof setup>>) {
    const backoffDue = t.cache.nextAttemptAt()!;
    // Fake time moves in small steps (the watcher's poll and debounce run on it; its file reads and the
    // attempt's crypto are real), never as far as the backoff's own retry.
    await waitFor(async () => {
      if (t.secrets.certificate()) return true;
      if (t.clock.now() + 100 < backoffDue) await t.clock.advance(100);
      return false;
    }, 'a certificate before the backoff ends');
    expect(t.clock.now()).toBeLessThan(backoffDue);
    expect(t.cache.failures()).toBe(0);
  }

  it('retries at once when the root file changes after a failure', async () => {
    const other = await makeTestCa(Date.UTC(2026, 5, 1), 'next-root');
    let rootFileTrusted = false;
    // Stands for "the CA serves under a root the pod does not have yet": refused until the root file has it.
    const t = await setup({ failWith: () => (rootFileTrusted ? undefined : unavailable()) });
    await t.cache.start();
    await failUntil(t, 4);
    fs.writeFileSync(t.rootCertPath, fs.readFileSync(t.rootCertPath, 'utf8') + other.rootPem);
    rootFileTrusted = true;
    await expectImmediateRetry(t);
  });

  it('retries at once when kubelet writes a new token after a failure', async () => {
    const t = await setup();
    fs.rmSync(t.tokenPath);
    await t.cache.start();
    await failUntil(t, 4);
    expect(t.fake.calls).toHaveLength(0);
    fs.writeFileSync(t.tokenPath, fakeToken('shop', 'cart'));
    await expectImmediateRetry(t);
    expect(t.fake.calls).toHaveLength(1);
  });
});
