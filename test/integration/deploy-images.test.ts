/**
 * Dockerfile.ca and Dockerfile.agent without a Docker engine: a real linter (hadolint, installed from PyPI by
 * scripts/lint-dockerfiles.sh), every COPY source present and not excluded by .dockerignore, and the build
 * stage's steps replayed on exactly the files the build context holds (tsc on src/ alone, the agent's bundle, then
 * the runtime layouts started with `--help`: the CA from /app/dist/src with production dependencies, the agent's
 * bundle from /app/dist/bundle with no node_modules at all).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../scripts/mtls-example.js';

interface Instruction { readonly op: string; readonly args: string }

/** Dockerfile -> instructions (continuations joined, comments and parser directives dropped). */
function parseDockerfile(text: string): Instruction[] {
  const joined = text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ');
  return joined.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const m = /^(\S+)\s+(.*)$/.exec(l)!;
    return { op: m[1]!.toUpperCase(), args: m[2]! };
  });
}

/** The .dockerignore forms this repo uses: `*` (everything) and `!path` / `!dir/` re-inclusions from the root. */
function includedByDockerignore(rel: string): boolean {
  const lines = fs.readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  let included = true;
  for (const line of lines) {
    if (line === '*') included = false;
    else if (/^![\w.-]+(\/[\w.-]+)*\/?$/.test(line)) {
      const name = line.slice(1).replace(/\/$/, '');
      if (rel === name || rel.startsWith(`${name}/`)) included = true;
    } else throw new Error(`.dockerignore line "${line}" is a form this test does not understand; extend includedByDockerignore`);
  }
  return included;
}

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd ?? REPO_ROOT, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      const why = err ? `\n[${err.message.split('\n')[0]}; signal ${(err as { signal?: string }).signal ?? 'none'}]` : '';
      resolve({ code, out: `${stdout}${stderr}${why}` });
    });
  });
}

const IMAGES = [
  {
    file: 'Dockerfile.ca', command: 'ca', workdir: '/app',
    build: /tsc -p tsconfig\.json[\s\S]*npm prune --omit=dev/,
    entrypoint: ['/nodejs/bin/node', '/app/dist/src/cli/main.js', 'ca'],
    fromBuild: ['/src/package.json', '/src/node_modules', '/src/dist/src'],
  },
  {
    // The agent runs its bundle (scripts/bundle.ts): one file, no node_modules.
    file: 'Dockerfile.agent', command: 'agent', workdir: '/',
    build: /tsc -p tsconfig\.json[\s\S]*node dist\/scripts\/bundle\.js/,
    entrypoint: ['/nodejs/bin/node', '/app/dist/bundle/agent.mjs'],
    fromBuild: ['/src/dist/bundle/agent.mjs'],
  },
] as const;

describe('Dockerfiles', () => {
  it('pass hadolint, and hadolint does flag a bad Dockerfile', { timeout: 180_000 }, async () => {
    const clean = await run('bash', ['scripts/lint-dockerfiles.sh'], { timeoutMs: 170_000 });
    expect(clean.code, clean.out).toBe(0);
    const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-lint-')), 'Dockerfile');
    fs.writeFileSync(bad, 'FROM node:latest\nENTRYPOINT node main.js\n');
    const flagged = await run('bash', ['scripts/lint-dockerfiles.sh', bad]);
    fs.rmSync(path.dirname(bad), { recursive: true, force: true });
    expect(flagged.code).not.toBe(0);
    expect(flagged.out).toMatch(/DL3007/); // :latest
    expect(flagged.out).toMatch(/DL3025/); // shell-form ENTRYPOINT
  });

  for (const image of IMAGES) {
    describe(image.file, () => {
      const steps = parseDockerfile(fs.readFileSync(path.join(REPO_ROOT, image.file), 'utf8'));
      const froms = steps.map((s, i) => ({ ...s, i })).filter((s) => s.op === 'FROM');
      const runtime = steps.slice(froms.at(-1)!.i);

      it('copies only paths that exist in the build context', () => {
        const sources = steps.filter((s) => s.op === 'COPY' && !s.args.startsWith('--from')).flatMap((s) => s.args.split(/\s+/).slice(0, -1));
        expect(sources.length).toBeGreaterThan(0);
        for (const src of sources) {
          expect(fs.existsSync(path.join(REPO_ROOT, src)), `${src} exists`).toBe(true);
          expect(includedByDockerignore(src), `${src} is not excluded by .dockerignore`).toBe(true);
        }
      });

      it('runs multi-stage: npm ci, tsc, then prune dev dependencies or bundle; distroless runtime as a numeric non-root user', () => {
        expect(froms).toHaveLength(2);
        const build = steps.filter((s) => s.op === 'RUN').map((s) => s.args).join('\n');
        expect(build).toMatch(/npm ci\b/);
        expect(build).toMatch(image.build);
        expect(froms[1]!.args).toMatch(/^gcr\.io\/distroless\/nodejs24-debian12:nonroot$/);
        expect(runtime.some((s) => s.op === 'RUN'), 'no RUN in the runtime stage (it has no shell)').toBe(false);
        const user = runtime.filter((s) => s.op === 'USER').at(-1)?.args;
        expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
        expect(runtime.filter((s) => s.op === 'WORKDIR').at(-1)?.args).toBe(image.workdir);
      });

      it(`has an exec-form ENTRYPOINT running "citadel ${image.command}"`, () => {
        const entry = runtime.find((s) => s.op === 'ENTRYPOINT')!;
        expect(JSON.parse(entry.args)).toEqual(image.entrypoint);
        // Every file the runtime stage takes from the build stage is one the build stage makes.
        const fromBuild = runtime.filter((s) => s.op === 'COPY' && s.args.startsWith('--from=build')).map((s) => s.args.split(/\s+/)[1]);
        expect(fromBuild).toEqual(image.fromBuild);
      });
    });
  }
});

describe('the image layout, replayed without Docker', () => {
  let work: string;
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-image-'));
  });
  afterAll(() => {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('compiles src/ on its own and starts both commands from /app with only production dependencies imported', { timeout: 240_000 }, async () => {
    // Build stage: exactly what the context offers (package*.json, tsconfig.json, src/, proto/, scripts/bundle.ts).
    const build = path.join(work, 'src');
    fs.mkdirSync(build);
    for (const f of ['package.json', 'package-lock.json', 'tsconfig.json']) fs.copyFileSync(path.join(REPO_ROOT, f), path.join(build, f));
    fs.cpSync(path.join(REPO_ROOT, 'src'), path.join(build, 'src'), { recursive: true });
    fs.mkdirSync(path.join(build, 'scripts'));
    fs.copyFileSync(path.join(REPO_ROOT, 'scripts', 'bundle.ts'), path.join(build, 'scripts', 'bundle.ts'));
    fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(build, 'node_modules'));
    const tsc = await run(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: build, timeoutMs: 200_000 });
    expect(tsc.code, `tsc on the build context alone:\n${tsc.out}`).toBe(0);
    const bundled = await run(process.execPath, [path.join(build, 'dist', 'scripts', 'bundle.js')], { cwd: build });
    expect(bundled.code, `the agent's bundle:\n${bundled.out}`).toBe(0);

    // Runtime stage: /app/{package.json,node_modules,dist/src,proto}.
    const app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.copyFileSync(path.join(build, 'package.json'), path.join(app, 'package.json'));
    fs.cpSync(path.join(build, 'dist', 'src'), path.join(app, 'dist', 'src'), { recursive: true });
    fs.cpSync(path.join(REPO_ROOT, 'proto'), path.join(app, 'proto'), { recursive: true });
    fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(app, 'node_modules'));

    // After `npm prune --omit=dev` only `dependencies` remain: the compiled code may import nothing else.
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const bare = new Set<string>();
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.js')) {
          for (const m of fs.readFileSync(p, 'utf8').matchAll(/(?:from\s+|import\s*\(\s*|require\(\s*)['"]([^'"./][^'"]*)['"]/g)) bare.add(m[1]!);
        }
      }
    };
    walk(path.join(app, 'dist', 'src'));
    const packages = [...bare].filter((s) => !s.startsWith('node:')).map((s) => (s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!));
    for (const p of new Set(packages)) expect(Object.keys(pkg.dependencies), `${p} is imported at run time`).toContain(p);

    const ca = await run(process.execPath, [path.join(app, 'dist', 'src', 'cli', 'main.js'), 'ca', '--help'], { cwd: app });
    expect(ca.code, ca.out).toBe(0);
    expect(ca.out).toMatch(/citadel ca/);

    // The agent's image: the bundle and proto/descriptors, nothing else (no package.json, no node_modules).
    const agentApp = path.join(work, 'agent-app');
    fs.mkdirSync(path.join(agentApp, 'dist', 'bundle'), { recursive: true });
    fs.copyFileSync(path.join(build, 'dist', 'bundle', 'agent.mjs'), path.join(agentApp, 'dist', 'bundle', 'agent.mjs'));
    fs.cpSync(path.join(REPO_ROOT, 'proto', 'descriptors'), path.join(agentApp, 'proto', 'descriptors'), { recursive: true });
    const agent = await run(process.execPath, [path.join(agentApp, 'dist', 'bundle', 'agent.mjs'), '--help'], { cwd: '/' });
    expect(agent.code, agent.out).toBe(0);
    expect(agent.out).toMatch(/citadel agent/);
  });
});
