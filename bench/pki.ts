/**
 * Certificate issuance throughput on one core, beside the raw node:crypto bound measured in the same run.
 *
 *   npx tsc -p . && node dist/bench/pki.js [--seconds 0.25] [--rounds 6]
 *
 * For each CA key type (RSA-2048, P-256), with P-256 workload keys (the agent's default):
 *   raw sign/s           crypto.sign over a buffer the size of a leaf TBS (the floor of any issuer)
 *   raw verify+sign/s    one CSR-signature verify (key already decoded) plus one sign
 *   raw decode+verify+sign/s  the same, decoding the workload's SPKI with createPublicKey first, as any
 *                        CSR handler must (the honest floor of parse-and-issue)
 *   issue/s              issueWorkloadCertificate from an already parsed CSR    -> ratio to raw sign/s
 *   issue+response-chain/s  the same plus buildResponseChain (what the CSR service returns)
 *   parse+issue/s        parseCsr (incl. signature check) + issueWorkloadCertificate -> ratio to both raw figures
 * Issue 8 asks for issuance at >= 50% of the raw bound.
 *
 * Then the cost of refusing the worst CSRs a caller can send within the CA's 64 KiB request limit
 * (test/support/hostile-csrs.ts), each through signCsr, the CA's whole CPU path for a CSR: microseconds per
 * refused request, beside one real CSR parsed, checked and signed. Issue 14 asks for <= 2 ms each.
 */
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  buildResponseChain,
  createCsr,
  generateKeyPair,
  issueCaCertificate,
  issueWorkloadCertificate,
  parseCertificate,
  parseCsr,
  type KeyType,
  type Signer,
} from '../src/pki/index.js';
import { signCsr } from '../src/ca/signing-policy.js';
import { hostileCsrs, hostilePemTexts } from '../test/support/hostile-csrs.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg('--seconds', 0.25);
const ROUNDS = arg('--rounds', 6);

/** Operations per second of `fn` over about SECONDS. */
function once(fn: () => void): number {
  let n = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 8; i++) fn();
    n += 8;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

/**
 * Measures every function in interleaved rounds and keeps each one's best round: the machine is shared, so
 * a slow round says more about the neighbours than about the code, and interleaving exposes the raw bound
 * and our figure to the same conditions.
 */
function rates<K extends string>(fns: Record<K, () => void>): Record<K, number> {
  const best = {} as Record<K, number>;
  for (const [k, fn] of Object.entries(fns) as Array<[K, () => void]>) {
    for (let i = 0; i < 50; i++) fn(); // warm-up
    best[k] = 0;
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const [k, fn] of Object.entries(fns) as Array<[K, () => void]>) best[k] = Math.max(best[k], once(fn));
  }
  return best;
}

const hashFor = (t: KeyType) => (t === 'ecdsa-p384' ? 'sha384' : 'sha256');
const rawSign = (key: KeyObject, type: KeyType, data: Buffer) =>
  type.startsWith('ecdsa') ? sign(hashFor(type), data, { key, dsaEncoding: 'der' }) : sign('sha256', data, key);

/** One CA key type's figures, operations per second. */
export interface PkiBenchRow {
  ca: KeyType;
  rawSign: number;
  issue: number;
  issueChain: number;
  rawVerifySign: number;
  rawDecodeVerifySign: number;
  parseIssue: number;
}

/** Measures issuance and the raw node:crypto bounds for one CA key type (P-256 workload keys). */
export async function measurePkiIssuance(caType: KeyType): Promise<PkiBenchRow> {
  const now = Date.now();
  const ca = await generateKeyPair(caType);
  const caCert = parseCertificate(issueCaCertificate({ key: ca.privateKey, organization: 'bench', commonName: 'bench CA', ttlMs: 864e5 * 365, now }).pem);
  const signer: Signer = { cert: caCert, key: ca.privateKey };
  const workload = await generateKeyPair('ecdsa-p256');
  const spiffeId = 'spiffe://cluster.local/ns/bench/sa/bench-workload';
  const csrPem = createCsr({ key: workload.privateKey, spiffeId });
  const csr = parseCsr(csrPem);
  const sample = issueWorkloadCertificate({ signer, publicKey: csr.publicKey, spiffeId, ttlMs: 864e5, now });
  const tbs = parseCertificate(sample.pem).tbs;

  // A CSR-sized signed blob and the workload key's SPKI, for raw verifies of the same shape.
  const csrSigned = Buffer.alloc(200, 7);
  const csrSig = sign('sha256', csrSigned, { key: workload.privateKey, dsaEncoding: 'der' });
  const workloadSpki = workload.publicKey.export({ type: 'spki', format: 'der' });
  const rawVerify = (key: KeyObject) => {
    if (!verify('sha256', csrSigned, { key, dsaEncoding: 'der' }, csrSig)) throw new Error('verify failed');
  };

  const r = rates({
    rawSign: () => rawSign(ca.privateKey, caType, tbs),
    issue: () => issueWorkloadCertificate({ signer, publicKey: csr.publicKey, spiffeId, ttlMs: 864e5, now }),
    issueChain: () => buildResponseChain(issueWorkloadCertificate({ signer, publicKey: csr.publicKey, spiffeId, ttlMs: 864e5, now }).pem, [caCert.pem], caCert.pem),
    rawVerifySign: () => {
      rawVerify(workload.publicKey);
      rawSign(ca.privateKey, caType, tbs);
    },
    rawDecodeVerifySign: () => {
      rawVerify(createPublicKey({ key: workloadSpki, format: 'der', type: 'spki' }));
      rawSign(ca.privateKey, caType, tbs);
    },
    parseIssue: () => {
      const parsed = parseCsr(csrPem);
      issueWorkloadCertificate({ signer, publicKey: parsed.publicKey, spiffeId, ttlMs: 864e5, now });
    },
  });
  return { ca: caType, ...r };
}

/** Microseconds per refused request for each hostile CSR, and for one real CSR that is signed. */
export interface HostileBench {
  legitUs: number;
  rows: Array<{ name: string; us: number }>;
}

/**
 * CPU cost of every hostile CSR's refusal (P-256 CA, P-256 workload key): CPU time rather than wall time, so that
 * neighbours on a shared machine do not count; per input the best of ROUNDS interleaved batches of 20 calls.
 */
export async function measureHostileRefusals(): Promise<HostileBench> {
  const now = Date.now();
  const ca = await generateKeyPair('ecdsa-p256');
  const signer: Signer = { cert: parseCertificate(issueCaCertificate({ key: ca.privateKey, organization: 'bench', commonName: 'bench CA', ttlMs: 864e5 * 365, now }).pem), key: ca.privateKey };
  const workload = await generateKeyPair('ecdsa-p256');
  const identity = 'spiffe://cluster.local/ns/a/sa/b';
  const job = (csrPem: string) => ({ csrPem, identity, ttlMs: 864e5, now });
  const legit = job(createCsr({ key: workload.privateKey, spiffeId: identity }));
  const inputs = [...hostileCsrs(workload.privateKey), ...hostilePemTexts()];
  const fns = new Map<string, () => void>([['legit', () => signCsr(signer, legit)]]);
  for (const h of inputs) {
    const j = job(h.pem);
    fns.set(h.name, () => {
      try {
        signCsr(signer, j);
      } catch {
        return;
      }
      throw new Error(`${h.name} was accepted`);
    });
  }
  const cpuUs = () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  };
  const best = new Map<string, number>();
  for (let round = 0; round < ROUNDS + 1; round++) {
    for (const [name, fn] of fns) {
      const t = cpuUs();
      for (let i = 0; i < 20; i++) fn();
      // Round 0 is the warm-up.
      if (round > 0) best.set(name, Math.min(best.get(name) ?? Infinity, (cpuUs() - t) / 20));
    }
  }
  return { legitUs: best.get('legit')!, rows: inputs.map((h) => ({ name: h.name, us: best.get(h.name)! })).sort((a, b) => b.us - a.us) };
}

/** The hostile-CSR table. */
export function formatHostileBench(b: HostileBench): string {
  let out = `\nCPU to refuse hostile CSRs within 64 KiB (signCsr, best of ${ROUNDS}; issue 14 asks for <= 2000 us each; a real CSR parsed, checked and signed: ${b.legitUs.toFixed(0)} us):\n`;
  out += '  CPU us  input\n';
  for (const r of b.rows) out += `  ${r.us.toFixed(0).padStart(6)}  ${r.name}\n`;
  return out;
}

const fmt = (n: number) => n.toFixed(0).padStart(8);
const pct = (a: number, b: number) => `${((a / b) * 100).toFixed(0)}%`.padStart(5);

/** The report printed by `node dist/bench/pki.js`. */
export function formatPkiBench(rows: readonly PkiBenchRow[]): string {
  let out = `citadel PKI issuance on one core (node ${process.version}, best of ${ROUNDS} interleaved rounds of ${SECONDS}s; workload keys P-256)\n\n`;
  out += 'From a parsed CSR (issue 8 asks for >= 50% of the raw signature rate):\n';
  out += '  CA key      raw sign/s  issue/s  ratio  issue+response-chain/s  ratio\n';
  for (const r of rows) out += `  ${r.ca.padEnd(10)} ${fmt(r.rawSign)} ${fmt(r.issue)} ${pct(r.issue, r.rawSign)}  ${fmt(r.issueChain)}               ${pct(r.issueChain, r.rawSign)}\n`;
  out += '\nFrom CSR PEM (parseCsr with its signature check, then issue):\n';
  out += '  CA key      raw verify+sign/s  raw decode-key+verify+sign/s  parse+issue/s  ratio to each\n';
  for (const r of rows) {
    out += `  ${r.ca.padEnd(10)} ${fmt(r.rawVerifySign)}           ${fmt(r.rawDecodeVerifySign)}                      ${fmt(r.parseIssue)}   ${pct(r.parseIssue, r.rawVerifySign)} ${pct(r.parseIssue, r.rawDecodeVerifySign)}\n`;
  }
  return out;
}

// Run when executed directly, not when imported (e.g. by bench/run.ts).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows: PkiBenchRow[] = [];
  for (const t of ['rsa-2048', 'ecdsa-p256'] as const) rows.push(await measurePkiIssuance(t));
  process.stdout.write(formatPkiBench(rows));
  process.stdout.write(formatHostileBench(await measureHostileRefusals()));
}
