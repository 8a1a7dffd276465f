/**
 * The compiled `citadel` that integration and e2e tests spawn (as users run it): dist/ is rebuilt when any source
 * is newer than its output, one build at a time across test files (vitest runs two workers, and two tsc runs
 * writing dist/ at once can leave a half-written file for the other to spawn).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Two levels up from test/support/, one more when running compiled from dist/test/support/ (as benches do).
const twoUp = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REPO_ROOT = path.basename(twoUp) === 'dist' ? path.dirname(twoUp) : twoUp;
export const CITADEL_MAIN = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
/** The agent's bundle (scripts/bundle.ts), what the agent image runs: `node AGENT_BUNDLE <agent flags>`. */
export const AGENT_BUNDLE = path.join(REPO_ROOT, 'dist', 'bundle', 'agent.mjs');

/** True when a .ts file under `dir` (relative to the repo) has no output in dist/ or a newer one than it. */
function stale(dir: string): boolean {
  return fs.readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true }).some((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return stale(rel);
    if (!e.name.endsWith('.ts')) return false;
    const out = path.join(REPO_ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
    return !fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(path.join(REPO_ROOT, rel)).mtimeMs;
  });
}

/**
 * Compiles the repo when a source under `sources` (default src/) is newer than its output.
 * @throws Error when one of `outputs` (default dist/src/cli/main.js) is missing afterwards (type errors alone do
 *   not stop tsc emitting).
 */
export async function ensureBuilt(opts: { sources?: readonly string[]; outputs?: readonly string[] } = {}): Promise<void> {
  const sources = opts.sources ?? ['src'];
  const outputs = opts.outputs ?? [CITADEL_MAIN];
  const lock = path.join(REPO_ROOT, '.citadel', 'build.lock');
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  for (let i = 0; ; i++) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch {
      // A lock older than two minutes was left by a killed run.
      if (i > 600) fs.rmSync(lock, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    if (!sources.some(stale)) return;
    await new Promise<void>((resolve) => {
      execFile(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: REPO_ROOT, timeout: 240_000, maxBuffer: 16 << 20 }, () => resolve());
    });
    for (const f of outputs) if (!fs.existsSync(f)) throw new Error(`${f} missing after tsc`);
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/**
 * Runs a provisioning script of scripts/ (which prints KEY=VALUE lines on stdout) and returns the values of `keys`.
 * @throws Error with the script's log when it fails or does not name every key.
 */
export function runProvisionScript<K extends string>(script: string, keys: readonly K[]): Promise<Record<K, string>> {
  return new Promise((resolve, reject) => {
    execFile('bash', [path.join(REPO_ROOT, 'scripts', script)], { cwd: REPO_ROOT, timeout: 20 * 60_000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const values = Object.fromEntries(keys.map((k) => [k, new RegExp(`^${k}=(.+)$`, 'm').exec(stdout)?.[1]])) as Record<K, string | undefined>;
      const missing = keys.filter((k) => !values[k]);
      if (err || missing.length > 0) return reject(new Error(`scripts/${script} failed: ${err?.message ?? `no ${missing.join('/')}`}\n${stderr}`));
      resolve(values as Record<K, string>);
    });
  });
}

/** The newest mtime (ms) of the files under `dir`, or 0. */
function newest(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  return fs.readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
    const p = path.join(dir, e.name);
    return Math.max(m, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }, 0);
}

/** ensureBuilt, then the agent's bundle when it is missing or older than the compiled sources. */
export async function ensureBundled(): Promise<void> {
  const bundler = path.join(REPO_ROOT, 'dist', 'scripts', 'bundle.js');
  await ensureBuilt({ sources: ['src', 'scripts'], outputs: [CITADEL_MAIN, bundler] });
  if (fs.existsSync(AGENT_BUNDLE) && fs.statSync(AGENT_BUNDLE).mtimeMs >= newest(path.join(REPO_ROOT, 'dist', 'src'))) return;
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, [bundler], { cwd: REPO_ROOT, timeout: 120_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`bundling the agent failed: ${err.message}\n${stderr}`)) : resolve()));
  });
}
