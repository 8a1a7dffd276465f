/**
 * The gRPC face of the Istio CA API (istio.v1.auth.IstioCertificateService/CreateCertificate). It binds any plain
 * async handler of this shape (src/ca/server.ts makes the CA's; src/cli/ca.ts joins them): calls become
 * (request, CallContext), results and errors become gRPC replies.
 */
import type * as grpc from '@grpc/grpc-js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { caServiceDefinition } from './protos.js';
import { toGrpcStatus } from './errors.js';
import { callContext, type CallContext, type ServiceBinding } from './server.js';
import { structToJson, type JsonValue, type ProtoStruct } from './struct.js';

/** A decoded IstioCertificateRequest. */
export interface CsrRequest {
  /** PEM CSR as sent (untrusted). */
  csr: string;
  /** `validity_duration` in seconds; 0 or negative means "the server's default". */
  validityDurationSeconds: number;
  /** `metadata` Struct as plain JSON ({} when absent); Istio reads `CertSigner` and `ImpersonatedIdentity`. */
  metadata: Record<string, JsonValue>;
}


interface WireRequest {
  csr?: string;
  validity_duration?: number | string;
  metadata?: ProtoStruct | null;
}

/**
 * Binds `createCertificate` as IstioCertificateService for startGrpcServer. It signs a CSR for the authenticated
 * caller and returns `cert_chain` (leaf first, root bundle last); it throws a CitadelError to answer with its gRPC
 * status and safe message, anything else becomes INTERNAL.
 */
export function caServiceBinding(deps: { createCertificate: (req: CsrRequest, ctx: CallContext) => Promise<string[]>; log?: Logger }): ServiceBinding {
  const implementation: grpc.UntypedServiceImplementation = {
    CreateCertificate(call: grpc.ServerUnaryCall<WireRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const wire = call.request ?? {};
      const req: CsrRequest = {
        csr: wire.csr ?? '',
        validityDurationSeconds: Number(wire.validity_duration ?? 0) || 0,
        metadata: structToJson(wire.metadata),
      };
      let ctx: CallContext;
      try {
        ctx = callContext(call);
      } catch (err) {
        deps.log?.error({ err }, 'cannot read call context');
        callback(toGrpcStatus(err));
        return;
      }
      deps.createCertificate(req, ctx).then(
        (chain) => callback(null, { cert_chain: chain }),
        (err: unknown) => {
          // CitadelErrors are the handler's business (it logs and counts them); anything else is a bug.
          if (!(err instanceof CitadelError)) deps.log?.error({ err, peer: ctx.peerAddress }, 'CreateCertificate failed unexpectedly');
          callback(toGrpcStatus(err));
        },
      );
    },
  };
  return { definition: caServiceDefinition(), implementation };
}
