/**
 * Envoy's Extension Config Discovery Service (state of the world) for the RBAC filters, free of gRPC types: the
 * adapter in src/grpc/ecds-server.ts feeds requests in and writes responses out. It shares the agent's SDS socket
 * (one gRPC server, two services). Rules, as for SDS: every response carries type_url, a fresh nonce and a version
 * that changes with content; an ACK or NACK is never answered; a stale nonce is ignored; a config Envoy rejected is
 * never resent (Envoy would ACK the same bytes without applying them); names not available yet stay pending (Envoy
 * waits, see docs/authorization.md).
 */
import { randomUUID } from 'node:crypto';
import { CitadelError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ResponseSink, StreamHandle } from '../../streams.js';
import type { AuthzConfigSource } from './config-source.js';

export const TYPED_EXTENSION_CONFIG_TYPE_URL = 'type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig';

export interface EcdsRequest {
  version_info?: string;
  node?: { id?: string } | null;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: { code?: number; message?: string } | null;
}

export interface EcdsResponse {
  version_info: string;
  resources: Array<{ '@type': string; name: string; typed_config: Record<string, unknown> }>;
  type_url: string;
  nonce: string;
}

export interface EcdsService {
  /** The same stream contract as SDS (the gRPC adapter binds both alike). */
  openStream(sink: ResponseSink<EcdsResponse>, peer: string): StreamHandle<EcdsRequest>;
  readonly activeStreams: number;
  close(): void;
}

/** Creates the service over `source`; every stream is pushed to when the source changes. */
export function createEcdsService(deps: { source: AuthzConfigSource; log: Logger }): EcdsService {
  const streams = new Set<{ push(): void; shutdown(): void }>();
  let seq = 0;
  const unsubscribe = deps.source.subscribe(() => {
    for (const s of [...streams]) s.push();
  });

  function openStream(sink: ResponseSink<EcdsResponse>, peer: string): StreamHandle<EcdsRequest> {
    let log = deps.log.child({ stream: ++seq, api: 'ecds', peer });
    let names: string[] = [];
    const sent = new Map<string, string>();
    const rejected = new Map<string, string>();
    const warned = new Set<string>();
    let lastNonce: string | undefined;
    let lastVersions = new Map<string, string>();
    let ended = false;

    const push = () => {
      if (ended) return;
      const resources: EcdsResponse['resources'] = [];
      const versions = new Map<string, string>();
      let needed = false;
      for (const name of names) {
        const entry = deps.source.get(name);
        if (!entry) {
          if (!warned.has(name)) {
            warned.add(name);
            log.warn({ resource: name, reason: deps.source.pendingReason(name) }, 'authorization config not available (yet); Envoy waits');
          }
          continue;
        }
        if (rejected.get(name) === entry.version) continue;
        if (sent.get(name) !== entry.version) needed = true;
        versions.set(name, entry.version);
        resources.push({ '@type': TYPED_EXTENSION_CONFIG_TYPE_URL, name, typed_config: entry.typedConfig });
      }
      if (!needed) return;
      const nonce = randomUUID();
      const version = [...versions.values()].join(',');
      lastNonce = nonce;
      lastVersions = versions;
      for (const [n, v] of versions) sent.set(n, v);
      log.info({ resources: [...versions.keys()], version }, 'pushing authorization config');
      sink.send({ version_info: version, resources, type_url: TYPED_EXTENSION_CONFIG_TYPE_URL, nonce });
    };
    const end = () => {
      if (ended) return;
      ended = true;
      streams.delete(stream);
    };
    const stream = {
      push,
      shutdown() {
        end();
        sink.end();
      },
    };
    streams.add(stream);

    return {
      onRequest(req) {
        if (ended) return;
        // Handled in one step with any answer, as for SDS.
        log.debug({ resources: req.resource_names ?? [], nonce: req.response_nonce ?? '' }, 'ECDS request');
        const type = req.type_url ?? '';
        if (type !== '' && type !== TYPED_EXTENSION_CONFIG_TYPE_URL) {
          log.warn({ typeUrl: type }, 'ECDS request for a foreign type; closing the stream');
          end();
          sink.fail(new CitadelError('CONFIG_INVALID', `this server serves only ${TYPED_EXTENSION_CONFIG_TYPE_URL}`, `asked for ${type}`));
          return;
        }
        if (req.node?.id && names.length === 0) log = log.child({ node: req.node.id });
        const nonce = req.response_nonce ?? '';
        if (nonce !== '' && lastNonce !== undefined) {
          if (nonce !== lastNonce) return; // stale
          if (req.error_detail) {
            for (const [n, v] of lastVersions) rejected.set(n, v);
            log.error({ resources: [...lastVersions.keys()], error: (req.error_detail.message ?? '').slice(0, 2000), keptVersion: req.version_info },
              'Envoy rejected the authorization config (NACK); it keeps enforcing the last good one');
          }
        }
        const wanted = [...new Set(req.resource_names ?? [])];
        for (const n of [...sent.keys()]) if (!wanted.includes(n)) sent.delete(n);
        names = wanted;
        push();
      },
      onClose: end,
    };
  }

  return {
    openStream,
    get activeStreams() {
      return streams.size;
    },
    close() {
      unsubscribe();
      for (const s of [...streams]) s.shutdown();
    },
  };
}
