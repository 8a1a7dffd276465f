/**
 * What the SDS layer needs from a store of secrets (src/agent/secret-store.ts is the agent's one store): entries
 * by resource name with a version that changes with content, change notification, and on-demand resolvers that
 * fill names (file-cert:, file-root:) while some stream holds them.
 */
import type { SecretAny } from './xds-types.js';

export interface SecretEntry {
  /** Opaque, changes with content: `<RFC3339 time of the change>/<counter>` (Istio's shape). */
  readonly version: string;
  readonly resource: SecretAny;
}

/** Called with a name whose entry was set, changed or deleted. */
export type SecretListener = (name: string) => void;

/** What the SDS service needs from a store. */
export interface SecretSource {
  get(name: string): SecretEntry | undefined;
  /** Returns an unsubscribe function. */
  subscribe(listener: SecretListener): () => void;
  /** A stream wants `name`: start a resolver for it if one matches and none runs. Counted; pair with release. */
  acquire(name: string): void;
  /** The matching release of acquire; the last release stops the resolver (its entry is dropped). */
  release(name: string): void;
}

/** A running on-demand source of one resource name (e.g. a watched file). */
export interface ResolvedSecret {
  stop(): void;
}

/**
 * Fills names the agent does not set itself. `resolve` returns undefined for names it does not handle; otherwise it
 * starts loading and calls `sink.setTlsCertificate` / `setValidationContext` / `set` whenever the content changes.
 */
export interface SecretResolver {
  resolve(name: string, sink: SecretSink): ResolvedSecret | undefined;
}

/** The write half of a store, for resolvers (PEM from files, validated here as Envoy would judge it). */
export interface SecretSink {
  /** Validates and stores a `tls_certificate`. @throws CitadelError as buildTlsCertificateSecret (old entry kept). */
  setTlsCertificate(name: string, chainPem: string, keyPem: string): boolean;
  /** Validates and stores a `validation_context` (with CRLs when given). @throws CitadelError as buildValidationContextSecret (old entry kept). */
  setValidationContext(name: string, bundlePem: string, crlPem?: string): boolean;
  /** Stores an already-built secret. Returns false when the content is unchanged. */
  set(name: string, resource: SecretAny): boolean;
  /** Forgets a name (Delta streams send it in removed_resources). */
  delete(name: string): void;
}
