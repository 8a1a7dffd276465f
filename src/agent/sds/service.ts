/**
 * Envoy's Secret Discovery Service as a translation layer over a SecretSource, free of gRPC types: the gRPC adapter
 * (src/grpc/sds-server.ts, joined to it in src/cli/agent-socket.ts) feeds requests in and writes responses out.
 *
 * State of the world (StreamSecrets), per stream:
 * - every response has type_url set, a fresh nonce and a version that changes with content;
 * - an ACK or a NACK is never answered; a request carrying a nonce other than the last one sent is stale and ignored;
 * - a response goes out only on the first request, a change of names or a change of data;
 * - after a NACK the rejected version is never resent (Envoy keeps its last good one); the error is logged;
 * - names not (yet) known are logged once and left pending; they are pushed when they appear.
 * Incremental (DeltaSecrets): subscribe/unsubscribe, initial_resource_versions honoured on the first request,
 * explicit subscribes always answered, removed_resources for names that go away, each response ACKed by nonce.
 */
import { createHash, randomUUID } from 'node:crypto';
import { CitadelError } from '../../errors.js';
import type { Clock } from '../../clock.js';
import type { Logger } from '../../log.js';
import type { ResponseSink, StreamHandle } from '../../streams.js';
import { noopSdsMetrics, type SdsApi, type SdsMetrics } from './metrics.js';
import type { SecretEntry, SecretSource } from './secret-source.js';
import {
  SECRET_TYPE_URL,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type RpcStatus,
} from './xds-types.js';

export interface SdsService {
  openStream(sink: ResponseSink<DiscoveryResponse>, peer: string): StreamHandle<DiscoveryRequest>;
  openDeltaStream(sink: ResponseSink<DeltaDiscoveryResponse>, peer: string): StreamHandle<DeltaDiscoveryRequest>;
  /**
   * Unary fetch: the requested names that are available (waiting up to `fetchWaitMs` for file-backed ones to load).
   * @throws CitadelError CONFIG_INVALID for a foreign type_url.
   */
  fetch(req: DiscoveryRequest): Promise<DiscoveryResponse>;
  /** Number of open streams (both APIs). */
  readonly activeStreams: number;
  /** Ends every stream with OK and stops listening to the store. */
  close(): void;
}

export interface SdsServiceDeps {
  secrets: SecretSource;
  log: Logger;
  clock: Clock;
  metrics?: SdsMetrics;
  /** How long FetchSecrets waits for names that are not loaded yet (default 1 s). */
  fetchWaitMs?: number;
}

interface Stream {
  /** A name this stream holds changed in the store. */
  changed(name: string): void;
  /** Server shutdown: end with OK. */
  shutdown(): void;
}

function typeUrlError(typeUrl: string): CitadelError {
  return new CitadelError('CONFIG_INVALID', `this server serves only ${SECRET_TYPE_URL}`, `asked for ${typeUrl}`);
}

/** Version of a SotW response: the entry's own for one resource, a digest of name@version pairs for several. */
function combinedVersion(versions: ReadonlyMap<string, string>): string {
  if (versions.size === 1) return [...versions.values()][0]!;
  const h = createHash('sha256');
  for (const [name, version] of [...versions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) h.update(`${name}@${version}\n`);
  return h.digest('hex').slice(0, 16);
}

function describeStatus(status: RpcStatus): { code: number | undefined; message: string } {
  return { code: status.code, message: (status.message ?? '').slice(0, 2000) };
}

/** Creates the SDS service over `deps.secrets`. */
export function createSdsService(deps: SdsServiceDeps): SdsService {
  const metrics = deps.metrics ?? noopSdsMetrics;
  const log = deps.log;
  const holders = new Map<string, Set<Stream>>();
  const streams = new Set<Stream>();
  let streamSeq = 0;
  let closed = false;

  const unsubscribeStore = deps.secrets.subscribe((name) => {
    for (const s of [...(holders.get(name) ?? [])]) s.changed(name);
  });

  /** Bookkeeping shared by both stream kinds: who holds which name. */
  function hold(stream: Stream, name: string): void {
    let set = holders.get(name);
    if (!set) holders.set(name, (set = new Set()));
    set.add(stream);
    deps.secrets.acquire(name);
  }
  function unhold(stream: Stream, name: string): void {
    const set = holders.get(name);
    if (set?.delete(stream)) {
      if (set.size === 0) holders.delete(name);
      deps.secrets.release(name);
    }
  }

  function register(api: SdsApi, stream: Stream): void {
    streams.add(stream);
    metrics.streamOpened(api);
  }
  function unregister(api: SdsApi, stream: Stream): void {
    if (streams.delete(stream)) metrics.streamClosed(api);
  }

  /**
   * The life of one stream, the same for both APIs: registered on open; on the end (client gone, server shutdown,
   * or a request for a foreign type_url, which fails the stream) it releases every name in `held` and is
   * unregistered, once.
   */
  function track(api: SdsApi, sink: ResponseSink<unknown>, held: Set<string>, push: () => void) {
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      for (const name of held) unhold(stream, name);
      held.clear();
      unregister(api, stream);
    };
    const stream: Stream = {
      changed: () => push(),
      shutdown() {
        end();
        sink.end();
      },
    };
    register(api, stream);
    return {
      stream,
      end,
      get ended() {
        return ended;
      },
      /** False when the stream has ended or `typeUrl` is foreign (which ends it with CONFIG_INVALID). */
      accepts(typeUrl: string | undefined, slog: Logger): boolean {
        if (ended) return false;
        const type = typeUrl ?? '';
        if (type === '' || type === SECRET_TYPE_URL) return true;
        slog.warn({ typeUrl: type }, 'request for a foreign type; closing the stream');
        end();
        sink.fail(typeUrlError(type));
        return false;
      },
    };
  }

  function openStream(sink: ResponseSink<DiscoveryResponse>, peer: string): StreamHandle<DiscoveryRequest> {
    const id = ++streamSeq;
    let slog = log.child({ stream: id, api: 'sotw', peer });
    const names = new Set<string>();
    /** Version last sent per name (a rejected one stays here, so it is not sent again). */
    const sent = new Map<string, string>();
    /** Version Envoy NACKed per name. */
    const rejected = new Map<string, string>();
    const warnedPending = new Set<string>();
    let lastNonce: string | undefined;
    let lastVersions = new Map<string, string>();
    let sawFirst = false;

    const push = () => {
      if (life.ended) return;
      const versions = new Map<string, string>();
      const resources = [];
      let needed = false;
      for (const name of names) {
        const entry: SecretEntry | undefined = deps.secrets.get(name);
        if (!entry) {
          if (!warnedPending.has(name)) {
            warnedPending.add(name);
            slog.warn({ resource: name }, 'requested secret is not available (yet); leaving it pending');
          }
          continue;
        }
        if (rejected.get(name) === entry.version) continue;
        if (sent.get(name) !== entry.version) needed = true;
        versions.set(name, entry.version);
        resources.push(entry.resource);
      }
      if (!needed) return;
      const nonce = randomUUID();
      const version = combinedVersion(versions);
      lastNonce = nonce;
      lastVersions = versions;
      for (const [name, v] of versions) {
        sent.set(name, v);
        metrics.pushed(name);
      }
      slog.info({ resources: [...versions.keys()], version, nonce }, 'pushing secrets');
      sink.send({ version_info: version, resources, type_url: SECRET_TYPE_URL, nonce });
    };

    const setNames = (requested: readonly string[]) => {
      const wanted = new Set(requested);
      for (const name of [...names]) {
        if (wanted.has(name)) continue;
        names.delete(name);
        sent.delete(name);
        rejected.delete(name);
        warnedPending.delete(name);
        unhold(stream, name);
      }
      for (const name of wanted) {
        if (names.has(name)) continue;
        names.add(name);
        hold(stream, name);
      }
    };

    const life = track('sotw', sink, names, push);
    const { stream } = life;

    return {
      onRequest(req) {
        // Handled in one step with any answer: once this line is logged, so is the push it caused, if any.
        slog.debug({ resources: req.resource_names ?? [], nonce: req.response_nonce ?? '' }, 'SDS request');
        if (!life.accepts(req.type_url, slog)) return;
        if (!sawFirst) {
          sawFirst = true;
          if (req.node?.id) slog = slog.child({ node: req.node.id });
        }
        const nonce = req.response_nonce ?? '';
        // A nonce on a stream that has sent nothing yet (a client resuming too eagerly) cannot be an ACK or a
        // NACK of ours: treat the request as the initial one rather than ignore it and leave the client waiting.
        if (nonce !== '' && lastNonce !== undefined) {
          if (nonce !== lastNonce) {
            slog.debug({ nonce }, 'ignoring a request with a stale nonce');
            return;
          }
          if (req.error_detail) {
            for (const [name, v] of lastVersions) {
              rejected.set(name, v);
              metrics.rejected(name);
            }
            slog.error(
              { resources: [...lastVersions.keys()], rejectedVersion: combinedVersion(lastVersions), keptVersion: req.version_info, error: describeStatus(req.error_detail) },
              'Envoy rejected secrets (NACK); it keeps the last good ones',
            );
          } else {
            for (const [name, v] of lastVersions) if (rejected.get(name) !== v) rejected.delete(name);
            slog.debug({ version: req.version_info, nonce }, 'ACK');
          }
        }
        setNames(req.resource_names ?? []);
        // Sends only what Envoy does not have yet: an ACK/NACK with unchanged names produces nothing.
        push();
      },
      onClose: life.end,
    };
  }

  function openDeltaStream(sink: ResponseSink<DeltaDiscoveryResponse>, peer: string): StreamHandle<DeltaDiscoveryRequest> {
    const id = ++streamSeq;
    let slog = log.child({ stream: id, api: 'delta', peer });
    const subscribed = new Set<string>();
    /** What the client holds: from initial_resource_versions, then from what we sent. */
    const known = new Map<string, string>();
    /** Names sent on this stream (only those can be announced as removed). */
    const delivered = new Set<string>();
    /** Explicitly (re)subscribed names that must be sent even if the client seems to have them. */
    const mustSend = new Set<string>();
    const rejected = new Map<string, string>();
    const warnedPending = new Set<string>();
    /** Responses awaiting ACK/NACK: nonce -> versions sent. Bounded (Envoy answers each promptly). */
    const outstanding = new Map<string, Map<string, string>>();
    let first = true;

    const push = () => {
      if (life.ended) return;
      const resources = [];
      const removed: string[] = [];
      const versions = new Map<string, string>();
      /** Every available subscribed name's version, sent or not: the system version covers them all. */
      const current = new Map<string, string>();
      for (const name of subscribed) {
        const entry = deps.secrets.get(name);
        if (!entry) {
          if (delivered.has(name)) {
            removed.push(name);
            delivered.delete(name);
            known.delete(name);
          } else if (!warnedPending.has(name)) {
            warnedPending.add(name);
            slog.warn({ resource: name }, 'requested secret is not available (yet); leaving it pending');
          }
          continue;
        }
        current.set(name, entry.version);
        if (rejected.get(name) === entry.version) continue;
        if (!mustSend.has(name) && known.get(name) === entry.version) continue;
        resources.push({ name, version: entry.version, resource: entry.resource });
        versions.set(name, entry.version);
      }
      if (resources.length === 0 && removed.length === 0) return;
      const nonce = randomUUID();
      for (const [name, v] of versions) {
        known.set(name, v);
        delivered.add(name);
        mustSend.delete(name);
        metrics.pushed(name);
      }
      outstanding.set(nonce, versions);
      if (outstanding.size > 64) outstanding.delete(outstanding.keys().next().value!);
      const systemVersion = combinedVersion(current);
      slog.info({ resources: [...versions.keys()], removed, nonce }, 'pushing secrets');
      sink.send({ system_version_info: systemVersion, resources, type_url: SECRET_TYPE_URL, removed_resources: removed, nonce });
    };

    const life = track('delta', sink, subscribed, push);
    const { stream } = life;

    return {
      onRequest(req) {
        slog.debug({ subscribe: req.resource_names_subscribe ?? [], unsubscribe: req.resource_names_unsubscribe ?? [], nonce: req.response_nonce ?? '' }, 'SDS request');
        if (!life.accepts(req.type_url, slog)) return;
        const initial = first;
        if (first) {
          first = false;
          if (req.node?.id) slog = slog.child({ node: req.node.id });
          for (const [name, version] of Object.entries(req.initial_resource_versions ?? {})) known.set(name, version);
        }
        const nonce = req.response_nonce ?? '';
        if (nonce !== '') {
          const versions = outstanding.get(nonce);
          outstanding.delete(nonce);
          if (!versions) slog.debug({ nonce }, 'ACK/NACK for an unknown nonce');
          else if (req.error_detail) {
            for (const [name, v] of versions) {
              rejected.set(name, v);
              metrics.rejected(name);
            }
            slog.error({ resources: [...versions.keys()], error: describeStatus(req.error_detail) }, 'Envoy rejected secrets (NACK); it keeps the last good ones');
          } else {
            for (const [name, v] of versions) if (rejected.get(name) !== v) rejected.delete(name);
            slog.debug({ nonce }, 'ACK');
          }
        }
        for (const name of req.resource_names_unsubscribe ?? []) {
          if (!subscribed.delete(name)) continue;
          known.delete(name);
          delivered.delete(name);
          mustSend.delete(name);
          rejected.delete(name);
          warnedPending.delete(name);
          unhold(stream, name);
        }
        for (const name of req.resource_names_subscribe ?? []) {
          // On the first request a name Envoy already holds (initial_resource_versions) is sent only if it changed;
          // any other subscribe is answered even if Envoy seems to have the resource.
          if (!(initial && known.has(name))) mustSend.add(name);
          if (subscribed.has(name)) continue;
          subscribed.add(name);
          hold(stream, name);
        }
        push();
      },
      onClose: life.end,
    };
  }

  async function fetch(req: DiscoveryRequest): Promise<DiscoveryResponse> {
    const typeUrl = req.type_url ?? '';
    if (typeUrl !== '' && typeUrl !== SECRET_TYPE_URL) throw typeUrlError(typeUrl);
    const names = [...new Set(req.resource_names ?? [])];
    for (const name of names) deps.secrets.acquire(name);
    try {
      const missing = () => names.filter((n) => !deps.secrets.get(n));
      if (missing().length > 0) {
        await new Promise<void>((resolve) => {
          const done = () => {
            timer.cancel();
            unsubscribe();
            resolve();
          };
          const unsubscribe = deps.secrets.subscribe(() => {
            if (missing().length === 0) done();
          });
          const timer = deps.clock.setTimer(done, deps.fetchWaitMs ?? 1000);
        });
      }
      const versions = new Map<string, string>();
      const resources = [];
      for (const name of names) {
        const entry = deps.secrets.get(name);
        if (!entry) continue;
        versions.set(name, entry.version);
        resources.push(entry.resource);
        metrics.pushed(name);
      }
      const absent = names.filter((n) => !versions.has(n));
      if (absent.length > 0) log.warn({ resources: absent }, 'FetchSecrets: requested secrets not available');
      return { version_info: versions.size > 0 ? combinedVersion(versions) : '', resources, type_url: SECRET_TYPE_URL, nonce: randomUUID() };
    } finally {
      for (const name of names) deps.secrets.release(name);
    }
  }

  return {
    openStream,
    openDeltaStream,
    fetch,
    get activeStreams() {
      return streams.size;
    },
    close() {
      if (closed) return;
      closed = true;
      unsubscribeStore();
      for (const s of [...streams]) s.shutdown();
    },
  };
}
