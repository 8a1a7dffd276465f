/**
 * Envoy's SecretDiscoveryService adapted to grpc-js (stream plumbing, encoding), and the Unix socket server the
 * agent's services share, on a socket unix-listener.ts prepares (parent directories, a stale socket removed, mode
 * 0666 as Istio sets it). It adapts any service of the SdsHandlers shape and imports nothing from src/agent: the agent's
 * SDS service (src/agent/sds/service.ts) is joined to it in src/cli/agent-socket.ts.
 */
import type * as grpc from '@grpc/grpc-js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import type { OpenStream, ResponseSink } from '../streams.js';
import { toGrpcStatus } from './errors.js';
import { sdsServiceDefinition } from './protos.js';
import { insecureServerCredentials, startGrpcServer, type ServiceBinding } from './server.js';
import { listenUnixSocket, type UnixListener } from './unix-listener.js';

type Duplex = grpc.ServerDuplexStream<unknown, unknown>;

/** Wires one grpc-js duplex call to a stream handle of a discovery service (SDS here, ECDS in ecds-server.ts). */
export function bindDuplex<Req, Res>(
  call: Duplex,
  open: OpenStream<Req, Res>,
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
export function sotwResponseEncoder<Res extends SotwResponse>(method: grpc.MethodDefinition<unknown, unknown>): (res: Res) => Buffer {
  const encoded = new WeakMap<object, Buffer>();
  const resourceBytes = (resource: object) => {
    let bytes = encoded.get(resource);
    if (!bytes) encoded.set(resource, (bytes = method.responseSerialize({ resources: [resource] })));
    return bytes;
  };
  return (res) => Buffer.concat([...res.resources.map(resourceBytes), method.responseSerialize({ ...res, resources: [] })]);
}

/** A state-of-the-world response: whatever else it holds, its resources are whole messages (see sotwResponseEncoder). */
export interface SotwResponse {
  readonly resources: readonly object[];
}

/**
 * What the SDS binding serves, in proto-loader's object shapes (src/agent/sds/service.ts's SdsService is one).
 * Errors thrown or failed with are CitadelErrors, answered with their status from src/errors.ts.
 */
export interface SdsHandlers<Req, Res extends SotwResponse, DeltaReq, DeltaRes> {
  openStream: OpenStream<Req, Res>;
  openDeltaStream: OpenStream<DeltaReq, DeltaRes>;
  fetch(req: Req): Promise<Res>;
}

/** The SDS service as a grpc-js binding. */
export function sdsServiceBinding<Req, Res extends SotwResponse, DeltaReq, DeltaRes>(service: SdsHandlers<Req, Res, DeltaReq, DeltaRes>, log: Logger): ServiceBinding {
  const definition = sdsServiceDefinition();
  const stream = definition.StreamSecrets!;
  const encodeSotw = sotwResponseEncoder<Res>(stream);
  const implementation: grpc.UntypedServiceImplementation = {
    StreamSecrets(call: Duplex) {
      bindDuplex(call, service.openStream, log, { encode: encodeSotw, latestOnly: true });
    },
    DeltaSecrets(call: Duplex) {
      bindDuplex(call, service.openDeltaStream, log);
    },
    FetchSecrets(call: grpc.ServerUnaryCall<Req, unknown>, callback: grpc.sendUnaryData<unknown>) {
      service.fetch(call.request ?? ({} as Req)).then(
        (res) => callback(null, res),
        (err: unknown) => callback(toGrpcStatus(err)),
      );
    },
  };
  // StreamSecrets writes the bytes sotwResponseEncoder made; anything else is still serialized here.
  const passBytes = (value: unknown) => (Buffer.isBuffer(value) ? value : stream.responseSerialize(value));
  return { definition: { ...definition, StreamSecrets: { ...stream, responseSerialize: passBytes } }, implementation };
}

/** A running gRPC server on a Unix socket. */
export interface UnixSocketServer {
  readonly socketPath: string;
  /** Stops the server (calls still open get `graceMs`) and removes the socket file. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Serves `services` on `listener` (unix-listener.ts: the agent listens before it loads gRPC), or else on a socket
 * listened on here at `socketPath`, with mode 0666 so Envoy (another uid in the same pod) can connect.
 * @throws CitadelError CONFIG_INVALID (see prepareSocketPath in unix-listener.ts; also when binding fails).
 */
export async function startUnixSocketServer(deps: { socketPath: string; listener?: UnixListener; services: readonly ServiceBinding[]; log: Logger }): Promise<UnixSocketServer> {
  const log = deps.log;
  const listener = deps.listener ?? (await listenUnixSocket(deps.socketPath));
  let server;
  try {
    server = await startGrpcServer({ address: listener, credentials: insecureServerCredentials(), services: deps.services });
  } catch (err) {
    await listener.close();
    throw err;
  }
  log.info({ socket: listener.socketPath }, 'SDS server listening');
  let stopping: Promise<void> | undefined;
  return {
    socketPath: listener.socketPath,
    stop(graceMs = 2_000) {
      stopping ??= (async () => {
        await listener.close();
        await server.stop(graceMs);
        log.info('SDS server stopped');
      })();
      return stopping;
    },
  };
}
