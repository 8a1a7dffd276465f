/**
 * The SPIFFE Workload API (service SpiffeWorkloadAPI, proto/spiffe/workload) as a grpc-js binding: the security
 * header check, server streams that send the full state at once and again on every change, unary calls. It serves
 * any WorkloadApiHandlers (src/agent/workload-api/service.ts's WorkloadApi, joined in src/cli/agent-socket.ts)
 * on the agent's SDS socket: one socket for Envoy and applications, as
 * SPIRE's agent does, and the path Istio already mounts for SPIFFE (./var/run/secrets/workload-spiffe-uds/socket).
 * The header is checked here, so only /SpiffeWorkloadAPI/ methods need it; Envoy's SDS calls never send it.
 * FetchWITSVID/FetchWITBundles have no handler: grpc-js answers UNIMPLEMENTED, as the spec asks.
 */
import { status as Status } from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { noopWorkloadApiMetrics, type WorkloadApiMetrics } from './workload-api-metrics.js';
import { toGrpcStatus } from './errors.js';
import { workloadApiServiceDefinition } from './protos.js';
import type { ServiceBinding } from './server.js';
import { jsonToStruct, type JsonValue } from './struct.js';

/** The metadata every Workload API request must carry with exactly the value `true` (Workload Endpoint spec §3). */
export const SECURITY_HEADER = 'workload.spiffe.io';

function checkSecurityHeader(metadata: grpc.Metadata): void {
  const values = metadata.get(SECURITY_HEADER);
  if (values.length !== 1 || values[0] !== 'true') throw new CitadelError('REQUEST_INVALID', 'security header missing from request');
}

type Stream = grpc.ServerWritableStream<unknown, unknown>;

/** What a stream is pushed again on (the names WorkloadApiHandlers.onChange reports). */
type Change = 'x509-svid' | 'x509-bundle' | 'jwt-bundle';

/**
 * What the binding serves: each method returns the response message in proto-loader's object shape, or throws a
 * CitadelError (answered with its status from src/errors.ts).
 */
export interface WorkloadApiHandlers {
  x509Svid(): unknown;
  x509Bundles(): unknown;
  jwtBundles(): unknown;
  jwtSvid(audience: readonly string[], spiffeId: string): Promise<unknown>;
  validateJwtSvid(audience: string, token: string): { spiffe_id: string; claims: Record<string, unknown> };
  /** Calls `listener` after something streamed changed; returns the unsubscribe function. */
  onChange(listener: (changed: Change) => void): () => void;
}

export interface WorkloadApiBinding extends ServiceBinding {
  /** Streams open now. */
  activeStreams(): number;
  /** Ends every open stream (OK); clients reconnect. */
  close(): void;
}

/** The status name a call ends with (OK for success), for the metrics. */
const codeName = (err?: unknown) => (err === undefined ? 'OK' : (Status[toGrpcStatus(err).code] ?? 'UNKNOWN'));

export function workloadApiServiceBinding(deps: { api: WorkloadApiHandlers; log: Logger; metrics?: WorkloadApiMetrics }): WorkloadApiBinding {
  const log = deps.log;
  const metrics = deps.metrics ?? noopWorkloadApiMetrics;
  const streams = new Set<() => void>();

  /** Sends `build()` now and again whenever one of `what` changes; a failure ends the stream with its status. */
  const serve = (call: Stream, method: string, what: readonly Change[], build: () => unknown) => {
    let finished = false;
    let unsubscribe = () => {};
    /** Bookkeeping for a stream that is over (ended by us, failed, or cancelled by the client). */
    const over = (code: string) => {
      finished = true;
      unsubscribe();
      if (streams.delete(end)) metrics.streamClosed(method);
      metrics.handled(method, code);
    };
    const finish = (err?: unknown) => {
      if (finished) return;
      over(codeName(err));
      if (err === undefined) call.end();
      else call.emit('error', toGrpcStatus(err));
    };
    const end = () => finish();
    const send = () => {
      if (finished) return;
      try {
        call.write(build());
        metrics.pushed(method);
      } catch (err) {
        if (!(err instanceof CitadelError)) log.error({ err, method }, 'Workload API stream failed');
        finish(err);
      }
    };
    try {
      checkSecurityHeader(call.metadata);
    } catch (err) {
      finish(err);
      return;
    }
    streams.add(end);
    metrics.streamOpened(method);
    unsubscribe = deps.api.onChange((changed) => {
      if (what.includes(changed)) send();
    });
    call.on('cancelled', () => {
      if (!finished) over('CANCELLED');
    });
    send();
  };

  const unary = <Req, Res>(method: string, handle: (req: Req) => Res | Promise<Res>) =>
    (call: grpc.ServerUnaryCall<Req, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      Promise.resolve()
        .then(() => {
          checkSecurityHeader(call.metadata);
          return handle(call.request ?? ({} as Req));
        })
        .then(
          (res) => {
            metrics.handled(method, 'OK');
            callback(null, res);
          },
          (err: unknown) => {
            metrics.handled(method, codeName(err));
            if (!(err instanceof CitadelError)) log.error({ err, method }, 'Workload API call failed unexpectedly');
            else log.debug({ method, code: err.code, reason: err.message }, 'Workload API call refused');
            callback(toGrpcStatus(err));
          },
        );
    };

  const implementation: grpc.UntypedServiceImplementation = {
    FetchX509SVID: (call: Stream) => serve(call, 'FetchX509SVID', ['x509-svid', 'x509-bundle'], () => deps.api.x509Svid()),
    FetchX509Bundles: (call: Stream) => serve(call, 'FetchX509Bundles', ['x509-bundle'], () => deps.api.x509Bundles()),
    FetchJWTBundles: (call: Stream) => serve(call, 'FetchJWTBundles', ['jwt-bundle'], () => deps.api.jwtBundles()),
    FetchJWTSVID: unary('FetchJWTSVID', (req: { audience?: string[]; spiffe_id?: string }) => deps.api.jwtSvid(req.audience ?? [], req.spiffe_id ?? '')),
    ValidateJWTSVID: unary('ValidateJWTSVID', (req: { audience?: string; svid?: string }) => {
      const { spiffe_id, claims } = deps.api.validateJwtSvid(req.audience ?? '', req.svid ?? '');
      return { spiffe_id, claims: jsonToStruct(claims as Record<string, JsonValue>) };
    }),
  };
  return {
    definition: workloadApiServiceDefinition(),
    implementation,
    activeStreams: () => streams.size,
    close() {
      for (const end of [...streams]) end();
    },
  };
}
