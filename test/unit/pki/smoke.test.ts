import { describe, expect, it } from 'vitest';
import { createCsr, generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, parseCsr, verifyChain, buildResponseChain, checkWorkloadSvid } from '../../../src/pki/index.js';

describe('smoke', () => {
  it('issues a chain', async () => {
    const now = Date.now();
    const root = await generateKeyPair('ecdsa-p256');
    const rootCert = parseCertificate(issueCaCertificate({ key: root.privateKey, organization: 'cluster.local', commonName: 'Root', trustDomain: 'cluster.local', ttlMs: 864e5 * 365, now }).pem);
    const inter = await generateKeyPair('rsa-2048');
    const interCert = parseCertificate(issueCaCertificate({ key: inter.privateKey, signer: { cert: rootCert, key: root.privateKey }, organization: 'cluster.local', ttlMs: 864e5 * 30, now }).pem);
    const wl = await generateKeyPair('ecdsa-p384');
    const csr = parseCsr(createCsr({ key: wl.privateKey, spiffeId: 'spiffe://cluster.local/ns/a/sa/b' }));
    expect(csr.uris).toEqual(['spiffe://cluster.local/ns/a/sa/b']);
    const leaf = issueWorkloadCertificate({ signer: { cert: interCert, key: inter.privateKey }, publicKey: csr.publicKey, spiffeId: csr.uris[0]!, ttlMs: 3600e3, now });
    const leafCert = parseCertificate(leaf.pem);
    expect(checkWorkloadSvid(leafCert)).toBe('spiffe://cluster.local/ns/a/sa/b');
    const path = verifyChain({ leaf: leafCert, intermediates: [interCert], roots: [rootCert], now });
    expect(path.length).toBe(3);
    expect(rootCert.selfSigned).toBe(true);
    expect(buildResponseChain(leaf.pem, [interCert.pem], rootCert.pem).length).toBe(3);
  });
});
