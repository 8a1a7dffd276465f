/**
 * The SDS layer's view of the secrets: the agent fills `default` and `ROOTCA`; resolvers (file-cert:, file-root:)
 * fill names on demand while some stream holds them. Every content change gets a new version and is announced to
 * subscribers; setting identical content again is a no-op (so a re-read file does not cause a push).
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../../clock.js';
import type { Logger } from '../../log.js';
import { buildTlsCertificateSecret, buildValidationContextSecret } from './secret-builder.js';
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

/** The write half of a store. */
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

/** In-memory SecretSource + SecretSink with on-demand resolvers. */
export class SecretStore implements SecretSource, SecretSink {
  private readonly entries = new Map<string, SecretEntry & { fingerprint: string }>();
  private readonly listeners = new Set<SecretListener>();
  private readonly holders = new Map<string, { count: number; resolved?: ResolvedSecret }>();
  private counter = 0;

  constructor(private readonly deps: { clock: Clock; log: Logger; resolvers?: readonly SecretResolver[] }) {}

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

  set(name: string, resource: SecretAny): boolean {
    // The Any's name is what Envoy matches on; a mismatch would be silently ignored by Envoy, so fix it here.
    const named = resource.name === name ? resource : { ...resource, name };
    const fp = fingerprint(named);
    if (this.entries.get(name)?.fingerprint === fp) return false;
    const version = `${new Date(this.deps.clock.now()).toISOString()}/${++this.counter}`;
    this.entries.set(name, { version, resource: named, fingerprint: fp });
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
