/**
 * The agent's one store of secrets. The workload certificate (`default`) and the trust bundle (`ROOTCA`) are
 * published here by whatever produces them (CA rotation or mounted files), already checked, and turned into the
 * Envoy Secret once, without parsing the certificates again. Resolvers fill further names (file-cert:, file-root:)
 * on demand while some stream holds them. Every content change gets a new version and one notification to one
 * listener set (the SDS service pushes to each stream that holds the name); identical content is a no-op, so a
 * re-read file or a repeated publish does not cause a push.
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { ROOT_CA_RESOURCE, WORKLOAD_CERT_RESOURCE, type CertificateMaterial, type CrlMaterial, type TrustBundleMaterial } from './material.js';
import type { AgentMetrics } from './metrics.js';
import { buildTlsCertificateSecret, buildValidationContextSecret, tlsCertificateSecret, validationContextSecret } from './sds/secret-builder.js';
import type { ResolvedSecret, SecretEntry, SecretListener, SecretResolver, SecretSink, SecretSource } from './sds/secret-source.js';
import type { SecretAny } from './sds/xds-types.js';

/** What readiness and the CA client (mTLS renewal) read: the agent's own `default` and `ROOTCA`. */
export interface WorkloadSecrets {
  /** The workload certificate and key, once one has been obtained. */
  certificate(): CertificateMaterial | undefined;
  /** The trust bundle, once one is known. */
  trustBundle(): TrustBundleMaterial | undefined;
  /** The CRLs served with the trust bundle (ROOTCA's `crl`), if any. */
  crl(): CrlMaterial | undefined;
  /** True once both `default` and `ROOTCA` are loaded and the certificate has not expired. */
  ready(): boolean;
}

/** What the producers (CA rotation, mounted files) write. */
export interface WorkloadSecretsPublisher extends WorkloadSecrets {
  /** Replaces `default`; a no-op (no event) when the content is identical. Material must be validated already. */
  publishCertificate(material: CertificateMaterial): void;
  /**
   * Replaces `ROOTCA`; a no-op when the PEM is identical.
   * @throws CitadelError CERT_EXPIRED when every certificate of the bundle has expired (the old bundle stays).
   */
  publishTrustBundle(material: TrustBundleMaterial): void;
  /** Replaces the CRLs (undefined: none) served in ROOTCA; a no-op when the PEM is identical. */
  publishCrl(material: CrlMaterial | undefined): void;
  /** Calls `listener` after any resource changed content. Returns an unsubscribe function. */
  subscribe(listener: SecretListener): () => void;
}

function fingerprint(resource: SecretAny): string {
  const h = createHash('sha256');
  h.update(resource.name);
  if (resource.tls_certificate) {
    h.update('\0tls\0').update(resource.tls_certificate.certificate_chain.inline_bytes).update('\0').update(resource.tls_certificate.private_key.inline_bytes);
  }
  if (resource.validation_context) {
    h.update('\0ca\0').update(resource.validation_context.trusted_ca.inline_bytes);
    if (resource.validation_context.crl) h.update('\0crl\0').update(resource.validation_context.crl.inline_bytes);
  }
  return h.digest('hex');
}

export interface SecretStoreDeps {
  clock: Clock;
  log: Logger;
  metrics?: AgentMetrics;
  resolvers?: readonly SecretResolver[];
}

/** In-memory store: the agent's publisher side, the SDS layer's SecretSource, and the resolvers' SecretSink. */
export class SecretStore implements WorkloadSecretsPublisher, SecretSource, SecretSink {
  private readonly entries = new Map<string, SecretEntry & { fingerprint: string }>();
  private readonly listeners = new Set<SecretListener>();
  private readonly holders = new Map<string, { count: number; resolved?: ResolvedSecret }>();
  private counter = 0;
  private cert: CertificateMaterial | undefined;
  private bundle: TrustBundleMaterial | undefined;
  private crlMaterial: CrlMaterial | undefined;

  constructor(private readonly deps: SecretStoreDeps) {}

  certificate(): CertificateMaterial | undefined {
    return this.cert;
  }

  trustBundle(): TrustBundleMaterial | undefined {
    return this.bundle;
  }

  crl(): CrlMaterial | undefined {
    return this.crlMaterial;
  }

  ready(): boolean {
    return this.cert !== undefined && this.bundle !== undefined && this.cert.notAfter > this.deps.clock.now();
  }

  publishCertificate(material: CertificateMaterial): void {
    if (!this.set(WORKLOAD_CERT_RESOURCE, tlsCertificateSecret(WORKLOAD_CERT_RESOURCE, material.certificateChainPem, material.privateKeyPem), () => (this.cert = material))) return;
    this.deps.metrics?.setCertExpiry(WORKLOAD_CERT_RESOURCE, material.notAfter);
    this.deps.log.info({ resource: WORKLOAD_CERT_RESOURCE, serial: material.serialHex, spiffeId: material.uris[0], notAfter: new Date(material.notAfter).toISOString() }, 'workload certificate published');
  }

  publishTrustBundle(material: TrustBundleMaterial): void {
    if (material.lastNotAfter <= this.deps.clock.now()) {
      throw new CitadelError('CERT_EXPIRED', `secret ${ROOT_CA_RESOURCE}: every certificate in the trust bundle has expired`);
    }
    if (!this.set(ROOT_CA_RESOURCE, validationContextSecret(ROOT_CA_RESOURCE, material.trustedCaPem, this.crlMaterial?.pem), () => (this.bundle = material))) return;
    this.deps.metrics?.setCertExpiry(ROOT_CA_RESOURCE, material.notAfter);
    this.deps.log.info({ resource: ROOT_CA_RESOURCE, certificates: material.count }, 'trust bundle published');
  }

  publishCrl(material: CrlMaterial | undefined): void {
    if (this.crlMaterial?.pem === material?.pem) return;
    this.crlMaterial = material;
    // ROOTCA carries the CRLs: rebuilt (and pushed) now when there is a bundle, else with the first bundle.
    if (this.bundle) this.set(ROOT_CA_RESOURCE, validationContextSecret(ROOT_CA_RESOURCE, this.bundle.trustedCaPem, material?.pem));
    this.deps.log.info({ resource: ROOT_CA_RESOURCE, crls: material?.count ?? 0, entries: material?.entries ?? 0 }, material ? 'CRLs published' : 'CRLs removed');
  }

  get(name: string): SecretEntry | undefined {
    const e = this.entries.get(name);
    return e ? { version: e.version, resource: e.resource } : undefined;
  }

  /** Names currently held. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  subscribe(listener: SecretListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  setTlsCertificate(name: string, chainPem: string, keyPem: string): boolean {
    return this.set(name, buildTlsCertificateSecret(name, chainPem, keyPem, this.deps.clock.now()));
  }

  setValidationContext(name: string, bundlePem: string, crlPem?: string): boolean {
    return this.set(name, buildValidationContextSecret(name, bundlePem, this.deps.clock.now(), crlPem));
  }

  /**
   * Stores `resource` under `name` unless the content is unchanged; `beforeNotify` runs after the entry is stored
   * and before listeners hear of it (the agent's material is in place when they read it).
   */
  set(name: string, resource: SecretAny, beforeNotify?: () => void): boolean {
    // The Any's name is what Envoy matches on; a mismatch would be silently ignored by Envoy, so fix it here.
    const named = resource.name === name ? resource : { ...resource, name };
    const fp = fingerprint(named);
    if (this.entries.get(name)?.fingerprint === fp) return false;
    const version = `${new Date(this.deps.clock.now()).toISOString()}/${++this.counter}`;
    this.entries.set(name, { version, resource: named, fingerprint: fp });
    beforeNotify?.();
    this.deps.log.debug({ resource: name, version }, 'secret updated');
    this.emit(name);
    return true;
  }

  delete(name: string): void {
    if (!this.entries.delete(name)) return;
    this.deps.log.debug({ resource: name }, 'secret removed');
    this.emit(name);
  }

  acquire(name: string): void {
    const holder = this.holders.get(name);
    if (holder) {
      holder.count++;
      return;
    }
    const entry: { count: number; resolved?: ResolvedSecret } = { count: 1 };
    this.holders.set(name, entry);
    for (const resolver of this.deps.resolvers ?? []) {
      try {
        const resolved = resolver.resolve(name, this);
        if (resolved) {
          entry.resolved = resolved;
          break;
        }
      } catch (err) {
        this.deps.log.error({ err, resource: name }, 'secret resolver failed');
      }
    }
  }

  release(name: string): void {
    const holder = this.holders.get(name);
    if (!holder) return;
    if (--holder.count > 0) return;
    this.holders.delete(name);
    if (holder.resolved) {
      holder.resolved.stop();
      // Resolved entries live only while held: a later acquire re-reads the source.
      this.entries.delete(name);
    }
  }

  /** Stops every resolver. */
  close(): void {
    for (const [name, holder] of this.holders) {
      holder.resolved?.stop();
      if (holder.resolved) this.entries.delete(name);
    }
    this.holders.clear();
  }

  private emit(name: string): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(name);
      } catch (err) {
        this.deps.log.error({ err, resource: name }, 'secret listener failed');
      }
    }
  }
}
