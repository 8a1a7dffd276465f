/**
 * The agent's ECDS service (src/agent/authz/ecds-service.ts) as a grpc-js binding, served on the SDS socket
 * through startSdsServer's `extraServices`. Only the state-of-the-world stream is implemented: the bootstraps use
 * `api_type: GRPC`; Delta and Fetch answer UNIMPLEMENTED.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { EcdsRequest, EcdsService } from '../agent/authz/ecds-service.js';
import { ecdsServiceDefinition } from './protos.js';
import type { ServiceBinding } from './server.js';

type Duplex = grpc.ServerDuplexStream<EcdsRequest, unknown>;

const unimplemented = (what: string) => ({ code: grpc.status.UNIMPLEMENTED, details: `${what} is not served; use api_type GRPC` });

export function ecdsServiceBinding(service: EcdsService, log: Logger): ServiceBinding {
  const implementation: grpc.UntypedServiceImplementation = {
    StreamExtensionConfigs(call: Duplex) {
      let finished = false;
      const handle = service.openStream({
        send(message) {
          if (!finished) call.write(message);
        },
        end() {
          if (finished) return;
          finished = true;
          call.end();
        },
        fail(message) {
          if (finished) return;
          finished = true;
          call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: message });
        },
      }, call.getPeer());
      call.on('data', (req: EcdsRequest) => {
        try {
          handle.onRequest(req);
        } catch (err) {
          log.error({ err }, 'ECDS request handling failed; closing the stream');
          handle.onClose();
          if (!finished) {
            finished = true;
            call.emit('error', { code: grpc.status.INTERNAL, details: 'internal error' });
          }
        }
      });
      call.on('end', () => {
        handle.onClose();
        if (!finished) {
          finished = true;
          call.end();
        }
      });
      for (const event of ['cancelled', 'error', 'close']) call.on(event, () => handle.onClose());
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
