/**
 * The bounded fuzzing run of the default suite (issue 14): every target an untrusted caller reaches, about 10 s
 * each with a fixed seed, through the same script as `npm run fuzz` (one process per target). No input may throw
 * anything but a CitadelError or hang; the coverage must grow beyond the seeds; and every CSR citadel accepts must
 * verify in `openssl req -verify` too.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, REPO_ROOT } from '../support/build.js';
import { STRICTER_CODES } from './differential.js';
import type { TargetSummary } from './run.js';

const SECONDS = Number(process.env.CITADEL_FUZZ_SECONDS ?? 10);

beforeAll(async () => {
  await ensureBuilt({ sources: ['src', 'test/fuzz', 'test/support'], outputs: ['dist/test/fuzz/run.js'] });
}, 180_000);

function run(): Promise<{ summaries: TargetSummary[]; output: string; code: number }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(REPO_ROOT, 'dist', 'test', 'fuzz', 'run.js'), '--seconds', String(SECONDS), '--seed', '14'], { maxBuffer: 16 << 20 }, (err, stdout) => {
      const summaries = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as TargetSummary);
      resolve({ summaries, output: stdout, code: err ? ((err as { code?: number }).code ?? 1) : 0 });
    });
  });
}

describe('fuzzing what untrusted callers can send', () => {
  it('finds no input that escapes as anything but a CitadelError, and citadel accepts no CSR that OpenSSL refuses', async () => {
    const { summaries, output, code } = await run();
    console.log(output.split('\n').filter((l) => !l.startsWith('{')).join('\n'));
    expect(summaries.map((s) => s.target)).toEqual(['pem', 'csr-pem', 'csr-der', 'certificate', 'sds-request', 'token']);
    for (const s of summaries) {
      expect(s.findings, s.target).toEqual([]);
      expect(s.executions, s.target).toBeGreaterThan(100);
    }
    expect(code).toBe(0);
    // Coverage-guided: mutations reach code the seeds do not.
    for (const name of ['csr-der', 'certificate']) {
      const s = summaries.find((x) => x.target === name)!;
      expect(s.features, name).toBeGreaterThan(s.seedFeatures);
    }
    const d = summaries.find((s) => s.target === 'csr-der')!.differential!;
    expect(d.compared).toBeGreaterThan(5);
    expect(d.onlyCitadelAccepts).toBe(0);
    for (const code of Object.keys(d.onlyOpensslAccepts)) expect(STRICTER_CODES.has(code), code).toBe(true);
  }, 240_000);
});
