/**
 * The raw crypto bound of issuance for one key type, measured with node:crypto on one core (the calling
 * thread, synchronously, counted per CPU second): one CSR-signature verify with a workload key plus one certificate signature with
 * the CA key, per certificate. No CA can issue faster than this on one core with OpenSSL's primitives, so
 * the benchmark reports each server's certificates/s as a ratio to it.
 *
 * Beside it, what a whole issuance costs on one core without any transport: citadel's own `signCsr` (PEM and DER
 * parsing, public key import, CSR verify, leaf building and signing; what a signing worker runs per call) and
 * the same pipeline in Go's crypto/x509, the library Istio's CA signs with (`loadgen -issue-bound`).
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { signCsr } from '../src/ca/signing-policy.js';
import { createCsr, issueCaCertificate, parseCertificate, type Signer } from '../src/pki/index.js';

export type BenchKeyType = 'ecdsa-p256' | 'rsa-2048';

export interface CryptoBound {
  readonly keyType: BenchKeyType;
  /** Certificate signatures per second with the CA key. */
  readonly signPerSec: number;
  /** CSR signature verifications per second with a workload key. */
  readonly verifyPerSec: number;
  /** One verify plus one sign, per second: the issuance bound. */
  readonly verifySignPerSec: number;
  /** citadel's signCsr (parse, import, verify, build, sign) per CPU second on one thread. */
  readonly signCsrPerSec: number;
  /** Go crypto/x509 CSR parse + verify + CreateCertificate per CPU second (GOMAXPROCS=1); undefined without the loadgen. */
  readonly goX509PerSec?: number;
}

function keyPair(type: BenchKeyType): { privateKey: KeyObject; publicKey: KeyObject } {
  return type === 'rsa-2048'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/**
 * Runs `fn` for about `ms` milliseconds after a short warm-up and returns calls per CPU second of this process
 * (process.cpuUsage), not per wall second: on a shared machine the thread is sometimes descheduled, and CPU
 * time leaves that out, which keeps the bound comparable with the CAs' CPU-seconds-per-certificate figures.
 */
function rate(fn: () => void, ms: number): number {
  const warmUntil = performance.now() + Math.min(200, ms / 4);
  while (performance.now() < warmUntil) fn();
  let n = 0;
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  while (performance.now() - start < ms) {
    for (let i = 0; i < 8; i++) fn();
    n += 8;
  }
  const cpu = process.cpuUsage(cpuStart);
  return (n * 1e6) / (cpu.user + cpu.system);
}

/**
 * Measures the bound for `type` (CA key and workload key of the same type), spending about 3 x `ms`.
 * The signed buffers have the sizes of a real leaf TBS (~600 bytes) and CSR info (~250 bytes).
 */
export function measureCryptoBound(type: BenchKeyType, ms = 1500, loadgen?: string): CryptoBound {
  const ca = keyPair(type);
  const workload = keyPair(type);
  const caCert = issueCaCertificate({ key: ca.privateKey, organization: 'bench', ttlMs: 86_400_000, now: Date.now() });
  const signer: Signer = { cert: parseCertificate(caCert.der), key: ca.privateKey };
  const identity = 'spiffe://cluster.local/ns/bench/sa/bound';
  // Fresh workload keys, as in real traffic (every renewal brings a new key), reused round-robin.
  const csrs = Array.from({ length: 32 }, () => createCsr({ key: keyPair(type).privateKey, spiffeId: identity }));
  let next = 0;
  const tbs = Buffer.alloc(620, 0x5a);
  const csrInfo = Buffer.alloc(260, 0xa5);
  const csrSig = sign('sha256', csrInfo, workload.privateKey);
  const doSign = () => sign('sha256', tbs, ca.privateKey);
  const doVerify = () => {
    if (!verify('sha256', csrInfo, workload.publicKey, csrSig)) throw new Error('raw verify failed');
  };
  return {
    keyType: type,
    signPerSec: rate(doSign, ms),
    verifyPerSec: rate(doVerify, ms),
    verifySignPerSec: rate(() => {
      doVerify();
      doSign();
    }, ms),
    signCsrPerSec: rate(() => signCsr(signer, { csrPem: csrs[next++ % csrs.length]!, identity, ttlMs: 86_400_000, now: Date.now() }), ms),
    ...(loadgen ? { goX509PerSec: goIssueBound(loadgen, type, ms) } : {}),
  };
}

function goIssueBound(loadgen: string, type: BenchKeyType, ms: number): number {
  const out = execFileSync(loadgen, ['-issue-bound', '-key-type', type, '-duration', `${ms * 3}ms`], { encoding: 'utf8', timeout: ms * 3 + 60_000 });
  return (JSON.parse(out.trim()) as { perCpuSec: number }).perCpuSec;
}
