/**
 * `npm run fuzz -- [--seconds 300] [--target csr-der] [--seed 7]`: the long, on-demand fuzzing run; the default
 * suite runs a bounded one through the same script (test/fuzz/fuzz.test.ts). Each target runs in its own process,
 * so that only its own modules are loaded (coverage is read after every input; its cost grows with every script).
 * Per target it prints executions, coverage features, corpus size, accepted/refused, findings (inputs written to
 * .citadel/fuzz/<target>-<n>.bin) and, for CSRs, the differential check against `openssl req -verify`; the last
 * line of each target's output is its JSON summary. Exits 1 on any finding.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT } from '../support/build.js';

const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const seconds = Number(arg('--seconds') ?? 300);
const only = arg('--target');
const seed = Number(arg('--seed') ?? Date.now() % 100_000);

/** What one target's run reports (its last output line). */
export interface TargetSummary {
  target: string;
  seconds: number;
  seed: number;
  executions: number;
  features: number;
  seedFeatures: number;
  corpus: number;
  accepted: number;
  refusedByCode: Record<string, number>;
  slowestMs: number;
  findings: string[];
  differential?: { compared: number; agree: number; onlyCitadelAccepts: number; onlyOpensslAccepts: Record<string, number> };
}

async function runOne(name: string): Promise<TargetSummary> {
  const [{ fuzz }, { loadTarget }, { differentialCsr }] = await Promise.all([import('./engine.js'), import('./targets.js'), import('./differential.js')]);
  const target = await loadTarget(name);
  const seedOnly = fuzz(target, { seconds: 0, seed });
  const r = fuzz(target, { seconds, seed });
  const outDir = path.join(REPO_ROOT, '.citadel', 'fuzz');
  const findings = r.findings.map((f, i) => {
    fs.mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, `${name}-${i}.bin`);
    fs.writeFileSync(file, f.input);
    return `${f.problem} (input: ${file})`;
  });
  const summary: TargetSummary = {
    target: name, seconds, seed, executions: r.executions, features: r.features, seedFeatures: seedOnly.features, corpus: r.corpus.length,
    accepted: r.accepted, refusedByCode: r.refusedByCode, slowestMs: Math.round(r.slowestMs * 10) / 10, findings,
  };
  if (name === 'csr-der') {
    const d = differentialCsr(r.corpus);
    summary.differential = { compared: d.compared, agree: d.agree, onlyCitadelAccepts: d.onlyCitadelAccepts.length, onlyOpensslAccepts: d.onlyOpensslAccepts };
    d.onlyCitadelAccepts.forEach((input, i) => {
      fs.mkdirSync(outDir, { recursive: true });
      const file = path.join(outDir, `csr-der-differential-${i}.der`);
      fs.writeFileSync(file, input);
      findings.push(`citadel accepts a CSR that openssl req -verify refuses (input: ${file})`);
    });
  }
  return summary;
}

if (only) {
  const s = await runOne(only);
  console.log(
    `${s.target.padEnd(12)} ${s.executions} execs (${Math.round(s.executions / Math.max(seconds, 1))}/s), features ${s.seedFeatures} from seeds -> ${s.features}, corpus ${s.corpus}, ` +
      `accepted ${s.accepted}, refused ${JSON.stringify(s.refusedByCode)}, slowest ${s.slowestMs} ms, seed ${seed}` +
      (s.differential ? `\n  vs openssl req -verify: ${JSON.stringify(s.differential)}` : '') +
      s.findings.map((f) => `\n  FINDING ${f}`).join(''),
  );
  console.log(JSON.stringify(s));
  process.exit(s.findings.length ? 1 : 0);
} else {
  const { TARGET_NAMES } = await import('./targets.js');
  let failed = false;
  for (const name of TARGET_NAMES) {
    const res = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--target', name, '--seconds', String(seconds), '--seed', String(seed)], { stdio: 'inherit' });
    if (res.status !== 0) failed = true;
  }
  process.exit(failed ? 1 : 0);
}
