/**
 * The agent's current secrets, in one place: the workload certificate (`default`) and the trust bundle
 * (`ROOTCA`). Whatever produces them (CA rotation or mounted files) publishes here; the SDS layer reads from here
 * and is told about every change, so it can push to each stream that holds the name.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from './metrics.js';
import { ROOT_CA_RESOURCE, WORKLOAD_CERT_RESOURCE, type CertificateMaterial, type CrlMaterial, type TrustBundleMaterial } from './material.js';

export type WorkloadResourceName = typeof WORKLOAD_CERT_RESOURCE | typeof ROOT_CA_RESOURCE;

export interface WorkloadSecrets {
  /** The workload certificate and key, once one has been obtained. */
  certificate(): CertificateMaterial | undefined;
  /** The trust bundle, once one is known. */
  trustBundle(): TrustBundleMaterial | undefined;
  /** The CRLs served with the trust bundle (ROOTCA's `crl`), if any. */
  crl(): CrlMaterial | undefined;
  /** True once both `default` and `ROOTCA` are loaded and the certificate has not expired. */
  ready(): boolean;
  /** Calls `listener` after a resource changed content. Returns an unsubscribe function. */
  onChange(listener: (name: WorkloadResourceName) => void): () => void;
}

export interface WorkloadSecretsPublisher extends WorkloadSecrets {
  /** Replaces the certificate; a no-op (no event) when the content is identical. Material must be validated already. */
  publishCertificate(material: CertificateMaterial): void;
  /** Replaces the trust bundle; a no-op when the PEM is identical. */
  publishTrustBundle(material: TrustBundleMaterial): void;
  /** Replaces the CRLs (undefined: none); a no-op when the PEM is identical. Announced as a ROOTCA change. */
  publishCrl(material: CrlMaterial | undefined): void;
}

/** An in-memory store with change notification. */
export function createWorkloadSecrets(deps: { clock: Clock; log: Logger; metrics?: AgentMetrics }): WorkloadSecretsPublisher {
  let cert: CertificateMaterial | undefined;
  let bundle: TrustBundleMaterial | undefined;
  let crl: CrlMaterial | undefined;
  const listeners = new Set<(name: WorkloadResourceName) => void>();
  const emit = (name: WorkloadResourceName) => {
    for (const l of [...listeners]) {
      try {
        l(name);
      } catch (err) {
        deps.log.error({ err, resource: name }, 'secret change listener failed');
      }
    }
  };
  return {
    certificate: () => cert,
    trustBundle: () => bundle,
    crl: () => crl,
    ready: () => cert !== undefined && bundle !== undefined && cert.notAfter > deps.clock.now(),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    publishCertificate(material) {
      if (cert && cert.certificateChainPem === material.certificateChainPem && cert.privateKeyPem === material.privateKeyPem) return;
      cert = material;
      deps.metrics?.setCertExpiry(WORKLOAD_CERT_RESOURCE, material.notAfter);
      deps.log.info({ resource: WORKLOAD_CERT_RESOURCE, serial: material.serialHex, spiffeId: material.uris[0], notAfter: new Date(material.notAfter).toISOString() }, 'workload certificate published');
      emit(WORKLOAD_CERT_RESOURCE);
    },
    publishTrustBundle(material) {
      if (bundle && bundle.trustedCaPem === material.trustedCaPem) return;
      bundle = material;
      deps.metrics?.setCertExpiry(ROOT_CA_RESOURCE, material.notAfter);
      deps.log.info({ resource: ROOT_CA_RESOURCE, certificates: material.count }, 'trust bundle published');
      emit(ROOT_CA_RESOURCE);
    },
    publishCrl(material) {
      if (crl?.pem === material?.pem) return;
      crl = material;
      deps.log.info({ resource: ROOT_CA_RESOURCE, crls: material?.count ?? 0, entries: material?.entries ?? 0 }, material ? 'CRLs published' : 'CRLs removed');
      emit(ROOT_CA_RESOURCE);
    },
  };
}
