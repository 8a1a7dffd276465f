/** Memory measurements for tests that bound what work costs or keeps (client and server in the test's process). */
import { Session } from 'node:inspector/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Heap in use after full garbage collections. Twice: the memory of ArrayBuffers that died is released after the
 * first one, so a single collection still counts dead Buffers.
 */
export function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** Bytes this process allocates while `work` runs, garbage included (V8's sampling heap profiler, 1 KB interval). */
export async function allocatedDuring(work: () => Promise<void>): Promise<number> {
  const session = new Session();
  session.connect();
  try {
    await session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    await work();
    const { profile } = await session.post('HeapProfiler.stopSampling');
    type Node = { selfSize: number; children: Node[] };
    const sum = (n: Node): number => n.selfSize + n.children.reduce((s, c) => s + sum(c), 0);
    return sum(profile.head as Node);
  } finally {
    session.disconnect();
  }
}
