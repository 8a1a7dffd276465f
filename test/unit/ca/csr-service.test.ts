import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Caller } from '../../../src/ca/authn.js';
import { checkRequestedIdentity, createCsrService, resolveTtl, type CsrPolicy } from '../../../src/ca/csr-service.js';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial } from '../../../src/ca/material.js';
import { createCaMetrics } from '../../../src/ca/metrics.js';
import { createKeyedRateLimiter } from '../../../src/rate-limit.js';
import { CitadelError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { createCsr, generateKeyPair, parseCertificate } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD } from './fixtures.js';

const NOW = Date.UTC(2026, 5, 1);
const POLICY: CsrPolicy = { defaultTtlMs: DAY, maxTtlMs: 90 * DAY, maxCsrBytes: 16 * 1024 };
const caller: Caller = { identity: `spiffe://${TD}/ns/app/sa/web`, method: 'token', namespace: 'app', serviceAccount: 'web', podName: 'web-1' };
let keyring: Keyring;
let clock: FakeClock;

beforeAll(async () => {
  clock = new FakeClock(NOW);
  const root = await makeRoot('R', NOW - DAY, 3650 * DAY);
  const inter = await makeIntermediate(root, 'I', NOW - DAY, 365 * DAY);
  keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: 90 * DAY });
  keyring.install(loadPluggedMaterial(istioFiles(inter, root), 't', NOW));
});

async function codeOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return (err as CitadelError).code;
  }
  return 'OK';
}

async function csrFor(id: string) {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  return createCsr({ key: privateKey, spiffeId: id });
}

describe('CSR policy', () => {
  it('resolves TTLs as Istio: <= 0 is the default, above the max is an error', async () => {
    expect(resolveTtl(0, POLICY)).toBe(DAY);
    expect(resolveTtl(-5, POLICY)).toBe(DAY);
    expect(resolveTtl(3600, POLICY)).toBe(3600_000);
    expect(resolveTtl(90 * 86400, POLICY)).toBe(90 * DAY);
    expect(await codeOf(() => resolveTtl(90 * 86400 + 1, POLICY))).toBe('TTL_INVALID');
  });

  it('allows only the caller identity and names what else was asked for', () => {
    expect(() => checkRequestedIdentity(caller, { uris: [caller.identity], dnsNames: [], ipAddresses: [], emails: [] })).not.toThrow();
    expect(() => checkRequestedIdentity(caller, { uris: [], dnsNames: [], ipAddresses: [], emails: [] })).not.toThrow();
    expect(() => checkRequestedIdentity(caller, { uris: [`spiffe://${TD}/ns/app/sa/db`], dnsNames: [], ipAddresses: [], emails: [] })).toThrow(
      `the CSR asks for spiffe://${TD}/ns/app/sa/db, but the caller is ${caller.identity}`,
    );
    expect(() => checkRequestedIdentity(caller, { uris: [caller.identity], dnsNames: ['evil.example'], ipAddresses: ['10.0.0.1'], emails: [] })).toThrow(/DNS:evil\.example, IP:10\.0\.0\.1/);
  });

  it('signs a leaf for the caller only, with the default TTL, counting and auditing it', async () => {
    const metrics = createCaMetrics();
    const lines: Record<string, unknown>[] = [];
    const log = { info: (o: Record<string, unknown>) => lines.push(o), warn: () => undefined } as unknown as typeof silentLogger;
    const svc = createCsrService({ ca: keyring, policy: POLICY, log, metrics });
    const issued = await svc.handleCsr(caller, { csr: await csrFor(caller.identity), validityDurationSeconds: 0 }, { peerAddress: '10.1.2.3:5555' });
    expect(issued.chain).toHaveLength(3);
    const leaf = parseCertificate(issued.chain[0]!);
    expect(leaf.uris).toEqual([caller.identity]);
    expect(leaf.notAfter).toBe(NOW + DAY);
    expect(lines).toEqual([expect.objectContaining({ audit: 'certificate-issued', identity: caller.identity, serial: leaf.serialHex, keyType: 'ecdsa-p256', peer: '10.1.2.3:5555', pod: 'web-1' })]);
    expect(await metrics.registry.getSingleMetricAsString('citadel_server_success_cert_issuance_count')).toMatch(/ 1$/m);
  });

  it('refuses bad input with codes that map to the right gRPC statuses, counting each', async () => {
    const metrics = createCaMetrics();
    const svc = createCsrService({ ca: keyring, policy: POLICY, log: silentLogger, metrics });
    const call = (csr: string, ttl = 0) => codeOf(() => svc.handleCsr(caller, { csr, validityDurationSeconds: ttl }));
    const good = await csrFor(caller.identity);
    expect(await call('garbage')).toBe('PEM_INVALID');
    expect(await call('x'.repeat(20_000))).toBe('INPUT_TOO_LARGE');
    expect(await call(good, 91 * 86400)).toBe('TTL_INVALID');
    expect(await codeOf(() => svc.handleCsr(caller, { csr: '', validityDurationSeconds: 0 }))).toBe('PEM_INVALID');
    const other = await csrFor(`spiffe://${TD}/ns/app/sa/db`);
    expect(await call(other)).toBe('PERMISSION_DENIED');
    expect(await codeOf(() => svc.handleCsr(caller, { csr: good, validityDurationSeconds: 0, metadata: { ImpersonatedIdentity: `spiffe://${TD}/ns/app/sa/db` } }))).toBe('PERMISSION_DENIED');
    expect(await codeOf(() => svc.handleCsr(caller, { csr: good, validityDurationSeconds: 0, metadata: { ImpersonatedIdentity: '', CertSigner: '' } }))).toBe('OK');
    // RSA-1024, made by openssl because our own code refuses to make it.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csr-'));
    execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:1024', '-nodes', '-keyout', path.join(dir, 'k'), '-out', path.join(dir, 'c'), '-subj', '/', '-addext', `subjectAltName=URI:${caller.identity}`], { stdio: 'ignore' });
    expect(await call(fs.readFileSync(path.join(dir, 'c'), 'utf8'))).toBe('KEY_TOO_WEAK');
    fs.rmSync(dir, { recursive: true });
    expect(new CitadelError('PERMISSION_DENIED', 'x').grpcStatus).toBe(7);
    expect(new CitadelError('KEY_TOO_WEAK', 'x').grpcStatus).toBe(3);
    const text = await metrics.registry.getSingleMetricAsString('citadel_server_csr_sign_err_count');
    expect(text).toContain('error="CSR_ERROR"} 4');
    expect(text).toContain('error="TTL_ERROR"} 1');
    expect(text).toContain('error="IDENTITY_MISMATCH"} 2');
  });

  it('rate-limits per identity', async () => {
    const c = new FakeClock(NOW);
    const svc = createCsrService({ ca: keyring, policy: POLICY, log: silentLogger, rateLimiter: createKeyedRateLimiter({ qps: 1, burst: 2, clock: c }) });
    const csr = await csrFor(caller.identity);
    expect(await codeOf(() => svc.handleCsr(caller, { csr, validityDurationSeconds: 0 }))).toBe('OK');
    expect(await codeOf(() => svc.handleCsr(caller, { csr, validityDurationSeconds: 0 }))).toBe('OK');
    expect(await codeOf(() => svc.handleCsr(caller, { csr, validityDurationSeconds: 0 }))).toBe('RATE_LIMITED');
    // Over the limit, the CSR is not even parsed: garbage gets the same answer, not CSR_INVALID.
    expect(await codeOf(() => svc.handleCsr(caller, { csr: 'not a csr', validityDurationSeconds: 0 }))).toBe('RATE_LIMITED');
    await c.advance(1000);
    expect(await codeOf(() => svc.handleCsr(caller, { csr, validityDurationSeconds: 0 }))).toBe('OK');
    const other: Caller = { ...caller, identity: `spiffe://${TD}/ns/app/sa/db`, serviceAccount: 'db' };
    const otherCsr = await csrFor(other.identity);
    expect(await codeOf(() => svc.handleCsr(other, { csr: otherCsr, validityDurationSeconds: 0 }))).toBe('OK');
  });
});

describe('keyed rate limiter', () => {
  it('keeps at most maxKeys buckets, dropping full ones first', async () => {
    const c = new FakeClock(NOW);
    const l = createKeyedRateLimiter({ qps: 10, burst: 1, clock: c, maxKeys: 3 });
    expect(l.tryTake('a')).toBe(true);
    expect(l.tryTake('a')).toBe(false);
    l.tryTake('b');
    l.tryTake('c');
    await c.advance(1000);
    l.tryTake('d');
    expect(l.size()).toBeLessThanOrEqual(3);
    expect(() => createKeyedRateLimiter({ qps: 0, burst: 1, clock: c })).toThrow(RangeError);
  });
});
