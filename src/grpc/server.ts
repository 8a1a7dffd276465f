/**
 * A thin shell around grpc-js's Server: bind an address, swap TLS material at runtime, shut down gracefully, and
 * read what handlers need from a call (bearer token, peer address, client certificate) without importing @grpc.
 */
import { createSecureContext, Server as TlsServer, type SecureContextOptions, type TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { CitadelError } from '../errors.js';
import type { UnixListener } from './unix-listener.js';

/** A service to register: its definition (see protos.ts) and the grpc-js handler object for it. */
export interface ServiceBinding {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

/** TLS material for a server: the chain it presents and, optionally, the CAs client certificates must chain to. */
export interface ServerTlsMaterial {
  /** PEM, leaf first, then intermediates. */
  certChainPem: string;
  /** PEM private key of the leaf. */
  keyPem: string;
  /**
   * PEM bundle that client certificates are checked against (and whose names the server sends as acceptable
   * issuers). A client certificate that does not chain here is not fatal to the handshake: the call still sees it
   * (CallContext.peerCertificateDer), so that it can be refused with a reason; handlers verify it themselves.
   */
  clientCaPem?: string;
}

function contextOptions(material: ServerTlsMaterial): SecureContextOptions {
  return {
    cert: material.certChainPem,
    key: material.keyPem,
    ...(material.clientCaPem ? { ca: material.clientCaPem } : {}),
    // setSecureContext builds a fresh context from these options, so the floor must be repeated here.
    minVersion: 'TLSv1.2',
  };
}

/**
 * Server credentials whose certificate (and client CA bundle) can be replaced while the server runs: new
 * connections get the new material, open connections keep theirs. grpc-js applies each update through
 * http2 `setSecureContext`, so the listening socket is never closed.
 */
export class ReloadableServerCredentials extends grpc.ServerCredentials {
  private material: ServerTlsMaterial;

  /** @throws CitadelError CERT_INVALID when the key/cert/CA cannot form a TLS context (e.g. key does not match). */
  constructor(material: ServerTlsMaterial) {
    const options = ReloadableServerCredentials.check(material);
    super(
      {
        // Always ask for a client certificate (so a renewal over mTLS can present one) but never require it or
        // fail the handshake on it: the CA decides what a certificate is worth (Istio's VerifyClientCertIfGiven).
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
      },
      options,
    );
    this.material = material;
  }

  private static check(material: ServerTlsMaterial): SecureContextOptions {
    const options = contextOptions(material);
    try {
      createSecureContext(options);
    } catch (err) {
      throw new CitadelError('CERT_INVALID', 'serving certificate rejected by TLS', (err as Error).message, { cause: err });
    }
    return options;
  }

  /** The material currently served. */
  get current(): ServerTlsMaterial {
    return this.material;
  }

  /**
   * Serves `material` to every new connection. Validated first; on failure the old material stays in use.
   * @throws CitadelError CERT_INVALID
   */
  update(material: ServerTlsMaterial): void {
    const options = ReloadableServerCredentials.check(material);
    this.material = material;
    this.updateSecureContextOptions(options);
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** Plaintext credentials (for the SDS Unix socket, which is protected by file permissions). */
export function insecureServerCredentials(): grpc.ServerCredentials {
  return grpc.ServerCredentials.createInsecure();
}

/** A running server. */
export interface RunningServer {
  /** The bound TCP port (0 for a Unix socket). */
  readonly port: number;
  /** The address as grpc-js was asked to bind it. */
  readonly address: string;
  /**
   * Stops accepting calls and lets in-flight calls finish for up to `graceMs`, then stops waiting for them (a
   * call on a session grpc-js is already closing runs on until the process exits). grpc-js also waits for every
   * open connection, even an idle one that never spoke HTTP/2; with `callsInProgress`, the wait ends as soon as no
   * call is left (seen twice, 50 ms apart). Resolves true when no call was left behind. Idempotent.
   */
  stop(graceMs?: number, callsInProgress?: () => number): Promise<boolean>;
}

/**
 * Normalises our address syntax to grpc-js's: `:15012` -> `0.0.0.0:15012`, `host:port` and `unix:/path` as they
 * are (`unix:./rel` is made absolute by the caller if needed).
 */
export function grpcBindAddress(address: string): string {
  if (address.startsWith('unix:')) return address;
  if (address.startsWith(':')) return `0.0.0.0${address}`;
  return address;
}

/**
 * Binds a grpc-js server on `address` with `credentials` and the given services.
 * @throws CitadelError CONFIG_INVALID when the address cannot be bound (in use, bad syntax, no permission).
 */
export async function startGrpcServer(opts: {
  /** Where to listen, or a socket already listening whose connections the server takes (unix-listener.ts). */
  address: string | UnixListener;
  credentials: grpc.ServerCredentials;
  services: readonly ServiceBinding[];
  /** Largest request accepted, in bytes (grpc-js default 4 MiB). */
  maxReceiveMessageBytes?: number;
}): Promise<RunningServer> {
  const server = new grpc.Server({
    ...(opts.maxReceiveMessageBytes ? { 'grpc.max_receive_message_length': opts.maxReceiveMessageBytes } : {}),
    // Detect dead peers on long-lived streams (SDS) without waiting for TCP timeouts.
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    // Channelz (per-call counters and traces for grpc-js's debug service) is never served here: skip its cost.
    'grpc.enable_channelz': 0,
  });
  for (const s of opts.services) server.addService(s.definition, s.implementation);
  let address: string;
  let port = 0;
  if (typeof opts.address === 'string') {
    const bind = opts.address;
    address = grpcBindAddress(bind);
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(address, opts.credentials, (err, boundPort) => {
        if (err) reject(new CitadelError('CONFIG_INVALID', `cannot listen on ${bind}`, err.message, { cause: err }));
        else resolve(boundPort);
      });
    });
  } else {
    address = `unix:${opts.address.socketPath}`;
    const injector = server.createConnectionInjector(opts.credentials);
    opts.address.serve((socket) => injector.injectConnection(socket));
  }
  watchUnverifiedClientCertificates(server);
  let stopping: Promise<boolean> | undefined;
  return {
    port,
    address,
    stop(graceMs = 5_000, callsInProgress) {
      stopping ??= new Promise<boolean>((resolve) => {
        let idleChecks = 0;
        let done = false;
        const finish = (drained: boolean) => {
          if (done) return;
          done = true;
          clearTimeout(deadline);
          clearInterval(poll);
          if (!drained || idleChecks >= 2) server.forceShutdown();
          resolve(drained);
        };
        const deadline = setTimeout(() => finish(false), graceMs);
        deadline.unref();
        const poll = callsInProgress
          ? setInterval(() => {
              idleChecks = callsInProgress() === 0 ? idleChecks + 1 : 0;
              if (idleChecks >= 2) finish(true);
            }, 50).unref()
          : undefined;
        server.tryShutdown(() => finish(true));
      });
      return stopping;
    },
  };
}

/**
 * Open TLS connections whose client presented a certificate that TLS did not verify, by peer address (`ip:port`,
 * as grpc-js's getPeer() reports it; unique among one server's open connections, and citadel runs one TLS server
 * per process). grpc-js hands a call the client certificate only when it chained to the client CA bundle at
 * handshake time, so without this an expired, self-signed or foreign certificate looks like no certificate at all,
 * and the caller and the operator hear "no credentials" (issue 14). Entries hold the socket (which holds the
 * certificate anyway) and go with the connection.
 */
const unverifiedPeers = new Map<string, TLSSocket>();

/**
 * Records connections with an unverified client certificate on every TLS listener of `server`. grpc-js does not
 * expose its listeners, so this reads its `http2Servers` field; if a grpc-js upgrade drops it, starting a server
 * fails loudly here (and the tests with it) rather than silently losing the reasons.
 */
function watchUnverifiedClientCertificates(server: grpc.Server): void {
  const listeners = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(listeners instanceof Map)) throw new Error('grpc-js internals changed: Server.http2Servers is gone; see watchUnverifiedClientCertificates');
  for (const listener of listeners.keys()) {
    if (!(listener instanceof TlsServer)) continue;
    listener.on('secureConnection', (socket: TLSSocket) => {
      if (socket.authorized || !socket.getPeerCertificate()?.raw) return;
      const peer = `${socket.remoteAddress}:${socket.remotePort}`;
      unverifiedPeers.set(peer, socket);
      socket.once('close', () => {
        if (unverifiedPeers.get(peer) === socket) unverifiedPeers.delete(peer);
      });
    });
  }
}

/** Open connections holding a client certificate TLS did not verify (for tests and metrics). */
export const unverifiedPeerCount = (): number => unverifiedPeers.size;

/** What a handler may know about the caller; built from the grpc-js call, free of @grpc types. */
export interface CallContext {
  /** The token of an `authorization: Bearer <token>` header, if any (never log it). */
  readonly bearerToken: string | undefined;
  /** The remote address as grpc-js reports it (`ip:port`), for logs and audit lines. */
  readonly peerAddress: string;
  /**
   * DER of the client's leaf certificate when one was presented, whether or not it chained to the server's client
   * CA bundle at handshake time (TLS did check that the client holds its key); undefined otherwise. Callers must
   * verify it against their current trust bundle before trusting anything in it.
   */
  readonly peerCertificateDer: Buffer | undefined;
  /** The call's deadline in ms since the epoch (wall clock, as gRPC defines it); Infinity when it has none. */
  readonly deadline: number;
  /** First value of a request header (lower-cased name), as text. */
  header(name: string): string | undefined;
}

/** Extracts the bearer token from request metadata (scheme matched case-insensitively, Istio-compatible). */
export function bearerToken(metadata: grpc.Metadata): string | undefined {
  for (const value of metadata.get('authorization')) {
    const text = typeof value === 'string' ? value : value.toString('utf8');
    const match = /^bearer\s+(\S+)\s*$/i.exec(text);
    if (match) return match[1];
  }
  return undefined;
}

/** A grpc-js deadline (a Date, or a number where Infinity means none) in ms since the epoch. */
function deadlineMs(deadline: grpc.Deadline): number {
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : Infinity;
}

/** Builds a CallContext from any grpc-js server call. */
export function callContext(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>): CallContext {
  const metadata = call.metadata;
  const peerAddress = call.getPeer();
  let der: Buffer | undefined;
  try {
    const raw = call.getAuthContext().sslPeerCertificate?.raw ?? unverifiedPeers.get(peerAddress)?.getPeerCertificate()?.raw;
    der = raw && raw.length > 0 ? Buffer.from(raw) : undefined;
  } catch {
    der = undefined;
  }
  return {
    bearerToken: bearerToken(metadata),
    peerAddress,
    deadline: deadlineMs(call.getDeadline()),
    peerCertificateDer: der,
    header(name) {
      const value = metadata.get(name.toLowerCase())[0];
      if (value === undefined) return undefined;
      return typeof value === 'string' ? value : value.toString('utf8');
    },
  };
}
