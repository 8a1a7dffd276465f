/**
 * The CRL file (Istio's ./var/run/secrets/istio/crl/ca-crl.pem, the `istio-ca-crl` ConfigMap mounted into the pod):
 * watched with src/file-watch.ts, checked, and published as ROOTCA's `crl`, so Envoy refuses revoked certificates
 * in new handshakes within moments of the file changing. An empty or missing file means no CRL (Envoy then checks
 * none). A file that does not parse is logged and counted and the previous CRLs stay: a half-written or garbled file
 * must neither drop revocations nor make Envoy refuse every handshake.
 */
import type { Clock } from '../clock.js';
import { toCitadelError } from '../errors.js';
import { watchFiles, type FileWatcher } from '../file-watch.js';
import type { Logger } from '../log.js';
import { ROOT_CA_RESOURCE, validateCrlMaterial } from './material.js';
import type { AgentMetrics } from './metrics.js';
import type { WorkloadSecretsPublisher } from './secret-store.js';

export interface CrlFileDeps {
  path: string;
  secrets: WorkloadSecretsPublisher;
  clock: Clock;
  log: Logger;
  metrics?: AgentMetrics;
  pollMs?: number;
}

/** Reads the file once (publishing what is valid) and follows it. Returns the watcher. */
export async function watchCrlFile(deps: CrlFileDeps): Promise<FileWatcher> {
  const watcher = watchFiles({
    paths: [deps.path],
    clock: deps.clock,
    log: deps.log,
    pollMs: deps.pollMs,
    onWatchFailure: () => deps.metrics?.fileWatcherFailures.inc(),
    onChange: (contents) => {
      const text = contents.get(deps.path);
      try {
        deps.secrets.publishCrl(text === undefined ? undefined : validateCrlMaterial(text));
      } catch (err) {
        deps.metrics?.fileSecretFailures.inc({ resource_name: ROOT_CA_RESOURCE });
        deps.log.error({ path: deps.path, err: toCitadelError(err, 'CERT_INVALID') }, 'CRL file refused; keeping the previous CRLs');
      }
    },
  });
  await watcher.checkNow();
  return watcher;
}
