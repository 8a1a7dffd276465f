/**
 * A TLS client for the Istio CA API, used by the agent (and tests). One client is one channel: after a failure the
 * agent drops it and builds a new one, which re-reads the root file (Istio does the same).
 */
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { CitadelError } from '../errors.js';
import { fromGrpcError } from './errors.js';
import { caClientConstructor, jwtSvidClientConstructor } from './protos.js';
import { jsonToStruct, type JsonValue } from './struct.js';

export interface CaClientOptions {
  /** `host:port` of the CA (e.g. citadel.citadel-system.svc:15012). */
  address: string;
  /** PEM bundle the server certificate must chain to. */
  rootCaPem: string;
  /**
   * The name the server certificate must carry (ISTIOD_SAN); also sent as SNI. Default: the host of `address`.
   */
  serverName?: string;
  /** Client certificate chain and key for mTLS renewal (both or neither). */
  clientCertChainPem?: string;
  clientKeyPem?: string;
  /** Headers sent on every call, e.g. `{ ClusterID: 'Kubernetes' }` (names are lower-cased on the wire). */
  headers?: Record<string, string>;
  /** Per-call deadline (default 10 s). */
  timeoutMs?: number;
}

export interface CreateCertificateRequest {
  csr: string;
  /** `validity_duration`, whole seconds. */
  validityDurationSeconds: number;
  metadata?: Record<string, JsonValue>;
  /** Sent as `authorization: Bearer <token>` when given (re-read by the caller for every call). */
  bearerToken?: string;
  signal?: AbortSignal;
}

export interface CreateJwtSvidRequest {
  audience: readonly string[];
  validityDurationSeconds: number;
  bearerToken?: string;
  signal?: AbortSignal;
}

/** One channel to the CA's CreateCertificate; free of @grpc types. */
export interface CaClient {
  /**
   * Calls CreateCertificate and returns `cert_chain` as sent (leaf first).
   * @throws CitadelError UNAUTHENTICATED, PERMISSION_DENIED, RATE_LIMITED, CSR_INVALID (INVALID_ARGUMENT),
   *   UPSTREAM_UNAVAILABLE (unreachable, TLS failure, deadline, INTERNAL and other server failures),
   *   CERT_INVALID (server answered with an empty chain).
   */
  createCertificate(req: CreateCertificateRequest): Promise<string[]>;
  /**
   * Calls citadel's JwtSvidService/CreateJwtSvid on the same channel and returns the token.
   * @throws CitadelError as createCertificate; CERT_INVALID when the answer holds no token.
   */
  createJwtSvid(req: CreateJwtSvidRequest): Promise<string>;
  /** Closes the channel. */
  close(): void;
}

/** The host part of `host:port` / `[v6]:port` (the default server name for a CA address). */
export function hostOfAddress(address: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) return bracketed[1]!;
  const i = address.lastIndexOf(':');
  return i > 0 ? address.slice(0, i) : address;
}

/**
 * Builds a CA client. TLS 1.2 minimum; the server is verified against `rootCaPem` and `serverName`.
 * @throws CitadelError CONFIG_INVALID when the root, client certificate or key cannot be used.
 */
export function createCaClient(opts: CaClientOptions): CaClient {
  if (Boolean(opts.clientCertChainPem) !== Boolean(opts.clientKeyPem)) {
    throw new CitadelError('CONFIG_INVALID', 'a client certificate needs its key (and the other way round)');
  }
  let secureContext;
  try {
    secureContext = createSecureContext({
      ca: opts.rootCaPem,
      ...(opts.clientCertChainPem ? { cert: opts.clientCertChainPem, key: opts.clientKeyPem } : {}),
      minVersion: 'TLSv1.2',
    });
  } catch (err) {
    throw new CitadelError('CONFIG_INVALID', 'cannot use the CA root or client certificate', (err as Error).message, { cause: err });
  }
  const serverName = opts.serverName ?? hostOfAddress(opts.address);
  const Client = caClientConstructor();
  const client = new Client(opts.address, grpc.credentials.createFromSecureContext(secureContext), {
    // Verify and send SNI for the expected name even when dialling an IP or a different host name.
    'grpc.ssl_target_name_override': serverName,
    'grpc.default_authority': serverName,
  });
  // Connect now rather than on the first call: the caller builds a client when it is about to use it, and the
  // handshake can overlap whatever it does before the call (the agent generates the key meanwhile).
  client.getChannel().getConnectivityState(true);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const JwtClient = jwtSvidClientConstructor();

  /** One unary call with the configured headers, an optional bearer token, the deadline and abort support. */
  const unary = <Res>(method: { path: string; name: string; definition: grpc.MethodDefinition<unknown, unknown> }, request: unknown, bearer: string | undefined, signal: AbortSignal | undefined) =>
    new Promise<Res | undefined>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new CitadelError('UPSTREAM_UNAVAILABLE', `${method.name} aborted`));
        return;
      }
      const metadata = new grpc.Metadata();
      for (const [k, v] of Object.entries(opts.headers ?? {})) metadata.set(k.toLowerCase(), v);
      if (bearer) metadata.set('authorization', `Bearer ${bearer}`);
      const call = client.makeUnaryRequest(
        method.path,
        (value: unknown) => method.definition.requestSerialize(value),
        (bytes: Buffer) => method.definition.responseDeserialize(bytes) as Res,
        request,
        metadata,
        // A gRPC deadline is wall-clock by definition (grpc-js compares it with Date), hence no Clock here.
        { deadline: Date.now() + timeoutMs },
        (err, response) => {
          signal?.removeEventListener('abort', onAbort);
          if (err) reject(fromGrpcError(err, method.name));
          else resolve(response);
        },
      );
      const onAbort = () => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  return {
    async createJwtSvid(req) {
      const response = await unary<{ token?: string }>(
        { path: '/citadel.v1.JwtSvidService/CreateJwtSvid', name: 'CreateJwtSvid', definition: JwtClient.service.CreateJwtSvid! },
        { audience: [...req.audience], validity_duration: Math.trunc(req.validityDurationSeconds) },
        req.bearerToken,
        req.signal,
      );
      if (!response?.token) throw new CitadelError('CERT_INVALID', 'CreateJwtSvid: the CA returned no token');
      return response.token;
    },
    async createCertificate(req) {
      const request = {
        csr: req.csr,
        validity_duration: Math.trunc(req.validityDurationSeconds),
        ...(req.metadata ? { metadata: jsonToStruct(req.metadata) } : {}),
      };
      const response = await unary<{ cert_chain?: string[] }>(
        { path: '/istio.v1.auth.IstioCertificateService/CreateCertificate', name: 'CreateCertificate', definition: Client.service.CreateCertificate! },
        request,
        req.bearerToken,
        req.signal,
      );
      const chain = response?.cert_chain ?? [];
      if (chain.length === 0) throw new CitadelError('CERT_INVALID', 'CreateCertificate: the CA returned an empty chain');
      return chain;
    },
    close() {
      client.close();
    },
  };
}
