/**
 * The protobuf definitions citadel speaks: our Istio CA API (proto/security/v1alpha1/ca.proto), Envoy's SDS and ECDS (from
 * @grpc/grpc-js-xds's bundled protos), the SPIFFE Workload API (proto/spiffe/workload) and citadel's JWT-SVID API
 * (proto/citadel/v1), loaded from descriptors generated from those files at build time (proto/descriptors,
 * `npm run protos`). Each is loaded once per process and cached.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

/** Full gRPC method paths, for logs and tests. */
export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';
export const SDS_SERVICE_NAME = 'envoy.service.secret.v3.SecretDiscoveryService';
/** The SPIFFE proto has no package: methods are /SpiffeWorkloadAPI/<Method>. */
export const WORKLOAD_API_SERVICE_NAME = 'SpiffeWorkloadAPI';
export const JWT_SVID_SERVICE_NAME = 'citadel.v1.JwtSvidService';
export const ECDS_SERVICE_NAME = 'envoy.service.extension.v3.ExtensionConfigDiscoveryService';

// Decoded messages as @grpc/proto-loader shapes them with keepCase (the descriptors keep the .proto field names):
// int64 becomes a JS number (validity_duration in seconds fits easily); enums as strings; default values are
// filled in so handlers see '' and [] rather than undefined; oneofs add a virtual field naming the set member.
const TO_OBJECT: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** A message type's codec (the part of proto-loader's MessageTypeDefinition that anything here uses). */
export interface MessageCodec {
  readonly format: 'Protocol Buffer 3 DescriptorProto';
  serialize(value: unknown): Buffer;
  deserialize(bytes: Buffer): unknown;
}

/** Services (grpc-js definitions) and message codecs by fully qualified name. */
export type PackageDefinition = Record<string, grpc.ServiceDefinition | MessageCodec>;

/** The repository root: the nearest ancestor of this file holding proto/descriptors (works from src/ and dist/src/). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'proto', 'descriptors'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('citadel: proto/descriptors not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

function codec(type: protobuf.Type): MessageCodec {
  return {
    format: 'Protocol Buffer 3 DescriptorProto',
    // fromObject also turns `{ '@type': url, ...fields }` into a google.protobuf.Any (protobufjs's Any wrapper).
    serialize: (value) => Buffer.from(type.encode(type.fromObject(value as Record<string, unknown>)).finish()),
    deserialize: (bytes) => type.toObject(type.decode(bytes), TO_OBJECT),
  };
}

/**
 * A descriptor generated from the .proto files at build time (scripts/proto-descriptors.ts): only the messages the
 * services reach, so nothing is parsed at start. Method definitions are made here with the (de)serializers
 * @grpc/proto-loader's fromJSON makes, without its descriptor-of-descriptors (FileDescriptorProtos for reflection,
 * which nothing here serves): that loader and its descriptor.proto cost the agent ~60 ms of CPU at start.
 */
function loadDescriptor(file: string): PackageDefinition {
  const json = JSON.parse(readFileSync(join(packageRoot(), 'proto', 'descriptors', file), 'utf8')) as protobuf.INamespace;
  const root = protobuf.Root.fromJSON({ nested: json.nested ?? {} });
  root.resolveAll();
  const def: PackageDefinition = {};
  const walk = (ns: protobuf.NamespaceBase, prefix: string) => {
    for (const obj of ns.nestedArray) {
      const name = prefix ? `${prefix}.${obj.name}` : obj.name;
      if (obj instanceof protobuf.Service) {
        const service: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
        for (const m of obj.methodsArray) {
          const req = codec(m.resolvedRequestType!);
          const res = codec(m.resolvedResponseType!);
          service[m.name] = {
            path: `/${name}/${m.name}`,
            requestStream: !!m.requestStream,
            responseStream: !!m.responseStream,
            requestSerialize: req.serialize,
            requestDeserialize: req.deserialize,
            responseSerialize: res.serialize,
            responseDeserialize: res.deserialize,
            originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
          };
        }
        def[name] = service;
      } else if (obj instanceof protobuf.Type) {
        def[name] = codec(obj);
        walk(obj, name);
      } else if (obj instanceof protobuf.Namespace) {
        walk(obj, name);
      }
    }
  };
  walk(root, '');
  return def;
}

let caDefinition: PackageDefinition | undefined;
let sdsDefinition: PackageDefinition | undefined;
let workloadApiDefinition: PackageDefinition | undefined;
let jwtSvidDefinition: PackageDefinition | undefined;
let ecdsDefinition: PackageDefinition | undefined;

/** The Istio CA API (package istio.v1.auth), from proto/security/v1alpha1/ca.proto. */
export function caPackageDefinition(): PackageDefinition {
  caDefinition ??= loadDescriptor('ca.json');
  return caDefinition;
}

/**
 * The SDS service plus the Secret message, from Envoy's protos (@grpc/grpc-js-xds). Both are in the same
 * descriptor so that an Any written as `{ '@type': SECRET_TYPE_URL, ...fields }` is encoded with the Secret type.
 */
export function sdsPackageDefinition(): PackageDefinition {
  sdsDefinition ??= loadDescriptor('sds.json');
  return sdsDefinition;
}

/** The SPIFFE Workload API (no package: service SpiffeWorkloadAPI), from proto/spiffe/workload/workload.proto. */
export function workloadApiPackageDefinition(): PackageDefinition {
  workloadApiDefinition ??= loadDescriptor('workload.json');
  return workloadApiDefinition;
}

/** The JWT-SVID API (package citadel.v1), from proto/citadel/v1/jwt.proto. */
export function jwtSvidPackageDefinition(): PackageDefinition {
  jwtSvidDefinition ??= loadDescriptor('jwt.json');
  return jwtSvidDefinition;
}

/**
 * The ECDS service plus the messages its resources carry (TypedExtensionConfig wrapping the HTTP RBAC
 * filter config), loaded in one call so that Anys written as `{ '@type': ..., ...fields }` encode with their types.
 */
export function ecdsPackageDefinition(): PackageDefinition {
  ecdsDefinition ??= loadDescriptor('ecds.json');
  return ecdsDefinition;
}

const SERVICE_METHODS = ['CreateCertificate', 'StreamSecrets', 'StreamExtensionConfigs', 'FetchX509SVID', 'CreateJwtSvid'];

function serviceDefinition(def: PackageDefinition, name: string): grpc.ServiceDefinition {
  const service = def[name];
  if (!service || !SERVICE_METHODS.some((m) => m in service)) {
    throw new Error(`citadel: service ${name} missing from the loaded protos`);
  }
  return service as grpc.ServiceDefinition;
}

/** Service definition of istio.v1.auth.IstioCertificateService, for server.addService / makeGenericClientConstructor. */
export function caServiceDefinition(): grpc.ServiceDefinition {
  return serviceDefinition(caPackageDefinition(), CA_SERVICE_NAME);
}

/** Service definition of envoy.service.secret.v3.SecretDiscoveryService. */
export function sdsServiceDefinition(): grpc.ServiceDefinition {
  return serviceDefinition(sdsPackageDefinition(), SDS_SERVICE_NAME);
}

/** Service definition of envoy.service.extension.v3.ExtensionConfigDiscoveryService. */
export function ecdsServiceDefinition(): grpc.ServiceDefinition {
  return serviceDefinition(ecdsPackageDefinition(), ECDS_SERVICE_NAME);
}

/** Client constructor for ECDS; used by tests that play Envoy. */
export function ecdsClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(ecdsServiceDefinition(), 'ExtensionConfigDiscoveryService');
}

/** Client constructor for the CA API (callers pass address, credentials, options). */
export function caClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(caServiceDefinition(), 'IstioCertificateService');
}

/** Client constructor for SDS; used by tests that play Envoy. */
export function sdsClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(sdsServiceDefinition(), 'SecretDiscoveryService');
}

/** Service definition of SpiffeWorkloadAPI. */
export function workloadApiServiceDefinition(): grpc.ServiceDefinition {
  return serviceDefinition(workloadApiPackageDefinition(), WORKLOAD_API_SERVICE_NAME);
}

/** Service definition of citadel.v1.JwtSvidService. */
export function jwtSvidServiceDefinition(): grpc.ServiceDefinition {
  return serviceDefinition(jwtSvidPackageDefinition(), JWT_SVID_SERVICE_NAME);
}

/** Client constructor for the Workload API; used by tests that play an application. */
export function workloadApiClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(workloadApiServiceDefinition(), 'SpiffeWorkloadAPI');
}

/** Client constructor for the JWT-SVID API (the agent's side). */
export function jwtSvidClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(jwtSvidServiceDefinition(), 'JwtSvidService');
}
