/**
 * The agent's ECDS service (src/agent/authz/ecds-service.ts) as a grpc-js binding, served on the SDS socket
 * through startSdsServer's `extraServices`, with the same stream plumbing as SDS. Only the state-of-the-world
 * stream is implemented: the bootstraps use `api_type: GRPC`; Delta and Fetch answer UNIMPLEMENTED.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { EcdsService } from '../agent/authz/ecds-service.js';
import { ecdsServiceDefinition } from './protos.js';
import { bindDuplex } from './sds-server.js';
import type { ServiceBinding } from './server.js';

const unimplemented = (what: string) => ({ code: grpc.status.UNIMPLEMENTED, details: `${what} is not served; use api_type GRPC` });

export function ecdsServiceBinding(service: EcdsService, log: Logger): ServiceBinding {
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
