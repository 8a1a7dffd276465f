/**
 * `npm run build`'s second step: bundles the compiled agent (dist/src/cli/agent-main.js) and everything it imports,
 * node_modules included, into one ES module, dist/bundle/agent.mjs, which the agent image runs. Loading one file
 * instead of ~150 is most of what the agent's start-up saves (docs/footprint.md). The proto descriptors stay files:
 * src/grpc/protos.ts finds proto/descriptors above the bundle as it does above dist/src.
 *
 *   node dist/scripts/bundle.js
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The bundles: output name -> compiled entry. */
export const BUNDLES: Record<string, string> = {
  'agent.mjs': 'dist/src/cli/agent-main.js',
};

export const BUNDLE_DIR = path.join(ROOT, 'dist', 'bundle');

// grpc-js, protobufjs and pino are CommonJS and call require() for Node's built-in modules; an ES module has no
// require, so the bundle makes one.
const BANNER = "import { createRequire as __citadelCreateRequire } from 'node:module';\nconst require = __citadelCreateRequire(import.meta.url);";

/**
 * Node's built-in modules through require(), not import: importing one builds its ES module facade, which reads
 * every export, and node:http's include lazy getters that load Node's internal undici (~40 ms of CPU at start).
 */
const builtinsThroughRequire: Plugin = {
  name: 'builtins-through-require',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => (args.kind === 'import-statement' ? { path: args.path, namespace: 'builtin-require' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'builtin-require' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

async function main(): Promise<void> {
  for (const [out, entry] of Object.entries(BUNDLES)) {
    const result = await build({
      entryPoints: [path.join(ROOT, entry)],
      outfile: path.join(BUNDLE_DIR, out),
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node24',
      banner: { js: BANNER },
      // Names stay readable in stack traces and logs (pino's and grpc-js's error output); whitespace and
      // comments go.
      minifyWhitespace: true,
      minifySyntax: true,
      legalComments: 'none',
      logLevel: 'warning',
      metafile: true,
      plugins: [builtinsThroughRequire],
    });
    // What went in, for the test that keeps the agent's modules lean (test/unit/cli/agent-modules.test.ts).
    writeFileSync(path.join(BUNDLE_DIR, out.replace(/\.mjs$/, '.inputs.json')), `${JSON.stringify(Object.keys(result.metafile.inputs), null, 1)}\n`);
    const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
    process.stderr.write(`[bundle] ${path.relative(ROOT, path.join(BUNDLE_DIR, out))}: ${Object.keys(result.metafile.inputs).length} modules, ${(bytes / 1024).toFixed(0)} KiB\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`[bundle] failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
