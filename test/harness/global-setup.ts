/**
 * vitest globalSetup: one real control plane per test run, shared by every test file through
 * provide('citadelCluster') / inject('citadelCluster') (see index.ts). Stopped in the teardown; if the run is
 * interrupted or crashes instead, the reaper (reaper.ts) removes it.
 *
 * It belongs to the `real` project of vitest.config.ts, so a run that selects only unit tests starts nothing.
 */
import type { TestProject } from 'vitest/node';
import { startControlPlane, type ClusterInfo } from './cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Provided to the `real` project only (see vitest.config.ts). */
    citadelCluster: ClusterInfo | undefined;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const controlPlane = await startControlPlane({ log: (line) => console.log(`[harness] ${line}`) });
  project.provide('citadelCluster', controlPlane.info);
  return async () => {
    await controlPlane.stop();
  };
}
