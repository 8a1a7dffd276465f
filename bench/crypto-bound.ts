/**
 * The raw crypto bound of issuance for one key type, measured with node:crypto on one core (the calling
 * thread, synchronously, counted per CPU second): one CSR-signature verify with a workload key plus one certificate signature with
 * the CA key, per certificate. No CA can issue faster than this on one core with OpenSSL's primitives, so
 * the benchmark reports each server's certificates/s as a ratio to it.
 */
import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

export type BenchKeyType = 'ecdsa-p256' | 'rsa-2048';

export interface CryptoBound {
  readonly keyType: BenchKeyType;
  /** Certificate signatures per second with the CA key. */
  readonly signPerSec: number;
  /** CSR signature verifications per second with a workload key. */
  readonly verifyPerSec: number;
  /** One verify plus one sign, per second: the issuance bound. */
  readonly verifySignPerSec: number;
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
export function measureCryptoBound(type: BenchKeyType, ms = 1500): CryptoBound {
  const ca = keyPair(type);
  const workload = keyPair(type);
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
  };
}
