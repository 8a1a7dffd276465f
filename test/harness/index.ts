/**
 * The test harness for test files (inside vitest). Import from here:
 *
 *   import { getCluster, startPod, startEnvoy } from '../harness/index.js';
 *   const cluster = getCluster();
 *   const ns = await cluster.createNamespace('ca-issue');
 *
 * Outside vitest (demo, dev tools) use cluster.ts startControlPlane() + test-cluster.ts connectCluster().
 */
import { inject } from 'vitest';
import { connectCluster, type TestCluster } from './test-cluster.js';

export type { ClusterInfo, ControlPlane } from './cluster.js';
export type { TestCluster, TokenOptions, CommandResult } from './test-cluster.js';
export { connectCluster } from './test-cluster.js';
export { freePort, freePorts } from './ports.js';
export { loadTools, type Tools } from './tools.js';

let cluster: TestCluster | undefined;

/**
 * The run's control plane (started once by global-setup.ts). Throws when the run selected only unit tests,
 * in which case no control plane was started.
 */
export function getCluster(): TestCluster {
  if (cluster) return cluster;
  const info = inject('citadelCluster');
  if (!info) {
    throw new Error('no control plane in this run: it is started only when the run includes tests outside test/unit/');
  }
  cluster = connectCluster(info);
  return cluster;
}
export {
  startPod, writeFileAtomic, type SimulatedPod, type StartPodOptions,
  ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY, TOKEN_RELATIVE_PATH, ROOT_CERT_RELATIVE_PATH, SDS_SOCKET_RELATIVE_PATH,
} from './kubelet.js';
export {
  startEnvoy, envoyBinaryVersion, type EnvoyProcess, type StartEnvoyOptions, type EnvoyCerts, type EnvoyCertDetail,
  type AdminResponse,
} from './envoy.js';
export {
  startNode, projectPodCertificate, createPodCertificateRequest, waitForAnswer, stubPkcs10Request, proofOfPossession,
  type SimulatedNode, type PodCertificateKeyType, type PodCertificateVolume, type ProjectionState, type RequestAnswer,
} from './pod-certificates.js';
