import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One real control plane (etcd + kube-apiserver) per run; tests isolate themselves by namespace.
    globalSetup: ['test/harness/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: real apiserver, Envoys and CAs run beside the tests, so keep the worker count low.
    maxWorkers: 2,
    reporters: ['default', ['json', { outputFile: '.citadel/test-results.json' }]],
  },
});
