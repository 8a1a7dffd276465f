/**
 * Envoy's ExtensionConfigDiscoveryService as a grpc-js binding, with the same stream plumbing as SDS; served on the
 * agent's socket beside SDS (the agent's ECDS service, src/agent/authz/ecds-service.ts, is joined to it in
 * src/cli/agent-socket.ts). Only the state-of-the-world stream is implemented: the bootstraps use
 * `api_type: GRPC`; Delta and Fetch answer UNIMPLEMENTED.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { OpenStream } from '../streams.js';
import { ecdsServiceDefinition } from './protos.js';
import { bindDuplex } from './sds-server.js';
import type { ServiceBinding } from './server.js';

const unimplemented = (what: string) => ({ code: grpc.status.UNIMPLEMENTED, details: `${what} is not served; use api_type GRPC` });

/** Binds a service that opens state-of-the-world ECDS streams (proto-loader's object shapes). */
export function ecdsServiceBinding<Req, Res>(service: { openStream: OpenStream<Req, Res> }, log: Logger): ServiceBinding {
  const implementation: grpc.UntypedServiceImplementation = {
    StreamExtensionConfigs(call: grpc.ServerDuplexStream<unknown, unknown>) {
      bindDuplex(call, service.openStream, log, { latestOnly: true });
    },
    DeltaExtensionConfigs(call: grpc.ServerDuplexStream<unknown, unknown>) {
      call.emit('error', unimplemented('DeltaExtensionConfigs'));
    },
    FetchExtensionConfigs(_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
      callback(unimplemented('FetchExtensionConfigs'));
    },
  };
  return { definition: ecdsServiceDefinition(), implementation };
}
