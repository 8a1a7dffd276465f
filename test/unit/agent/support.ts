/**
 * Test helpers for the agent: a real in-memory CA built on src/pki (our own seam, the CsrClient, faked; the
 * certificates are real), tokens shaped like Kubernetes bound tokens, and a wait for real async work.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import type { Clock } from '../../../src/clock.js';
import { CitadelError } from '../../../src/errors.js';
import {
  generateKeyPair,
  issueCaCertificate,
  issueWorkloadCertificate,
  parseCertificate,
  parseCsr,
  type Signer,
} from '../../../src/pki/index.js';
import type { CsrClient, CsrClientCredentials, CsrClientFactory } from '../../../src/agent/ca-issuer.js';
import { waitFor as pollUntil } from '../../support/wait.js';

export interface TestCa {
  signer: Signer;
  rootPem: string;
}

export async function makeTestCa(now: number, organization = 'test-ca'): Promise<TestCa> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const root = issueCaCertificate({ key: privateKey, organization, commonName: `${organization} root`, ttlMs: 10 * 365 * 86_400_000, now });
  return { signer: { cert: parseCertificate(root.pem), key: privateKey }, rootPem: root.pem };
}

/** A Kubernetes-bound-token-shaped JWT (unsigned: the agent only decodes it). */
export function fakeToken(namespace: string, serviceAccount: string): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'RS256', kid: 'k' })}.${b64({
    aud: ['istio-ca'],
    sub: `system:serviceaccount:${namespace}:${serviceAccount}`,
    'kubernetes.io': { namespace, serviceaccount: { name: serviceAccount, uid: 'u-1' }, pod: { name: 'p', uid: 'p-1' } },
  })}.c2lnbmF0dXJl`;
}

export interface CallRecord {
  csrSpiffeIds: string[];
  publicKeyDer: string;
  validityDurationSeconds: number;
  bearerToken?: string;
  creds: CsrClientCredentials;
}

/**
 * A CsrClientFactory whose clients sign with `ca` at `clock.now()`. `failWith()` returning an error makes the
 * call fail. Records every call and every connection.
 */
export function fakeCaClients(opts: { ca: () => TestCa; clock: Clock; failWith?: () => Error | undefined; maxTtlMs?: number; spiffeIdFor?: (asked: string) => string; responseRootPem?: () => string | undefined; leafPem?: (csrPem: string, ca: TestCa) => string }) {
  const calls: CallRecord[] = [];
  const connections: CsrClientCredentials[] = [];
  let closed = 0;
  const factory: CsrClientFactory = (creds) => {
    connections.push(creds);
    const client: CsrClient = {
      async createCertificate(req) {
        const csr = parseCsr(req.csr);
        calls.push({
          csrSpiffeIds: csr.uris,
          publicKeyDer: csr.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
          validityDurationSeconds: req.validityDurationSeconds,
          bearerToken: req.bearerToken,
          creds,
        });
        const failure = opts.failWith?.();
        if (failure) throw failure;
        const ca = opts.ca();
        const ttlMs = Math.min(req.validityDurationSeconds * 1000, opts.maxTtlMs ?? Infinity);
        const spiffeId = opts.spiffeIdFor?.(csr.uris[0]!) ?? csr.uris[0]!;
        const leafPem = opts.leafPem?.(req.csr, ca) ?? issueWorkloadCertificate({ signer: ca.signer, publicKey: csr.publicKey, spiffeId, ttlMs, now: opts.clock.now() }).pem;
        return [leafPem, opts.responseRootPem?.() ?? ca.rootPem];
      },
      close() {
        closed++;
      },
    };
    return client;
  };
  return { factory, calls, connections, closedCount: () => closed };
}

export const unavailable = () => new CitadelError('UPSTREAM_UNAVAILABLE', 'CreateCertificate: UNAVAILABLE: connection refused');

const tempDirs: string[] = [];
// Removed when the test file that made them is done (this module is loaded once per test file).
afterAll(() => {
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix = 'agent-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** Waits (real time) until `cond` returns a truthy value; for crypto and file I/O that a fake clock cannot drive. */
export function waitFor<T>(cond: () => T | undefined | false | null | Promise<T | undefined | false | null>, what = 'condition', timeoutMs = 5000): Promise<T> {
  return pollUntil(what, async () => (await cond()) ?? undefined, { timeoutMs, intervalMs: 5 });
}
