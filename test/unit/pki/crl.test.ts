import { generateKeyPairSync } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkCrlSet, generateKeyPair, issueCrl, issueWorkloadCertificate, normaliseSerial, parseCertificate, parseCrls, type KeyType, type Signer } from '../../../src/pki/index.js';
import { DAY, HOUR, NOW, expectCode, makeCa } from './helpers.js';
import { openssl, opensslOk, opensslVerify, scratch } from './openssl.js';

const tmp = scratch();
const ID = 'spiffe://cluster.local/ns/default/sa/web';

async function leafUnder(signer: Signer) {
  const { publicKey } = await generateKeyPair('ecdsa-p256');
  return issueWorkloadCertificate({ signer, publicKey, spiffeId: ID, ttlMs: DAY, now: NOW });
}

describe('issueCrl', () => {
  const cas = new Map<KeyType, { root: Signer; intermediate: Signer }>();
  beforeAll(async () => {
    for (const t of ['ecdsa-p256', 'rsa-2048'] as const) cas.set(t, await makeCa(t));
  });

  it.each(['ecdsa-p256', 'rsa-2048'] as const)('writes a v2 CRL that openssl verifies against its issuer (%s)', (type) => {
    const { intermediate } = cas.get(type)!;
    const crl = issueCrl({ signer: intermediate, number: 7, thisUpdate: NOW, nextUpdate: NOW + DAY, entries: [{ serialHex: '0abc', revokedAt: NOW - HOUR, reason: 'keyCompromise' }, { serialHex: 'ff01', revokedAt: NOW - HOUR }] });
    const issuer = tmp.file(`issuer-${type}.pem`, intermediate.cert.pem);
    // `crl -verify` exits non-zero on a bad signature; checked both ways.
    expect(openssl(['crl', '-noout', '-CAfile', issuer, '-verify'], crl.pem).ok).toBe(true);
    const stranger = tmp.file(`stranger-${type}.pem`, cas.get(type === 'rsa-2048' ? 'ecdsa-p256' : 'rsa-2048')!.root.cert.pem);
    expect(openssl(['crl', '-noout', '-CAfile', stranger, '-verify'], crl.pem).ok).toBe(false);
    const out = opensslOk(['crl', '-noout', '-text'], crl.pem);
    expect(out).toMatch(/Version 2/);
    expect(out).toMatch(/CRL Number:\s*\n\s*7/);
    expect(out).toMatch(/Authority Key Identifier/);
    expect(out).toMatch(/Serial Number: 0ABC[\s\S]*Key Compromise/);
    expect(out).toMatch(/Serial Number: FF01/);
    expect(out).not.toMatch(/Issuing Distribution Point|critical/i);

    const [parsed] = parseCrls(crl.pem);
    expect(parsed!.issuer).toBe(intermediate.cert.subject);
    expect(parsed!.number).toBe('7');
    expect(parsed!.nextUpdate).toBe(NOW + DAY);
    expect(parsed!.authorityKeyId).toEqual(intermediate.cert.subjectKeyId);
    expect(parsed!.entries).toEqual([{ serialHex: '0abc', revokedAt: NOW - HOUR, reason: 'keyCompromise' }, { serialHex: 'ff01', revokedAt: NOW - HOUR }]);
  });

  it('leaves revokedCertificates out (not empty) when nothing is revoked', () => {
    const { root } = cas.get('ecdsa-p256')!;
    const crl = issueCrl({ signer: root, number: 1, thisUpdate: NOW, nextUpdate: NOW + DAY, entries: [] });
    const out = opensslOk(['crl', '-noout', '-text'], crl.pem);
    expect(out).toMatch(/No Revoked Certificates/);
    expect(parseCrls(crl.pem)[0]!.entries).toEqual([]);
  });

  it('openssl verify -crl_check_all refuses a revoked leaf and accepts the others, with one CRL per CA', async () => {
    const { root, intermediate } = cas.get('ecdsa-p256')!;
    const revoked = await leafUnder(intermediate);
    const fine = await leafUnder(intermediate);
    const crls = [
      issueCrl({ signer: intermediate, number: 2, thisUpdate: NOW, nextUpdate: NOW + DAY, entries: [{ serialHex: revoked.serialHex, revokedAt: NOW }] }).pem,
      issueCrl({ signer: root, number: 2, thisUpdate: NOW, nextUpdate: NOW + DAY, entries: [] }).pem,
    ];
    const files = { root: tmp.file('root.pem', root.cert.pem), untrusted: tmp.file('inter.pem', intermediate.cert.pem), attime: NOW / 1000 + 60 };
    const crlFile = tmp.file('crls.pem', crls.join(''));
    const bad = opensslVerify({ ...files, cert: tmp.file('revoked.pem', revoked.pem), extra: ['-crl_check_all', '-CRLfile', crlFile] });
    expect(bad.ok).toBe(false);
    expect(bad.out).toMatch(/certificate revoked/);
    const good = opensslVerify({ ...files, cert: tmp.file('fine.pem', fine.pem), extra: ['-crl_check_all', '-CRLfile', crlFile] });
    expect(good.out).toMatch(/OK/);
    expect(good.ok).toBe(true);
    // Without the root's CRL every certificate fails under crl_check_all, as in Envoy.
    const onlyInter = tmp.file('inter-crl.pem', crls[0]!);
    const missing = opensslVerify({ ...files, cert: tmp.file('fine2.pem', fine.pem), extra: ['-crl_check_all', '-CRLfile', onlyInter] });
    expect(missing.ok).toBe(false);
    expect(missing.out).toMatch(/unable to get certificate CRL/);
    expect(() => checkCrlSet(parseCrls(crls[0]!), [intermediate.cert, root.cert], NOW)).toThrow(/no CRL signed by "O=cluster.local, CN=Root CA"/);
    expect(checkCrlSet(parseCrls(crls.join('')), [intermediate.cert, root.cert], NOW).map((c) => c.issuer)).toEqual([intermediate.cert.subject, root.cert.subject]);
  });

  it('refuses a signer whose keyUsage lacks cRLSign, with the reason', () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = opensslOk(['req', '-x509', '-new', '-key', tmp.file('k.pem', key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()), '-subj', '/O=no-crl', '-days', '30',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    const cert = parseCertificate(pem);
    expectCode(() => issueCrl({ signer: { cert, key: key.privateKey }, number: 1, thisUpdate: NOW, nextUpdate: NOW + DAY, entries: [] }), 'NOT_A_CA', /lacks cRLSign/);
  });

  it('checkCrlSet refuses expired lists, foreign signers and garbage', () => {
    const { root, intermediate } = cas.get('ecdsa-p256')!;
    const other = cas.get('rsa-2048')!.root;
    const expired = parseCrls(issueCrl({ signer: root, number: 1, thisUpdate: NOW - 2 * DAY, nextUpdate: NOW - DAY, entries: [] }).pem);
    expectCode(() => checkCrlSet(expired, [root.cert], NOW), 'CERT_INVALID', /expired/);
    const foreign = parseCrls(issueCrl({ signer: other, number: 1, thisUpdate: NOW, nextUpdate: NOW + DAY, entries: [] }).pem);
    expectCode(() => checkCrlSet(foreign, [intermediate.cert, root.cert], NOW), 'CERT_INVALID', /not signed by any CA of the chain/);
    expectCode(() => parseCrls('-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n'), 'DER_INVALID');
    expectCode(() => parseCrls(root.cert.pem), 'PEM_INVALID', /expected PEM CRLs/);
  });

  it('reads a CRL written by openssl', () => {
    const { root } = cas.get('ecdsa-p256')!;
    const d = tmp.dir;
    tmp.file('index.txt', '');
    tmp.file('crlnumber', '1000\n');
    const conf = tmp.file('ca.cnf', `[ca]\ndefault_ca=x\n[x]\ndatabase=${d}/index.txt\ncrlnumber=${d}/crlnumber\ndefault_md=sha256\ndefault_crl_days=7\n[ext]\nauthorityKeyIdentifier=keyid\n`);
    const r = openssl(['ca', '-gencrl', '-config', conf, '-crlexts', 'ext', '-cert', tmp.file('r.pem', root.cert.pem), '-keyfile', tmp.file('rk.pem', root.key.export({ type: 'pkcs8', format: 'pem' }).toString())]);
    expect(r.ok, r.out).toBe(true);
    const [crl] = parseCrls(r.out);
    expect(crl!.number).toBe('4096');
    expect(checkCrlSet([crl!], [root.cert], Date.now())).toHaveLength(1);
  });

  it('normalises serials', () => {
    expect(normaliseSerial('0x00:0A:bc')).toBe('0abc');
    expect(normaliseSerial('ABC')).toBe('0abc');
    expectCode(() => normaliseSerial('xyz'), 'CONFIG_INVALID');
  });
});
