/**
 * A small coverage-guided fuzzer (issue 14). Jazzer.js cannot run here: @jazzer.js/core 4.0.0's prebuilt addon
 * needs GLIBC 2.38 (this Debian 12 machine has 2.36) and 2.1.0 downloads its addon from GitHub, which is not
 * reachable. So the feedback comes from V8 itself: precise block coverage through node:inspector, read (and reset)
 * after every input, restricted to citadel's own sources. An input that reaches a block (or a hit-count bucket of
 * one) no earlier input reached joins the corpus and is mutated further, as in libFuzzer.
 *
 * A target gets bytes and either returns (accepted) or throws a CitadelError (refused). Anything else thrown, or
 * an input slower than `slowMs`, is a finding.
 */
import { Session } from 'node:inspector';
import { CitadelError } from '../../src/errors.js';

export interface FuzzTarget {
  readonly name: string;
  /** Real inputs to start from. */
  readonly seeds: readonly Buffer[];
  /** Returns normally when the input is accepted; throws CitadelError when it is refused. */
  run(input: Buffer): void;
}

export interface Finding {
  readonly input: Buffer;
  readonly problem: string;
}

export interface FuzzReport {
  readonly target: string;
  readonly executions: number;
  /** Coverage features (block ranges of src/ and their hit-count buckets) reached. */
  readonly features: number;
  readonly corpus: Buffer[];
  readonly accepted: number;
  readonly refusedByCode: Record<string, number>;
  readonly findings: Finding[];
  readonly slowestMs: number;
}

interface Range {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface ScriptCoverage {
  url: string;
  functions: Array<{ ranges: Range[] }>;
}

/** Deterministic PRNG (xorshift32), so that a run can be replayed from its seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

const bucket = (n: number) => (n === 1 ? 1 : n < 4 ? 2 : n < 8 ? 3 : n < 32 ? 4 : 5);
const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff, 0x30, 0x31, 0x02, 0x03, 0x04, 0x06, 0x0c, 0x1c, 0xa0];

/** One random mutation of `input` (byte-level, plus DER-minded ones: length bytes and whole TLVs). */
function mutate(input: Buffer, corpus: readonly Buffer[], rand: () => number, maxLen: number): Buffer {
  const at = (n: number) => Math.floor(rand() * n);
  let out = Buffer.from(input);
  const rounds = 1 + at(4);
  for (let r = 0; r < rounds; r++) {
    const len = out.length;
    switch (at(10)) {
      case 0:
        if (len) {
          const p = at(len);
          out[p] = out[p]! ^ (1 << at(8));
        }
        break;
      case 1:
        if (len) out[at(len)] = at(256);
        break;
      case 2:
        if (len) out[at(len)] = INTERESTING[at(INTERESTING.length)]!;
        break;
      case 3: {
        const p = at(len + 1);
        out = Buffer.concat([out.subarray(0, p), Buffer.from(Array.from({ length: 1 + at(8) }, () => at(256))), out.subarray(p)]);
        break;
      }
      case 4: {
        const p = at(len + 1);
        out = Buffer.concat([out.subarray(0, p), out.subarray(p + 1 + at(16))]);
        break;
      }
      case 5: {
        // Duplicate a slice (repeated TLVs, longer strings).
        const p = at(len + 1);
        const q = Math.min(len, p + 1 + at(64));
        out = Buffer.concat([out.subarray(0, q), out.subarray(p, q), out.subarray(q)]);
        break;
      }
      case 6: {
        // Splice with another corpus entry.
        const other = corpus[at(corpus.length)]!;
        const p = at(len + 1);
        const q = at(other.length + 1);
        out = Buffer.concat([out.subarray(0, p), other.subarray(q)]);
        break;
      }
      case 7:
        out = out.subarray(0, at(len + 1));
        break;
      default: {
        // A DER length byte: find a plausible header (tag followed by a length) and nudge or replace its length.
        const p = at(Math.max(1, len - 1)) + 1;
        if (p < len) out[p] = rand() < 0.5 ? (out[p]! + (rand() < 0.5 ? 1 : 255)) & 0xff : INTERESTING[at(INTERESTING.length)]!;
      }
    }
  }
  return out.length > maxLen ? out.subarray(0, maxLen) : out;
}

/**
 * Fuzzes `target` for `seconds` (wall clock), starting from its seeds. Coverage counts only scripts whose URL
 * contains one of `sources` (default citadel's src/).
 */
export function fuzz(target: FuzzTarget, opts: { seconds: number; seed?: number; maxLen?: number; slowMs?: number; sources?: readonly string[] }): FuzzReport {
  const rand = prng(opts.seed ?? 1);
  const maxLen = opts.maxLen ?? 16 * 1024;
  // A hang, not a slow input: the cost of hostile input is bounded and measured elsewhere (test/unit/ca/hostile-csr.test.ts).
  const slowMs = opts.slowMs ?? 1000;
  const sources = opts.sources ?? ['/src/'];
  const session = new Session();
  session.connect();
  const post = <T>(method: string, params?: object): T => {
    let result: T | undefined;
    let error: Error | null = null;
    // Same-thread inspector sessions answer synchronously.
    session.post(method, params ?? {}, (err, res) => {
      error = err;
      result = res as T;
    });
    if (error) throw error;
    return result!;
  };
  post('Profiler.enable');
  post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });

  const seen = new Set<string>();
  const corpus: Buffer[] = [];
  const refusedByCode: Record<string, number> = {};
  const findings: Finding[] = [];
  let accepted = 0;
  let executions = 0;
  let slowestMs = 0;

  const execute = (input: Buffer): boolean => {
    post('Profiler.takePreciseCoverage'); // reset counters
    const started = performance.now();
    try {
      target.run(input);
      accepted++;
    } catch (err) {
      if (err instanceof CitadelError) refusedByCode[err.code] = (refusedByCode[err.code] ?? 0) + 1;
      else if (findings.length < 20) findings.push({ input, problem: `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}` });
    }
    const ms = performance.now() - started;
    executions++;
    slowestMs = Math.max(slowestMs, ms);
    if (ms > slowMs && findings.length < 20) findings.push({ input, problem: `took ${ms.toFixed(1)} ms` });
    const { result } = post<{ result: ScriptCoverage[] }>('Profiler.takePreciseCoverage');
    let fresh = false;
    for (const script of result) {
      if (!sources.some((s) => script.url.includes(s)) || script.url.includes('node_modules')) continue;
      for (const fn of script.functions) {
        for (const r of fn.ranges) {
          if (r.count === 0) continue;
          const key = `${script.url}:${r.startOffset}:${r.endOffset}:${bucket(r.count)}`;
          if (!seen.has(key)) {
            seen.add(key);
            fresh = true;
          }
        }
      }
    }
    return fresh;
  };

  try {
    for (const s of target.seeds) if (execute(s) || corpus.length === 0) corpus.push(s);
    const end = Date.now() + opts.seconds * 1000;
    while (Date.now() < end) {
      const parent = corpus[Math.floor(rand() * corpus.length)]!;
      const child = mutate(parent, corpus, rand, maxLen);
      if (execute(child)) corpus.push(child);
    }
  } finally {
    post('Profiler.stopPreciseCoverage');
    session.disconnect();
  }
  return { target: target.name, executions, features: seen.size, corpus, accepted, refusedByCode, findings, slowestMs };
}
