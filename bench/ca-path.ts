/**
 * What `citadel ca` spends per certificate between gRPC and the signature: the CreateCertificate handler, the
 * token-review cache (every token reviewed once, then cached as deployed), the CSR policy, the keyring and its
 * revocation guard, the signing pool or inline signing, metrics and the audit line (to /dev/null). The same objects `citadel ca` wires, in this
 * process, with `concurrency` calls kept in flight and no transport: set beside `signCsr` alone and the transport
 * floor, it tells how much of a certificate's CPU is citadel's own per-call work and how much is the hop to a
 * signing worker.
 *
 * The TokenReviewer is the one stand-in: it answers as the apiserver would for the bench's ServiceAccount tokens
 * (the review's cost is not what this row measures; the issuance rows measure it against a real apiserver).
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createAuthenticator, createTokenAuthenticator } from '../src/ca/authn.js';
import { createCsrService } from '../src/ca/csr-service.js';
import { Keyring } from '../src/ca/keyring.js';
import { loadPluggedMaterial } from '../src/ca/material.js';
import { createCaMetrics } from '../src/ca/metrics.js';
import { Revocations } from '../src/ca/revocation.js';
import { createCallTracker, createCertificateHandler } from '../src/ca/server.js';
import { createSigningPool } from '../src/ca/signing-pool.js';
import { systemClock } from '../src/clock.js';
import type { TokenReviewer } from '../src/kube/tokenreview.js';
import { createLogger } from '../src/log.js';
import { createCsr, generateKeyPair, issueCaCertificate, privateKeyToPem } from '../src/pki/index.js';
import { createKeyedRateLimiter } from '../src/rate-limit.js';
import type { BenchKeyType } from './crypto-bound.js';

export interface CaPathRow {
  readonly keyType: BenchKeyType;
  readonly concurrency: number;
  /** Signing workers (0: every call signed on the calling thread). */
  readonly workers: number;
  /** CPU of this process (all threads) per certificate, microseconds. */
  readonly cpuUsPerCert: number;
  readonly certsPerSec: number;
}

const TRUST_DOMAIN = 'cluster.local';
const SERVICE_ACCOUNTS = 8;
const WARMUP_MS = 500;

/** Runs the path for about `ms` after a warm-up, once per entry of `workers`. */
export async function measureCaPath(keyType: BenchKeyType, opts: { ms: number; concurrency: number; workers: readonly number[] }): Promise<CaPathRow[]> {
  const now = Date.now();
  const root = await generateKeyPair(keyType);
  const rootPem = issueCaCertificate({ key: root.privateKey, organization: TRUST_DOMAIN, commonName: `bench ${keyType}`, ttlMs: 365 * 86_400_000, now }).pem;
  const material = loadPluggedMaterial({ 'ca-cert.pem': rootPem, 'ca-key.pem': privateKeyToPem(root.privateKey), 'cert-chain.pem': rootPem, 'root-cert.pem': rootPem }, 'bench', now);
  // Fresh workload keys as in real traffic, one token per pod, pods spread over the ServiceAccounts.
  const calls = await Promise.all(
    Array.from({ length: 32 }, async (_, i) => {
      const sa = `sa-${i % SERVICE_ACCOUNTS}`;
      const claims = { exp: Math.floor(now / 1000) + 3600, sub: `system:serviceaccount:bench:${sa}`, pod: i };
      return {
        csr: createCsr({ key: (await generateKeyPair(keyType)).privateKey, spiffeId: `spiffe://${TRUST_DOMAIN}/ns/bench/sa/${sa}` }),
        token: `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${'s'.repeat(342)}`,
      };
    }),
  );
  const reviewer: TokenReviewer = {
    review: (token) => {
      const { sub } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string };
      return Promise.resolve({ authenticated: true, username: sub, groups: ['system:serviceaccounts'], audiences: ['istio-ca'], extra: {} });
    },
  };

  const rows: CaPathRow[] = [];
  for (const workers of opts.workers) {
    const log = createLogger({ destination: pino.destination({ dest: '/dev/null', sync: true }) });
    const metrics = createCaMetrics(new Registry());
    const tracker = createCallTracker({ quietMs: 1_000, now: () => systemClock.now() });
    const pool = workers > 0 ? createSigningPool({ size: workers, log, signInlineWhen: tracker.alone }) : undefined;
    const keyring = new Keyring({ clock: systemClock, log, maxWorkloadTtlMs: 90 * 86_400_000, metrics, csrSigner: pool });
    keyring.install(material);
    const revocations = new Revocations({ keyring, clock: systemClock, log });
    keyring.setIssuanceGuard(revocations.guard);
    const token = createTokenAuthenticator({ reviewer, audiences: ['istio-ca'], trustDomain: () => TRUST_DOMAIN, clock: systemClock, cacheTtlMs: 10_000, metrics });
    const authenticator = createAuthenticator({ token, verificationMaterial: () => keyring.verificationMaterial(), trustDomain: () => TRUST_DOMAIN, clock: systemClock, log, metrics });
    const csrService = createCsrService({
      ca: keyring,
      policy: { defaultTtlMs: 86_400_000, maxTtlMs: 90 * 86_400_000, maxCsrBytes: 65_536 },
      log,
      rateLimiter: createKeyedRateLimiter({ qps: 1e9, burst: 1e9, clock: systemClock }),
      metrics,
    });
    const handler = createCertificateHandler({ authenticator, csrService, metrics, log, calls: tracker });

    const run = async (ms: number): Promise<{ n: number; cpuUs: number; wallMs: number }> => {
      let n = 0;
      let stop = false;
      const client = async (offset: number) => {
        while (!stop) {
          const c = calls[(n++ + offset) % calls.length]!;
          await handler({ csr: c.csr, validityDurationSeconds: 0, metadata: {} }, { bearerToken: c.token, peerAddress: '127.0.0.1:40000', peerCertificateDer: undefined, deadline: Date.now() + 10_000 });
          // Inline signing never leaves the microtask queue: let timers (and the stop) in now and then.
          if (n % 64 === 0) await new Promise((r) => setImmediate(r));
        }
      };
      const cpu = process.cpuUsage();
      const start = performance.now();
      const clients = Array.from({ length: opts.concurrency }, (_, i) => client(i));
      await new Promise((r) => setTimeout(r, ms));
      stop = true;
      await Promise.all(clients);
      const used = process.cpuUsage(cpu);
      return { n, cpuUs: used.user + used.system, wallMs: performance.now() - start };
    };
    try {
      await run(WARMUP_MS); // JIT, token cache, worker start
      const r = await run(opts.ms);
      rows.push({ keyType, concurrency: opts.concurrency, workers, cpuUsPerCert: r.cpuUs / r.n, certsPerSec: (r.n * 1000) / r.wallMs });
    } finally {
      await pool?.close();
      revocations.close();
      keyring.close();
    }
  }
  return rows;
}

