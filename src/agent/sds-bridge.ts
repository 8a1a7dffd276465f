/**
 * Feeds the agent's `default` and `ROOTCA` into the SDS layer's secret store (src/agent/sds), now and on every
 * change, so every stream that holds the name gets the push.
 */
import type { Logger } from '../log.js';
import { ROOT_CA_RESOURCE, WORKLOAD_CERT_RESOURCE } from './material.js';
import type { WorkloadResourceName, WorkloadSecrets } from './workload-secrets.js';

/** The write half of the SDS store that the agent uses (src/agent/sds/secret-store.ts `SecretStore` fits). */
export interface SdsSecretSink {
  setTlsCertificate(name: string, chainPem: string, keyPem: string): boolean;
  setValidationContext(name: string, bundlePem: string, crlPem?: string): boolean;
}

/** Copies the current secrets into `sink` and keeps it in step. Returns a function that stops the copying. */
export function bridgeWorkloadSecrets(deps: { secrets: WorkloadSecrets; sink: SdsSecretSink; log: Logger }): () => void {
  const copy = (name: WorkloadResourceName) => {
    try {
      if (name === WORKLOAD_CERT_RESOURCE) {
        const cert = deps.secrets.certificate();
        if (cert) deps.sink.setTlsCertificate(WORKLOAD_CERT_RESOURCE, cert.certificateChainPem, cert.privateKeyPem);
      } else {
        const bundle = deps.secrets.trustBundle();
        if (bundle) deps.sink.setValidationContext(ROOT_CA_RESOURCE, bundle.trustedCaPem, deps.secrets.crl()?.pem);
      }
    } catch (err) {
      // Validated before publishing, so this means the two checks disagree; Envoy keeps the previous secret.
      deps.log.error({ err, resource: name }, 'SDS store refused the secret');
    }
  };
  const unsubscribe = deps.secrets.onChange(copy);
  copy(WORKLOAD_CERT_RESOURCE);
  copy(ROOT_CA_RESOURCE);
  return unsubscribe;
}
