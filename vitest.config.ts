import { defineConfig } from 'vitest/config';

// Two projects: `unit` needs nothing but Node; `real` (integration, e2e, compat, workload-api) runs against one real control
// plane (etcd + kube-apiserver) that its globalSetup starts once per run, and vitest runs that setup only when the
// run selects a test file of the project. `npx vitest run --project unit` runs the unit tests alone. `fuzz` is the
// bounded fuzzing run (about a minute; `npm run fuzz` for a long one).
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: real apiserver, Envoys and CAs run beside the tests, so keep the worker count low.
    maxWorkers: 2,
    reporters: ['default', ['json', { outputFile: '.citadel/test-results.json' }]],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'fuzz', include: ['test/fuzz/**/*.test.ts'] } },
      {
        extends: true,
        test: { name: 'real', include: ['test/{integration,e2e,compat,workload-api}/**/*.test.ts'], globalSetup: ['test/harness/global-setup.ts'] },
      },
    ],
  },
});
