/**
 * The agent's SDS layer: Envoy secret builder (pure), secret store + file-backed resolvers, and the protocol logic.
 * The gRPC/Unix-socket server around it is src/grpc/sds-server.ts (`startSdsServer`).
 */
export { SECRET_TYPE_URL } from './xds-types.js';
export type { SecretAny, DiscoveryRequest, DiscoveryResponse, DeltaDiscoveryRequest, DeltaDiscoveryResponse } from './xds-types.js';
export { buildTlsCertificateSecret, buildValidationContextSecret, describeSecret } from './secret-builder.js';
export { SecretStore } from './secret-store.js';
export type { ResolvedSecret, SecretEntry, SecretListener, SecretResolver, SecretSink, SecretSource } from './secret-store.js';
export { FILE_CERT_PREFIX, FILE_ROOT_PREFIX, fileSecretResolver, parseFileResourceName } from './file-resolver.js';
export { createSdsService } from './service.js';
export type { ResponseSink, SdsService, SdsServiceDeps, StreamHandle } from './service.js';
export { noopSdsMetrics, prometheusSdsMetrics } from './metrics.js';
export type { SdsApi, SdsMetrics } from './metrics.js';
