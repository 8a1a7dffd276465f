/**
 * The gRPC face of citadel.v1.JwtSvidService/CreateJwtSvid (proto/citadel/v1/jwt.proto), served beside the Istio
 * CA API on the same port and credentials. It binds any plain async handler of this shape, as for CreateCertificate.
 */
import type * as grpc from '@grpc/grpc-js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { toGrpcStatus } from './errors.js';
import { jwtSvidServiceDefinition } from './protos.js';
import { callContext, type CallContext, type ServiceBinding } from './server.js';

/** A decoded JwtSvidRequest. */
export interface JwtSvidCallRequest {
  audience: string[];
  /** Seconds; 0 or negative means the server's default. */
  validityDurationSeconds: number;
}


interface WireRequest {
  audience?: string[];
  validity_duration?: number | string;
}

/**
 * Binds `createJwtSvid` as citadel.v1.JwtSvidService for startGrpcServer. It returns the token for the
 * authenticated caller, or throws a CitadelError to answer with its status.
 */
export function jwtSvidServiceBinding(deps: { createJwtSvid: (req: JwtSvidCallRequest, ctx: CallContext) => Promise<string>; log?: Logger }): ServiceBinding {
  const implementation: grpc.UntypedServiceImplementation = {
    CreateJwtSvid(call: grpc.ServerUnaryCall<WireRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const wire = call.request ?? {};
      const req: JwtSvidCallRequest = { audience: [...(wire.audience ?? [])], validityDurationSeconds: Number(wire.validity_duration ?? 0) || 0 };
      let ctx: CallContext;
      try {
        ctx = callContext(call);
      } catch (err) {
        callback(toGrpcStatus(err));
        return;
      }
      deps.createJwtSvid(req, ctx).then(
        (token) => callback(null, { token }),
        (err: unknown) => {
          if (!(err instanceof CitadelError)) deps.log?.error({ err, peer: ctx.peerAddress }, 'CreateJwtSvid failed unexpectedly');
          callback(toGrpcStatus(err));
        },
      );
    },
  };
  return { definition: jwtSvidServiceDefinition(), implementation };
}
