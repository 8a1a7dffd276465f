/**
 * Serves Envoy's SecretDiscoveryService on a Unix socket: the gRPC adapter around src/agent/sds/service.ts plus
 * the socket housekeeping Envoy needs (parent directories, a stale socket removed, mode 0666 as Istio sets it).
 */
import { mkdir, chmod, lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { Registry } from '../prom.js';
import { CitadelError } from '../errors.js';
import { systemClock, type Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { prometheusSdsMetrics, type SdsMetrics } from '../agent/sds/metrics.js';
import { createSdsService, type ResponseSink, type SdsService, type StreamHandle } from '../agent/sds/service.js';
import type { SecretSource } from '../agent/sds/secret-source.js';
import type { DiscoveryRequest, DiscoveryResponse, SecretAny } from '../agent/sds/xds-types.js';
import { toGrpcStatus } from './errors.js';
import { sdsServiceDefinition } from './protos.js';
import { insecureServerCredentials, startGrpcServer, type ServiceBinding } from './server.js';

type Duplex = grpc.ServerDuplexStream<unknown, unknown>;

/** Wires one grpc-js duplex call to a stream handle of a discovery service (SDS here, ECDS in ecds-server.ts). */
export function bindDuplex<Req, Res>(
  call: Duplex,
  open: (sink: ResponseSink<Res>, peer: string) => StreamHandle<Req>,
  log: Logger,
  opts: { encode?: (message: Res) => unknown; latestOnly?: boolean } = {},
): void {
  const encode = opts.encode ?? ((m: Res) => m);
  let finished = false;
  // latestOnly (state of the world: every response carries the whole state): at most one response is on its way
  // to the peer, and of those that come meanwhile only the newest is kept. A peer that stops reading then holds one
  // response, not a queue that grows with every rotation.
  let inFlight = false;
  let heldBack: unknown;
  const write = (bytes: unknown) => {
    if (!opts.latestOnly) {
      call.write(bytes);
      return;
    }
    inFlight = true;
    call.write(bytes, () => {
      inFlight = false;
      const next = heldBack;
      heldBack = undefined;
      if (next !== undefined && !finished) write(next);
    });
  };
  const sink: ResponseSink<Res> = {
    send(message) {
      if (finished) return;
      if (inFlight) heldBack = encode(message);
      else write(encode(message));
    },
    end() {
      if (finished) return;
      finished = true;
      call.end();
    },
    fail(err) {
      if (finished) return;
      finished = true;
      // grpc-js ends a server stream with the status of an emitted error.
      call.emit('error', toGrpcStatus(err));
    },
  };
  const handle = open(sink, call.getPeer());
  const close = () => {
    handle.onClose();
  };
  call.on('data', (req: Req) => {
    try {
      handle.onRequest(req);
    } catch (err) {
      log.error({ err }, 'xDS request handling failed; closing the stream');
      handle.onClose();
      sink.fail(err instanceof CitadelError ? err : new CitadelError('INTERNAL', 'internal error'));
    }
  });
  // Envoy half-closing means it is done with the stream: finish ours too.
  call.on('end', () => {
    close();
    sink.end();
  });
  call.on('cancelled', close);
  call.on('error', close);
  call.on('close', close);
}

/**
 * Encodes state-of-the-world responses with each Secret serialized once per content rather than once per stream:
 * a rotation sends the same Secret to every stream that holds the name. Protobuf messages concatenate (a repeated
 * field appends, a scalar takes the last value), so the cached `resources` bytes are followed by the per-stream
 * version and nonce. Entries go with the Secret objects (the store replaces them on every change).
 */
export function sotwResponseEncoder(method: grpc.MethodDefinition<unknown, unknown>): (res: DiscoveryResponse) => Buffer {
  const encoded = new WeakMap<SecretAny, Buffer>();
  const resourceBytes = (resource: SecretAny) => {
    let bytes = encoded.get(resource);
    if (!bytes) encoded.set(resource, (bytes = method.responseSerialize({ resources: [resource] })));
    return bytes;
  };
  return (res) => Buffer.concat([...res.resources.map(resourceBytes), method.responseSerialize({ ...res, resources: [] })]);
}

/** The SDS service as a grpc-js binding. */
export function sdsServiceBinding(service: SdsService, log: Logger): ServiceBinding {
  const definition = sdsServiceDefinition();
  const stream = definition.StreamSecrets!;
  const encodeSotw = sotwResponseEncoder(stream);
  const implementation: grpc.UntypedServiceImplementation = {
    StreamSecrets(call: Duplex) {
      bindDuplex(call, service.openStream, log, { encode: encodeSotw, latestOnly: true });
    },
    DeltaSecrets(call: Duplex) {
      bindDuplex(call, service.openDeltaStream, log);
    },
    FetchSecrets(call: grpc.ServerUnaryCall<DiscoveryRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      service.fetch(call.request ?? {}).then(
        (res) => callback(null, res),
        (err: unknown) => callback(toGrpcStatus(err)),
      );
    },
  };
  // StreamSecrets writes the bytes sotwResponseEncoder made; anything else is still serialized here.
  const passBytes = (value: unknown) => (Buffer.isBuffer(value) ? value : stream.responseSerialize(value));
  return { definition: { ...definition, StreamSecrets: { ...stream, responseSerialize: passBytes } }, implementation };
}

// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES = 107;

/** True when something accepts connections on the socket at `path`. */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolveLive) => {
    const socket = connect({ path });
    socket.once('connect', () => {
      socket.destroy();
      resolveLive(true);
    });
    socket.once('error', () => resolveLive(false));
  });
}

/**
 * Prepares `path` for binding: creates the parent directories, removes a stale socket.
 * @throws CitadelError CONFIG_INVALID when the path is too long, is not a socket, or a live server holds it.
 */
export async function prepareSocketPath(path: string): Promise<string> {
  const absolute = resolve(path);
  const chosen = Buffer.byteLength(absolute) <= MAX_SOCKET_PATH_BYTES ? absolute : path;
  if (Buffer.byteLength(chosen) > MAX_SOCKET_PATH_BYTES) {
    throw new CitadelError('CONFIG_INVALID', `SDS socket path is longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${path}`);
  }
  await mkdir(dirname(absolute), { recursive: true });
  const stat = await lstat(absolute).catch(() => undefined);
  if (stat) {
    if (!stat.isSocket()) throw new CitadelError('CONFIG_INVALID', `SDS socket path exists and is not a socket: ${path}`);
    if (await socketIsLive(chosen)) {
      throw new CitadelError('CONFIG_INVALID', `another server is listening on the SDS socket ${path}`);
    }
    await unlink(absolute);
  }
  return chosen;
}

/** A running SDS server on a Unix socket. */
export interface SdsServer {
  readonly socketPath: string;
  readonly service: SdsService;
  /** Ends every stream (OK), then stops the server; Envoy keeps its secrets and reconnects to the next agent. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts SDS on `unix:<socketPath>` with mode 0666 so Envoy (another uid in the same pod) can connect.
 * @throws CitadelError CONFIG_INVALID (see prepareSocketPath; also when binding fails).
 */
export async function startSdsServer(deps: {
  socketPath: string;
  store: SecretSource;
  log: Logger;
  clock?: Clock;
  registry?: Registry;
  metrics?: SdsMetrics;
  /** More services on the same socket (the SPIFFE Workload API, the agent's ECDS). */
  extraServices?: readonly ServiceBinding[];
}): Promise<SdsServer> {
  const log = deps.log.child({ component: 'sds' });
  const path = await prepareSocketPath(deps.socketPath);
  const metrics = deps.metrics ?? (deps.registry ? prometheusSdsMetrics(deps.registry) : undefined);
  const service = createSdsService({ secrets: deps.store, log, clock: deps.clock ?? systemClock, ...(metrics ? { metrics } : {}) });
  let server;
  try {
    server = await startGrpcServer({ address: `unix:${path}`, credentials: insecureServerCredentials(), services: [sdsServiceBinding(service, log), ...(deps.extraServices ?? [])] });
  } catch (err) {
    service.close();
    throw err;
  }
  await chmod(path, 0o666);
  log.info({ socket: path }, 'SDS server listening');
  let stopping: Promise<void> | undefined;
  return {
    socketPath: path,
    service,
    stop(graceMs = 2_000) {
      stopping ??= (async () => {
        service.close();
        await server.stop(graceMs);
        await unlink(path).catch(() => undefined);
        log.info('SDS server stopped');
      })();
      return stopping;
    },
  };
}
