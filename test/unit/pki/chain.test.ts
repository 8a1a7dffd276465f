import { generateKeyPairSync } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  buildResponseChain,
  checkWorkloadSvid,
  generateKeyPair,
  issueCaCertificate,
  issueWorkloadCertificate,
  parseCertificate,
  parseCertificates,
  splitPem,
  verifyChain,
  type ParsedCertificate,
  type Signer,
} from '../../../src/pki/index.js';
import { DAY, HOUR, NOW, expectCode, makeCa } from './helpers.js';
import { openssl, opensslOk, scratch } from './openssl.js';

const tmp = scratch();
const ID = 'spiffe://cluster.local/ns/default/sa/web';

/** A tiny openssl CA, to make certificates our issuer refuses to make (non-CA issuers, long chains...). */
const CONFIG = `
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca_pathlen0]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca_no_certsign]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
[not_ca]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyCertSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = critical,URI:spiffe://ext.example/ns/a/sa/b
[leaf_unknown_critical]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectAltName = critical,URI:spiffe://ext.example/ns/a/sa/b
1.3.6.1.4.1.55555.1 = critical,ASN1:NULL
[leaf_two_uris]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectAltName = critical,URI:spiffe://ext.example/a,URI:spiffe://ext.example/b
[leaf_certsign]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyCertSign
subjectAltName = critical,URI:spiffe://ext.example/a
[leaf_eku_server_only]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = critical,URI:spiffe://ext.example/a
[leaf_no_path]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectAltName = critical,URI:spiffe://ext.example
[leaf_san_not_critical]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectAltName = URI:spiffe://ext.example/a
`;

let serial = 1;
interface OsslCert {
  pem: string;
  path: string;
  keyPath: string;
  cert: ParsedCertificate;
}

function osslKey(name: string): string {
  return tmp.file(`${name}.key`, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
}

/** Self-signed (no issuer) or issued by `issuer`, with the extensions of `section` (none: a v1 certificate). */
function ossl(name: string, subject: string, section: string | undefined, issuer?: OsslCert, days = 30): OsslCert {
  const cnf = tmp.file('openssl.cnf', CONFIG);
  const keyPath = osslKey(name);
  const csr = tmp.file(`${name}.csr`, opensslOk(['req', '-new', '-key', keyPath, '-subj', subject, '-config', cnf]));
  const path = tmp.file(`${name}.pem`, '');
  const args = ['x509', '-req', '-in', csr, '-days', String(days), '-set_serial', String(serial++), '-out', path];
  if (issuer) args.push('-CA', issuer.path, '-CAkey', issuer.keyPath);
  else args.push('-signkey', keyPath);
  if (section) args.push('-extfile', cnf, '-extensions', section);
  opensslOk(args);
  const pem = opensslOk(['x509', '-in', path]);
  return { pem, path, keyPath, cert: parseCertificate(pem) };
}

describe('verifyChain', () => {
  let root: Signer;
  let intermediate: Signer;
  let leaf: ParsedCertificate;
  beforeAll(async () => {
    ({ root, intermediate } = await makeCa('ecdsa-p256'));
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    leaf = parseCertificate(issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: DAY, now: NOW }).pem);
  });

  it('returns the path leaf, intermediate, root', () => {
    const path = verifyChain({ leaf, intermediates: [intermediate.cert], roots: [root.cert], now: NOW });
    expect(path.map((c) => c.subject)).toEqual(['', 'O=cluster.local, CN=Intermediate CA', 'O=cluster.local, CN=Root CA']);
  });

  it('finds the right root in a bundle of several (root rotation) and ignores unrelated intermediates', async () => {
    const other = await makeCa('rsa-2048');
    const path = verifyChain({ leaf, intermediates: [other.intermediate.cert, intermediate.cert], roots: [other.root.cert, root.cert], now: NOW });
    expect(path[2]).toBe(root.cert);
  });

  it('accepts a leaf signed directly by the root, and a root checked against itself', async () => {
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const direct = parseCertificate(issueWorkloadCertificate({ signer: root, publicKey, spiffeId: ID, ttlMs: DAY, now: NOW }).pem);
    expect(verifyChain({ leaf: direct, intermediates: [], roots: [root.cert], now: NOW })).toHaveLength(2);
    expect(verifyChain({ leaf: root.cert, intermediates: [], roots: [root.cert], now: NOW })).toEqual([root.cert]);
  });

  it('fails without the intermediate or with the wrong root (CHAIN_INVALID)', async () => {
    const other = await makeCa('ecdsa-p256');
    expectCode(() => verifyChain({ leaf, intermediates: [], roots: [root.cert], now: NOW }), 'CHAIN_INVALID', /no path/);
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [other.root.cert], now: NOW }), 'CHAIN_INVALID');
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [], now: NOW }), 'CHAIN_INVALID', /no trusted roots/);
  });

  it('fails when an issuer with the same name has another key (signature check)', async () => {
    const impostorKeys = await generateKeyPair('ecdsa-p256');
    const impostor = parseCertificate(issueCaCertificate({ key: impostorKeys.privateKey, organization: 'cluster.local', commonName: 'Root CA', trustDomain: 'cluster.local', ttlMs: 365 * DAY, now: NOW }).pem);
    expect(impostor.subjectDer).toEqual(root.cert.subjectDer);
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [impostor], now: NOW }), 'CHAIN_INVALID');
  });

  it('fails on a tampered leaf signature', () => {
    const der = Buffer.from(leaf.der);
    der[der.length - 5] = der[der.length - 5]! ^ 0x01;
    let tampered: ParsedCertificate;
    try {
      tampered = parseCertificate(der);
    } catch {
      return; // the flip broke the DER of the ECDSA signature: rejected either way
    }
    expectCode(() => verifyChain({ leaf: tampered, intermediates: [intermediate.cert], roots: [root.cert], now: NOW }), 'CHAIN_INVALID');
  });

  it('checks validity of every certificate at the given time (CERT_EXPIRED, not yet valid)', () => {
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [root.cert], now: leaf.notAfter + 1000 }), 'CERT_EXPIRED', /leaf/);
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [root.cert], now: leaf.notBefore - 1000 }), 'CHAIN_INVALID', /not valid yet/);
  });

  it('accepts a notBefore up to notBeforeToleranceMs ahead, for every certificate of the path', () => {
    // All three were issued at NOW, so each one's notBefore is ahead of an earlier `now`.
    const early = Math.max(leaf.notBefore, intermediate.cert.notBefore, root.cert.notBefore) - 60_000;
    expect(verifyChain({ leaf, intermediates: [intermediate.cert], roots: [root.cert], now: early, notBeforeToleranceMs: 60_000 })).toHaveLength(3);
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [root.cert], now: early - 1000, notBeforeToleranceMs: 60_000 }), 'CHAIN_INVALID', /not valid yet/);
    // Expiry gets no tolerance.
    expectCode(() => verifyChain({ leaf, intermediates: [intermediate.cert], roots: [root.cert], now: leaf.notAfter + 1000, notBeforeToleranceMs: 60_000 }), 'CERT_EXPIRED', /leaf/);
  });

  it('reports an expired intermediate or root as CERT_EXPIRED', async () => {
    // Our issuer never lets a leaf outlive its signer, so openssl makes the short-lived intermediate.
    const extRoot = ossl('exp-root', '/CN=Exp Root', 'ca', undefined, 30);
    const shortInter = ossl('exp-inter', '/CN=Exp Inter', 'ca', extRoot, 1);
    const longLeaf = ossl('exp-leaf', '/', 'leaf', shortInter, 20);
    expect(verifyChain({ leaf: longLeaf.cert, intermediates: [shortInter.cert], roots: [extRoot.cert], now: Date.now() + HOUR })).toHaveLength(3);
    expectCode(() => verifyChain({ leaf: longLeaf.cert, intermediates: [shortInter.cert], roots: [extRoot.cert], now: Date.now() + 2 * DAY }), 'CERT_EXPIRED', /intermediate/);

    const shortRootKeys = await generateKeyPair('ecdsa-p256');
    const shortRoot = parseCertificate(issueCaCertificate({ key: shortRootKeys.privateKey, organization: 'o', ttlMs: 10 * DAY, now: NOW }).pem);
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const leaf2 = parseCertificate(issueWorkloadCertificate({ signer: { cert: shortRoot, key: shortRootKeys.privateKey }, publicKey, spiffeId: ID, ttlMs: DAY, now: NOW }).pem);
    const ossLeaf = ossl('exp-leaf2', '/', 'leaf', extRoot, 20);
    expectCode(() => verifyChain({ leaf: ossLeaf.cert, intermediates: [], roots: [extRoot.cert], now: Date.now() + 25 * DAY }), 'CERT_EXPIRED', /leaf/);
    expectCode(() => verifyChain({ leaf: longLeaf.cert, intermediates: [], roots: [shortInter.cert], now: Date.now() + 2 * DAY }), 'CERT_EXPIRED', /root/);
    expect(verifyChain({ leaf: leaf2, intermediates: [], roots: [shortRoot], now: NOW + HOUR })).toHaveLength(2);
  });

  it('verifies chains made by openssl, including a v1 root', () => {
    const extRoot = ossl('ext-root', '/CN=Ext Root', 'ca');
    const extInter = ossl('ext-inter', '/CN=Ext Inter', 'ca_pathlen0', extRoot);
    const extLeaf = ossl('ext-leaf', '/', 'leaf', extInter);
    const now = Date.now() + 60_000; // openssl stamps notBefore with its own "now"; stay clear of it
    expect(verifyChain({ leaf: extLeaf.cert, intermediates: [extInter.cert], roots: [extRoot.cert], now })).toHaveLength(3);
    expect(checkWorkloadSvid(extLeaf.cert)).toBe('spiffe://ext.example/ns/a/sa/b');
    const v1Root = ossl('v1-root', '/CN=V1 Root', undefined);
    expect(v1Root.cert.version).toBe(1);
    expect(v1Root.cert.isCa).toBe(false);
    expect(v1Root.cert.selfSigned).toBe(true);
    const v1Leaf = ossl('v1-leaf', '/', 'leaf', v1Root);
    expect(verifyChain({ leaf: v1Leaf.cert, intermediates: [], roots: [v1Root.cert], now })).toHaveLength(2);
  });

  it('rejects an issuer that is not a CA, lacks keyCertSign, or whose pathLen is exceeded', () => {
    const now = Date.now() + 60_000;
    const extRoot = ossl('r2', '/CN=R2', 'ca');
    const notCa = ossl('notca', '/CN=NotCA', 'not_ca', extRoot);
    expectCode(() => verifyChain({ leaf: ossl('l1', '/', 'leaf', notCa).cert, intermediates: [notCa.cert], roots: [extRoot.cert], now }), 'CHAIN_INVALID', /not a CA/);
    const noSign = ossl('nosign', '/CN=NoSign', 'ca_no_certsign', extRoot);
    expectCode(() => verifyChain({ leaf: ossl('l2', '/', 'leaf', noSign).cert, intermediates: [noSign.cert], roots: [extRoot.cert], now }), 'CHAIN_INVALID', /keyCertSign/);
    const p0 = ossl('p0', '/CN=P0', 'ca_pathlen0', extRoot);
    const below = ossl('below', '/CN=Below', 'ca', p0);
    const deep = ossl('deep', '/', 'leaf', below);
    expectCode(() => verifyChain({ leaf: deep.cert, intermediates: [p0.cert, below.cert], roots: [extRoot.cert], now }), 'CHAIN_INVALID', /pathLen/);
    // openssl agrees.
    const v = openssl(['verify', '-CAfile', extRoot.path, '-untrusted', tmp.file('p0chain.pem', below.pem + p0.pem), deep.path]);
    expect(v.ok).toBe(false);
    expect(v.out).toMatch(/path length constraint exceeded/);
  });

  it('rejects a certificate with a critical extension it does not understand', () => {
    const extRoot = ossl('r3', '/CN=R3', 'ca');
    const odd = ossl('odd', '/', 'leaf_unknown_critical', extRoot);
    expect(odd.cert.extensions.unhandledCritical).toEqual(['1.3.6.1.4.1.55555.1']);
    expectCode(() => verifyChain({ leaf: odd.cert, intermediates: [], roots: [extRoot.cert], now: Date.now() + 60_000 }), 'CHAIN_INVALID', /critical extension/);
  });
});

describe('checkWorkloadSvid (X509-SVID section 5)', () => {
  it.each([
    ['leaf_two_uris', /exactly one URI SAN/],
    ['leaf_certsign', /keyCertSign/],
    ['leaf_eku_server_only', /serverAuth or clientAuth/],
    ['leaf_no_path', /no path/],
    ['leaf_san_not_critical', /not critical/],
    ['ca', /is a CA/],
  ])('rejects %s', (section, reason) => {
    const extRoot = ossl(`svid-root-${section}`, '/CN=R', 'ca');
    const cert = ossl(`svid-${section}`, '/', section, extRoot).cert;
    expectCode(() => checkWorkloadSvid(cert), 'CERT_INVALID', reason);
  });
});

describe('buildResponseChain (Istio cert_chain layout)', () => {
  it('is [leaf, each intermediate, the root bundle as one element]', async () => {
    const { root, intermediate } = await makeCa('ecdsa-p256');
    const other = await makeCa('ecdsa-p256');
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const leafPem = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: ID, ttlMs: HOUR, now: NOW }).pem;
    const certChainPem = intermediate.cert.pem + root.cert.pem; // cacerts cert-chain.pem: intermediate then root
    const rootBundle = `${root.cert.pem}${other.root.cert.pem}`;
    const chain = buildResponseChain(leafPem, [certChainPem], rootBundle);
    expect(chain).toEqual([leafPem, intermediate.cert.pem, root.cert.pem, rootBundle]);
    for (const element of chain.slice(0, -1)) expect(element.endsWith('\n')).toBe(true);
    expect(parseCertificates(chain.at(-1)!)).toHaveLength(2);
    // A self-signed CA gives [leaf, root].
    expect(buildResponseChain(leafPem, [], root.cert.pem)).toEqual([leafPem, root.cert.pem]);
    // PEM from elsewhere (CRLF line ends, text around it, no final newline) is normalised.
    const crlf = (p: string) => `comment\r\n${p.replace(/\n/g, '\r\n').trimEnd()}`;
    expect(buildResponseChain(crlf(leafPem), [crlf(certChainPem)], rootBundle)).toEqual(chain);
  });

  it('rejects a leaf that is not exactly one certificate, and an empty root bundle', async () => {
    const { root } = await makeCa('ecdsa-p256');
    expectCode(() => buildResponseChain(root.cert.pem + root.cert.pem, [], root.cert.pem), 'PEM_INVALID');
    expectCode(() => buildResponseChain('', [], root.cert.pem), 'PEM_INVALID');
    expectCode(() => buildResponseChain(root.cert.pem, [], 'nothing'), 'PEM_INVALID');
    expect(splitPem(root.cert.pem)).toEqual([root.cert.pem]);
  });
});
