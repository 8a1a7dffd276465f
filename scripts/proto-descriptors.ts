/**
 * Generates the descriptors citadel loads at run time (proto/descriptors/*.json) from the .proto files, which stay
 * the source of truth: our Istio CA API (proto/security) and Envoy's SDS and ECDS (the protos @grpc/grpc-js-xds ships).
 * Parsing Envoy's proto tree at every start cost the agent ~150 ms of CPU and ~9 MiB; the generated files hold
 * only the messages the services reach (and Secret, which travels inside an Any), in protobufjs' JSON form that
 * @grpc/proto-loader's fromJSON reads. Envoy's Node keeps only the fields the agent reads: Envoy sends its whole
 * Node (every compiled-in extension, 61 KB from Envoy 1.40) on every request, ACKs included, and decoding it in
 * full made about 350 KB of objects per ACK; fields a descriptor lacks are skipped on decode without allocating. `npm run protos` rewrites them; a unit test fails when they are stale.
 * Never edit the generated files by hand.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** The repository root: the nearest ancestor holding proto/security (this file runs from scripts/ and dist/scripts/). */
const ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'proto', 'security'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('proto/security not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
})();

/** The four include directories of Envoy's protos shipped inside @grpc/grpc-js-xds. */
function envoyIncludeDirs(): string[] {
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => resolve(root, 'deps', d));
}

export interface DescriptorSpec {
  /** File name under proto/descriptors. */
  readonly file: string;
  readonly includeDirs: readonly string[];
  readonly protos: readonly string[];
  /** Fully qualified services and messages to keep, with everything they reach. */
  readonly roots: readonly string[];
  /** Messages of which only these fields are kept (the others are skipped on the wire), by fully qualified name. */
  readonly onlyFields?: Readonly<Record<string, readonly string[]>>;
}

/** The agent logs node.id and reads nothing else of Envoy's Node (src/agent/sds/xds-types.ts EnvoyNode). */
const ENVOY_NODE_FIELDS = { 'envoy.config.core.v3.Node': ['id', 'cluster'] };

export function descriptorSpecs(): DescriptorSpec[] {
  return [
    { file: 'ca.json', includeDirs: [join(ROOT, 'proto')], protos: ['security/v1alpha1/ca.proto'], roots: ['istio.v1.auth.IstioCertificateService'] },
    { file: 'workload.json', includeDirs: [join(ROOT, 'proto')], protos: ['spiffe/workload/workload.proto'], roots: ['SpiffeWorkloadAPI'] },
    { file: 'jwt.json', includeDirs: [join(ROOT, 'proto')], protos: ['citadel/v1/jwt.proto'], roots: ['citadel.v1.JwtSvidService'] },
    {
      file: 'sds.json',
      includeDirs: envoyIncludeDirs(),
      protos: ['envoy/service/secret/v3/sds.proto', 'envoy/extensions/transport_sockets/tls/v3/secret.proto'],
      roots: ['envoy.service.secret.v3.SecretDiscoveryService', 'envoy.extensions.transport_sockets.tls.v3.Secret'],
      onlyFields: ENVOY_NODE_FIELDS,
    },
    {
      file: 'ecds.json',
      includeDirs: envoyIncludeDirs(),
      protos: ['envoy/service/extension/v3/config_discovery.proto', 'envoy/config/core/v3/extension.proto', 'envoy/extensions/filters/http/rbac/v3/rbac.proto'],
      // The RBAC filter config travels inside TypedExtensionConfig's Any, so it is a root of its own.
      roots: ['envoy.service.extension.v3.ExtensionConfigDiscoveryService', 'envoy.config.core.v3.TypedExtensionConfig', 'envoy.extensions.filters.http.rbac.v3.RBAC'],
      onlyFields: ENVOY_NODE_FIELDS,
    },
  ];
}

type Json = { [key: string]: unknown };

/** Every type and enum (fully qualified, no leading dot) reachable from `roots`. */
function reachable(root: protobuf.Root, roots: readonly string[], onlyFields: DescriptorSpec['onlyFields'] = {}): Set<string> {
  const seen = new Set<string>();
  const visit = (obj: protobuf.ReflectionObject | null | undefined) => {
    if (!obj) return;
    const name = obj.fullName.slice(1);
    if (seen.has(name)) return;
    seen.add(name);
    // The parents of a nested type must stay so that its name resolves.
    if (obj.parent instanceof protobuf.Type) visit(obj.parent);
    if (obj instanceof protobuf.Service) {
      for (const m of obj.methodsArray) {
        m.resolve();
        visit(m.resolvedRequestType);
        visit(m.resolvedResponseType);
      }
    } else if (obj instanceof protobuf.Type) {
      const only = onlyFields[name];
      for (const f of obj.fieldsArray) {
        if (only && !only.includes(f.name)) continue;
        f.resolve();
        visit(f.resolvedType);
      }
    }
  };
  for (const name of roots) visit(root.lookup(name));
  return seen;
}

/** Drops custom (extension) options: they name types we do not keep and change nothing on the wire. */
function plainOptions(options: unknown): Json | undefined {
  if (!options || typeof options !== 'object') return undefined;
  const kept = Object.entries(options as Json).filter(([k]) => !k.startsWith('('));
  return kept.length ? Object.fromEntries(kept) : undefined;
}

/** The JSON of `nested`, keeping only `keep` (and the namespaces that hold them), sorted for stable output. */
function prune(nested: Json | undefined, prefix: string, keep: Set<string>, onlyFields: DescriptorSpec['onlyFields'] = {}): Json | undefined {
  if (!nested) return undefined;
  const out: Json = {};
  for (const name of Object.keys(nested).sort()) {
    const full = prefix ? `${prefix}.${name}` : name;
    const node = nested[name] as Json;
    const isType = 'fields' in node || 'values' in node || 'methods' in node;
    const children = prune(node.nested as Json | undefined, full, keep, onlyFields);
    const only = onlyFields[full];
    if (isType && !keep.has(full)) continue;
    if (!isType && !children) continue;
    const copy: Json = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === 'nested' || k === 'comment') continue;
      if (k === 'options') {
        const o = plainOptions(v);
        if (o) copy.options = o;
      } else if (k === 'fields' || k === 'methods') {
        const members: Json = {};
        for (const [fname, f] of Object.entries(v as Json)) {
          if (k === 'fields' && only && !only.includes(fname)) continue;
          const { options, comment: _comment, ...rest } = f as Json;
          const o = plainOptions(options);
          members[fname] = o ? { ...rest, options: o } : rest;
        }
        copy[k] = members;
      } else if (k === 'values') {
        copy[k] = v;
      } else if (k === 'oneofs' && only) {
        // A oneof lists its fields by name: keep those that remain, and the oneof only if any does.
        const oneofs = Object.entries(v as Record<string, { oneof: string[] }>)
          .map(([oname, o]) => [oname, { ...o, oneof: o.oneof.filter((f) => only.includes(f)) }] as const)
          .filter(([, o]) => o.oneof.length > 0);
        if (oneofs.length) copy[k] = Object.fromEntries(oneofs);
      } else if (k !== 'valuesOptions' && k !== 'comments') {
        copy[k] = v;
      }
    }
    if (children) copy.nested = children;
    out[name] = copy;
  }
  return Object.keys(out).length ? out : undefined;
}

let descriptorAdded = false;

/** google/protobuf/descriptor.proto (imported by the option annotations) from protobufjs' JSON, as proto-loader does. */
function addDescriptorProto(): void {
  if (descriptorAdded) return;
  descriptorAdded = true;
  const require = createRequire(import.meta.url);
  const json = require('protobufjs/google/protobuf/descriptor.json') as { nested: { google: { nested: { protobuf: { nested: Record<string, protobuf.INamespace> } } } } };
  protobuf.common('descriptor', json.nested.google.nested.protobuf.nested);
}

/** The generated text of one descriptor file. */
export function generateDescriptor(spec: DescriptorSpec): string {
  addDescriptorProto();
  const root = new protobuf.Root();
  const fallback = root.resolvePath.bind(root);
  // As proto-loader resolves imports: the first include directory that has the file; otherwise protobufjs' own
  // copies of the well-known types (google/protobuf/*).
  root.resolvePath = (origin, target) => {
    for (const dir of spec.includeDirs) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return fallback(origin, target);
  };
  root.loadSync([...spec.protos], { keepCase: true, alternateCommentMode: false });
  root.resolveAll();
  const keep = reachable(root, spec.roots, spec.onlyFields);
  const json = { nested: prune((root.toJSON() as Json).nested as Json, '', keep, spec.onlyFields) };
  const header = { '//': `Generated by scripts/proto-descriptors.ts from ${spec.protos.join(', ')}; do not edit (npm run protos).` };
  return `${JSON.stringify({ ...header, ...json }, null, 1)}\n`;
}

/** proto/descriptors/<file> */
export function descriptorPath(file: string): string {
  return join(ROOT, 'proto', 'descriptors', file);
}
