/**
 * The xDS messages the SDS service reads and writes, in proto-loader's object shape (keepCase, defaults, oneofs):
 * only the fields citadel uses. Kept free of @grpc so the protocol logic stays a pure translation layer.
 */

/** Type URL of envoy.extensions.transport_sockets.tls.v3.Secret: on every response and every Any inside it. */
export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

/** google.rpc.Status as Envoy sends it in `error_detail` (a NACK). */
export interface RpcStatus {
  code?: number;
  message?: string;
}

export interface EnvoyNode {
  id?: string;
  cluster?: string;
}

export interface DiscoveryRequest {
  version_info?: string;
  node?: EnvoyNode | null;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: RpcStatus | null;
}

/** A google.protobuf.Any holding an Envoy Secret, written the way proto-loader encodes it. */
export interface SecretAny {
  '@type': typeof SECRET_TYPE_URL;
  name: string;
  tls_certificate?: {
    certificate_chain: { inline_bytes: Buffer };
    private_key: { inline_bytes: Buffer };
  };
  validation_context?: {
    trusted_ca: { inline_bytes: Buffer };
    /** PEM CRLs; Envoy then checks every CA of a peer's chain against them (CRL_CHECK_ALL). */
    crl?: { inline_bytes: Buffer };
  };
}

export interface DiscoveryResponse {
  version_info: string;
  resources: SecretAny[];
  type_url: string;
  nonce: string;
}

export interface DeltaDiscoveryRequest {
  node?: EnvoyNode | null;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: RpcStatus | null;
}

export interface DeltaResource {
  name: string;
  version: string;
  resource: SecretAny;
}

export interface DeltaDiscoveryResponse {
  system_version_info: string;
  resources: DeltaResource[];
  type_url: string;
  removed_resources: string[];
  nonce: string;
}
