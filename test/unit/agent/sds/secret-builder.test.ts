import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildTlsCertificateSecret, buildValidationContextSecret, describeSecret } from '../../../../src/agent/sds/secret-builder.js';
import { SECRET_TYPE_URL } from '../../../../src/agent/sds/xds-types.js';
import { makeCa } from '../../grpc/tls-fixtures.js';

const ID = 'spiffe://cluster.local/ns/app/sa/web';

describe('Envoy secret builder', () => {
  it('builds a tls_certificate Secret Any whose chain and key openssl accepts as a pair', async () => {
    const ca = await makeCa();
    const leaf = await ca.issue({ spiffeId: ID });
    const secret = buildTlsCertificateSecret('default', leaf.certPem + ca.pem, leaf.keyPem, Date.now());
    expect(secret['@type']).toBe(SECRET_TYPE_URL);
    expect(secret.name).toBe('default');
    expect(secret.validation_context).toBeUndefined();
    const chain = secret.tls_certificate!.certificate_chain.inline_bytes.toString();
    const key = secret.tls_certificate!.private_key.inline_bytes.toString();
    const dir = mkdtempSync(join(tmpdir(), 'sds-b-'));
    try {
      writeFileSync(join(dir, 'chain.pem'), chain);
      writeFileSync(join(dir, 'key.pem'), key);
      writeFileSync(join(dir, 'root.pem'), ca.pem);
      const certPub = execFileSync('openssl', ['x509', '-in', join(dir, 'chain.pem'), '-noout', '-pubkey']).toString();
      const keyPub = execFileSync('openssl', ['pkey', '-in', join(dir, 'key.pem'), '-pubout']).toString();
      expect(certPub).toBe(keyPub);
      // Leaf first: openssl reads the first block, which verifies against the root.
      expect(execFileSync('openssl', ['verify', '-CAfile', join(dir, 'root.pem'), join(dir, 'chain.pem')]).toString()).toContain('OK');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(describeSecret(secret)).toEqual({ name: 'default', kind: 'tls_certificate', pem: chain });
  });

  it('refuses a key that is not the leaf key, an expired leaf, and garbage', async () => {
    const ca = await makeCa();
    const a = await ca.issue({ spiffeId: ID });
    const b = await ca.issue({ spiffeId: ID });
    expect(() => buildTlsCertificateSecret('default', a.certPem, b.keyPem, Date.now())).toThrow(expect.objectContaining({ code: 'KEY_MISMATCH' }));
    // Key of the second certificate in the chain (the CA's position) does not count: only the leaf's does.
    expect(() => buildTlsCertificateSecret('default', b.certPem + a.certPem, a.keyPem, Date.now())).toThrow(expect.objectContaining({ code: 'KEY_MISMATCH' }));
    expect(() => buildTlsCertificateSecret('default', a.certPem, a.keyPem, Date.now() + 2 * 3600_000)).toThrow(expect.objectContaining({ code: 'CERT_EXPIRED' }));
    expect(() => buildTlsCertificateSecret('default', 'junk', a.keyPem, Date.now())).toThrow(expect.objectContaining({ name: 'CitadelError' }));
    expect(() => buildTlsCertificateSecret('default', a.certPem, 'junk', Date.now())).toThrow(expect.objectContaining({ name: 'CitadelError' }));
  });

  it('builds a validation_context from a bundle, keeps expired roots beside a valid one, refuses empty or all-expired', async () => {
    const ca = await makeCa();
    const other = await makeCa('other');
    const secret = buildValidationContextSecret('ROOTCA', ca.pem + other.pem, Date.now());
    expect(secret['@type']).toBe(SECRET_TYPE_URL);
    expect(secret.tls_certificate).toBeUndefined();
    const bundle = secret.validation_context!.trusted_ca.inline_bytes.toString();
    expect(bundle).toContain(ca.pem.trim());
    expect(bundle).toContain(other.pem.trim());
    // Roots in the fixture live 24 h from 6 h ago: at +20 h every one has expired.
    expect(() => buildValidationContextSecret('ROOTCA', ca.pem, Date.now() + 20 * 3600_000)).toThrow(expect.objectContaining({ code: 'CERT_EXPIRED' }));
    expect(() => buildValidationContextSecret('ROOTCA', '', Date.now())).toThrow(expect.objectContaining({ name: 'CitadelError' }));
    expect(() => buildValidationContextSecret('ROOTCA', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', Date.now())).toThrow(expect.objectContaining({ name: 'CitadelError' }));
  });
});
