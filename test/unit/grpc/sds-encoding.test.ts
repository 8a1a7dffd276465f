import { describe, expect, it } from 'vitest';
import { SECRET_TYPE_URL, type DiscoveryResponse, type SecretAny } from '../../../src/agent/sds/xds-types.js';
import { sdsServiceDefinition } from '../../../src/grpc/protos.js';
import { sotwResponseEncoder } from '../../../src/grpc/sds-server.js';

const secret = (name: string, pem: string): SecretAny => ({
  '@type': SECRET_TYPE_URL,
  name,
  tls_certificate: { certificate_chain: { inline_bytes: Buffer.from(pem) }, private_key: { inline_bytes: Buffer.from(`key of ${pem}`) } },
});

describe('state-of-the-world responses with each Secret encoded once', () => {
  it('decode exactly as the plain serialization, for one and for several resources, across streams', () => {
    const method = sdsServiceDefinition().StreamSecrets!;
    const encode = sotwResponseEncoder(method);
    const a = secret('default', 'CERT-A');
    const b: SecretAny = { '@type': SECRET_TYPE_URL, name: 'ROOTCA', validation_context: { trusted_ca: { inline_bytes: Buffer.from('ROOTS') } } };
    const responses: DiscoveryResponse[] = [
      { version_info: 'v1', resources: [a], type_url: SECRET_TYPE_URL, nonce: 'n1' },
      { version_info: 'v1', resources: [a], type_url: SECRET_TYPE_URL, nonce: 'n2' }, // another stream: cached bytes
      { version_info: 'v2', resources: [b, a], type_url: SECRET_TYPE_URL, nonce: 'n3' },
      { version_info: '', resources: [], type_url: SECRET_TYPE_URL, nonce: 'n4' },
    ];
    for (const res of responses) {
      expect(method.responseDeserialize(encode(res))).toEqual(method.responseDeserialize(method.responseSerialize(res)));
    }
  });
});
