import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial } from '../../../src/ca/material.js';
import type { SignCsrJob } from '../../../src/ca/signing-policy.js';
import { createSigningPool, inlineCsrSigner, type SigningPool } from '../../../src/ca/signing-pool.js';
import { CitadelError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { createCsr, generateKeyPair, parseCertificate, type KeyType, type Signer } from '../../../src/pki/index.js';
import { ensureBuilt, REPO_ROOT } from '../../support/build.js';
import { FakeClock } from '../../support/fake-clock.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD, type TestCa } from './fixtures.js';

// Workers run compiled JavaScript: the pool under test (from src/, through vitest) starts dist/'s worker.
const WORKER = path.join(REPO_ROOT, 'dist', 'src', 'ca', 'signing-worker.js');
const CRASHING_WORKER = path.join(REPO_ROOT, 'dist', 'test', 'unit', 'ca', 'crashing-signing-worker.js');

const NOW = Date.UTC(2026, 5, 1);
const ID = `spiffe://${TD}/ns/app/sa/web`;
let rootA: TestCa;
let interA: TestCa;
let rootB: TestCa;
let interB: TestCa;
let csr: string;
const pools: SigningPool[] = [];

beforeAll(async () => {
  await ensureBuilt({ sources: ['src', 'test/unit/ca'], outputs: [WORKER, CRASHING_WORKER] });
  rootA = await makeRoot('Root A', NOW - DAY, 3650 * DAY);
  interA = await makeIntermediate(rootA, 'A1', NOW - DAY, 365 * DAY);
  rootB = await makeRoot('Root B', NOW - DAY, 3650 * DAY);
  interB = await makeIntermediate(rootB, 'B1', NOW - DAY, 365 * DAY);
  csr = await csrFor(ID);
}, 300_000);

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

function pool(size: number, opts: { crashing?: boolean; maxPending?: number; signInlineWhen?: () => boolean } = {}): SigningPool {
  const p = createSigningPool({ size, log: silentLogger, workerUrl: pathToFileURL(opts.crashing ? CRASHING_WORKER : WORKER), maxPending: opts.maxPending, signInlineWhen: opts.signInlineWhen });
  pools.push(p);
  return p;
}

async function csrFor(id: string, type: KeyType = 'ecdsa-p256'): Promise<string> {
  const { privateKey } = await generateKeyPair(type);
  return createCsr({ key: privateKey, spiffeId: id });
}

/** The CSR with the last byte of its signature changed. */
function badSignature(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s/g, ''), 'base64');
  der[der.length - 1] = der.at(-1)! ^ 0x01;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

const signerOf = (ca: TestCa): Signer => ({ cert: ca.cert, key: ca.key });
const job = (csrPem: string, over: Partial<SignCsrJob> = {}): SignCsrJob => ({ csrPem, identity: ID, ttlMs: DAY, now: NOW, ...over });

/** The error a promise rejects with, as plain data (or 'OK'). */
async function outcome(p: Promise<unknown>): Promise<{ code: string; message: string; grpc?: number; cls?: boolean } | 'OK'> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    const e = err as CitadelError;
    return { code: e.code, message: e.message, grpc: e.grpcStatus, cls: e instanceof CitadelError };
  }
}

describe('signing pool', () => {
  it('signs CSRs on its workers: leaves for the caller, under the signer, that openssl verifies', async () => {
    const p = pool(2);
    const rsaCsr = await csrFor(ID, 'rsa-2048');
    const results = await Promise.all([...Array.from({ length: 8 }, () => p.sign(signerOf(interA), job(csr))), p.sign(signerOf(interA), job(rsaCsr, { ttlMs: 3600_000 }))]);
    expect(new Set(results.map((r) => r.serialHex)).size).toBe(9);
    for (const r of results.slice(0, 8)) {
      const leaf = parseCertificate(r.pem);
      expect(leaf.uris).toEqual([ID]);
      expect(leaf.issuer).toBe(interA.cert.subject);
      expect(r.keyType).toBe('ecdsa-p256');
      expect(r.notAfter).toBe(NOW + DAY);
      expect(r.notBefore).toBe(NOW - 2 * 60_000);
    }
    expect(results[8]!.keyType).toBe('rsa-2048');
    expect(results[8]!.notAfter).toBe(NOW + 3600_000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-'));
    try {
      fs.writeFileSync(path.join(dir, 'root.pem'), rootA.pem);
      fs.writeFileSync(path.join(dir, 'inter.pem'), interA.pem);
      fs.writeFileSync(path.join(dir, 'leaf.pem'), results[8]!.pem);
      const out = execFileSync('openssl', ['verify', '-attime', String(NOW / 1000 + 60), '-CAfile', path.join(dir, 'root.pem'), '-untrusted', path.join(dir, 'inter.pem'), path.join(dir, 'leaf.pem')], { encoding: 'utf8' });
      expect(out).toContain('leaf.pem: OK');
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
    expect(p.pending()).toBe(0);
  });

  it('refuses with the same CitadelError (code, message, gRPC status) as signing inline', async () => {
    const p = pool(1);
    const expired = await makeIntermediate(rootA, 'old', NOW - 10 * DAY, 5 * DAY);
    const cases: Array<[Signer, SignCsrJob, string]> = [
      [signerOf(interA), job('garbage'), 'PEM_INVALID'],
      [signerOf(interA), job(await csrFor(`spiffe://${TD}/ns/app/sa/db`)), 'PERMISSION_DENIED'],
      [signerOf(interA), job(badSignature(csr)), 'SIGNATURE_INVALID'],
      [signerOf(interA), job(csr, { ttlMs: -1 }), 'TTL_INVALID'],
      [signerOf(expired), job(csr), 'CA_NOT_READY'],
      [{ cert: interA.cert, key: interB.key }, job(csr), 'CERT_GEN_ERROR'],
    ];
    for (const [signer, j, code] of cases) {
      const inWorker = await outcome(p.sign(signer, j));
      const inline = await outcome(inlineCsrSigner.sign(signer, j));
      expect(inWorker).toEqual(inline);
      expect(inWorker).toMatchObject({ code, cls: true });
    }
    expect(await outcome(p.sign(signerOf(interA), job(csr)))).toBe('OK');
  });

  it('fails the calls of a worker that dies with CERT_GEN_ERROR, and replaces it', async () => {
    const p = pool(1, { crashing: true });
    expect(await outcome(p.sign(signerOf(interA), job(csr)))).toBe('OK');
    // Both calls are on the one worker when it dies: the one that kills it and the one queued behind it.
    const [killed, queued] = await Promise.all([outcome(p.sign(signerOf(interA), job('CRASH'))), outcome(p.sign(signerOf(interA), job(csr)))]);
    for (const o of [killed, queued]) expect(o).toEqual({ code: 'CERT_GEN_ERROR', message: 'certificate generation failed', grpc: 13, cls: true });
    expect(p.pending()).toBe(0);
    // The replacement has no signer yet; the pool sends it again before the next job.
    const after = await Promise.all([p.sign(signerOf(interA), job(csr)), p.sign(signerOf(interB), job(csr))]);
    expect(after.map((r) => parseCertificate(r.pem).issuer)).toEqual([interA.cert.subject, interB.cert.subject]);
  });

  it('signs with a new signer from the next job on every worker, and a job dispatched before the switch with the old one', async () => {
    const p = pool(2);
    const issuers = async (signer: Signer, n: number) => (await Promise.all(Array.from({ length: n }, () => p.sign(signer, job(csr))))).map((r) => parseCertificate(r.pem).issuer);
    expect(new Set(await issuers(signerOf(interA), 6))).toEqual(new Set([interA.cert.subject]));
    const before = p.sign(signerOf(interA), job(csr));
    const next = issuers(signerOf(interB), 6);
    expect(parseCertificate((await before).pem).issuer).toBe(interA.cert.subject);
    expect(new Set(await next)).toEqual(new Set([interB.cert.subject]));
  });

  it('signs a call that is alone on the calling thread, and hands it to a worker when the caller is not alone or a worker is busy', async () => {
    let alone = true;
    const p = pool(1, { crashing: true, signInlineWhen: () => alone });
    // Inline, the text CRASH is simply not a PEM CSR; on the worker it ends the thread.
    expect(await outcome(p.sign(signerOf(interA), job('CRASH')))).toMatchObject({ code: 'PEM_INVALID' });
    expect(await outcome(p.sign(signerOf(interA), job(csr)))).toBe('OK');
    alone = false;
    const hanging = outcome(p.sign(signerOf(interA), job('HANG')));
    expect(p.pending()).toBe(1);
    alone = true;
    // A job is on the worker, so this one joins it there (and kills it, failing both).
    expect(await outcome(p.sign(signerOf(interA), job('CRASH')))).toMatchObject({ code: 'CERT_GEN_ERROR' });
    expect(await hanging).toMatchObject({ code: 'CERT_GEN_ERROR' });
    expect(p.pending()).toBe(0);
  });

  it('on close, stops waiting for a call that does not finish by the deadline and fails it', async () => {
    const p = pool(1, { crashing: true });
    const hanging = outcome(p.sign(signerOf(interA), job('HANG')));
    const started = Date.now();
    await p.close(200);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await hanging).toEqual({ code: 'CERT_GEN_ERROR', message: 'certificate generation failed', grpc: 13, cls: true });
    expect(p.pending()).toBe(0);
  });

  it('queues calls beyond its capacity instead of refusing them', async () => {
    const p = pool(1, { maxPending: 3 });
    const calls = Array.from({ length: 12 }, () => outcome(p.sign(signerOf(interA), job(csr))));
    expect(p.pending()).toBe(12);
    expect(await Promise.all(calls)).toEqual(Array(12).fill('OK'));
    expect(p.pending()).toBe(0);
    await p.close();
  });

  it('lets in-flight calls finish on close, then refuses, queued calls included', async () => {
    const p = pool(1, { maxPending: 3 });
    const calls = Array.from({ length: 4 }, () => outcome(p.sign(signerOf(interA), job(csr))));
    const closed = p.close();
    expect(await outcome(p.sign(signerOf(interA), job(csr)))).toMatchObject({ code: 'CA_NOT_READY' });
    expect(await Promise.all(calls)).toEqual(['OK', 'OK', 'OK', expect.objectContaining({ code: 'CA_NOT_READY' })]);
    await closed;
    expect(p.pending()).toBe(0);
    expect(() => createSigningPool({ size: 0, log: silentLogger })).toThrow(RangeError);
  });
});

describe('Keyring with a signing pool', () => {
  it('signs CSRs on the workers, with the chain and bookkeeping of the material current at the call, across a switch', async () => {
    const clock = new FakeClock(NOW);
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: 90 * DAY, csrSigner: pool(2) });
    await expect(keyring.issueFromCsr({ csrPem: csr, identity: ID, ttlMs: DAY })).rejects.toMatchObject({ code: 'CA_NOT_READY' });
    keyring.install(loadPluggedMaterial(istioFiles(interA, rootA), 'a', NOW));
    const a = await keyring.issueFromCsr({ csrPem: csr, identity: ID, ttlMs: DAY });
    expect(a.chain).toEqual([expect.any(String), interA.pem, rootA.pem]);
    expect(a.keyType).toBe('ecdsa-p256');
    const inFlight = keyring.issueFromCsr({ csrPem: csr, identity: ID, ttlMs: DAY });
    keyring.install(loadPluggedMaterial(istioFiles(interB, rootB), 'b', NOW));
    const b = await keyring.issueFromCsr({ csrPem: csr, identity: ID, ttlMs: DAY });
    expect(parseCertificate(b.chain[0]!).issuer).toBe(interB.cert.subject);
    expect(b.chain.slice(1)).toEqual([interB.pem, rootB.pem + rootA.pem]);
    const old = await inFlight;
    expect(parseCertificate(old.chain[0]!).issuer).toBe(interA.cert.subject);
    expect(old.chain[1]).toBe(interA.pem);
    await expect(keyring.issueFromCsr({ csrPem: await csrFor(`spiffe://${TD}/ns/x/sa/y`), identity: ID, ttlMs: DAY })).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    keyring.close();
  });
});

describe('signing worker protocol', () => {
  it('answers a batch of jobs with one batch of replies, in order, and a signer alone with nothing', async () => {
    const { MessageChannel } = await import('node:worker_threads');
    const { serveSignJobs } = await import('../../../src/ca/signing-messages.js');
    type Reply = import('../../../src/ca/signing-messages.js').PoolReply;
    const { port1: pool, port2: worker } = new MessageChannel();
    serveSignJobs(worker);
    const batches: Reply[][] = [];
    pool.on('message', (b: Reply[]) => batches.push(b));
    try {
      const signer = { kind: 'signer' as const, signerId: 1, certDer: interA.cert.der, key: interA.key };
      pool.postMessage([signer]);
      const jobs = Array.from({ length: 6 }, (_, i) => ({ kind: 'job' as const, id: i + 1, signerId: 1, job: job(i === 3 ? badSignature(csr) : csr) }));
      // Two batches posted in one turn reach the worker before it next waits: their replies come back together.
      pool.postMessage(jobs.slice(0, 4));
      pool.postMessage(jobs.slice(4));
      await expect.poll(() => batches.length).toBe(1);
      // Let anything that would come after it arrive.
      await new Promise((r) => setImmediate(r));
      expect(batches).toHaveLength(1);
      expect(batches[0]!.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(batches[0]!.map((r) => ('result' in r ? 'OK' : r.error.code))).toEqual(['OK', 'OK', 'OK', 'SIGNATURE_INVALID', 'OK', 'OK']);
    } finally {
      pool.close();
    }
  });
});
