/**
 * vitest globalSetup: one real control plane per test run, shared by every test file through
 * provide('citadelCluster') / inject('citadelCluster') (see index.ts). Stopped in the teardown; if the run is
 * interrupted or crashes instead, the reaper (reaper.ts) removes it.
 *
 * A run that selects only unit tests (`npx vitest run test/unit/...`) starts nothing.
 */
import type { TestProject } from 'vitest/node';
import { startControlPlane, type ClusterInfo } from './cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Undefined when the run selected only unit tests. */
    citadelCluster: ClusterInfo | undefined;
  }
}

/** True when every command-line filter names unit tests, so nothing in the run can need the control plane. */
function onlyUnitTests(project: TestProject): boolean {
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  return !!filters?.length && filters.every((f) => /(^|\/)test\/unit(\/|$)/.test(f));
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (onlyUnitTests(project)) {
    project.provide('citadelCluster', undefined);
    return undefined;
  }
  const controlPlane = await startControlPlane({ log: (line) => console.log(`[harness] ${line}`) });
  project.provide('citadelCluster', controlPlane.info);
  return async () => {
    await controlPlane.stop();
  };
}
