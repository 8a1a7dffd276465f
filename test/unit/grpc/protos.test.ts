import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { descriptorPath, descriptorSpecs, generateDescriptor } from '../../../scripts/proto-descriptors.js';
import { SECRET_TYPE_URL } from '../../../src/agent/sds/xds-types.js';
import { caPackageDefinition, caServiceDefinition, sdsPackageDefinition, sdsServiceDefinition } from '../../../src/grpc/protos.js';

describe('protos', () => {
  it('loads the Istio CA API with Istio names and field numbers', () => {
    const def = caPackageDefinition();
    expect(caPackageDefinition()).toBe(def); // cached
    const method = caServiceDefinition().CreateCertificate!;
    expect(method.path).toBe('/istio.v1.auth.IstioCertificateService/CreateCertificate');
    const bytes = method.requestSerialize({ csr: 'C', validity_duration: 3600 });
    // csr = field 1 (tag 0x0a), validity_duration = field 3 varint (tag 0x18).
    expect(bytes[0]).toBe(0x0a);
    expect(bytes.subarray(3)).toEqual(Buffer.from([0x18, 0x90, 0x1c]));
    const res = method.responseDeserialize(Buffer.from([0x0a, 0x01, 0x61, 0x0a, 0x01, 0x62])) as { cert_chain: string[] };
    expect(res.cert_chain).toEqual(['a', 'b']);
    expect(def['istio.v1.auth.IstioCertificateService']).toBe(caServiceDefinition());
  });

  it('loads SDS and encodes a Secret inside an Any', () => {
    const svc = sdsServiceDefinition();
    expect(sdsPackageDefinition()).toBe(sdsPackageDefinition());
    expect(Object.keys(svc).sort()).toEqual(['DeltaSecrets', 'FetchSecrets', 'StreamSecrets']);
    expect(svc.StreamSecrets!.path).toBe('/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets');
    const stream = svc.StreamSecrets!;
    const wire = stream.responseSerialize({
      version_info: 'v1',
      type_url: SECRET_TYPE_URL,
      nonce: 'n1',
      resources: [{ '@type': SECRET_TYPE_URL, name: 'default', tls_certificate: { certificate_chain: { inline_bytes: Buffer.from('CERT') }, private_key: { inline_bytes: Buffer.from('KEY') } } }],
    });
    const back = stream.responseDeserialize(wire) as { resources: Array<{ type_url: string; value: Buffer }> };
    expect(back.resources[0]!.type_url).toBe(SECRET_TYPE_URL);
    expect(back.resources[0]!.value.includes(Buffer.from('CERT'))).toBe(true);
    expect(back.resources[0]!.value.includes(Buffer.from('default'))).toBe(true);
  });

  it.each(descriptorSpecs().map((spec) => [spec.file, spec] as const))('proto/descriptors/%s is what the .proto files generate (npm run protos)', (_file, spec) => {
    expect(readFileSync(descriptorPath(spec.file), 'utf8')).toBe(generateDescriptor(spec));
  });
});
