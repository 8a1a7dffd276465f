import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../../src/cli/main.js';
import { generateKeyPair, issueCrl, issueWorkloadCertificate, parseCertificate, parseCertificates, parsePrivateKeyPem, keyMatchesCertificate } from '../../../src/pki/index.js';
import { openssl, opensslOk } from '../pki/openssl.js';

const base = mkdtempSync(join(tmpdir(), 'citadel-cli-pki-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const freshDir = () => join(base, `out-${++n}`);

/** Runs `citadel ...` in-process through main(), capturing what it prints. */
async function citadel(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  try {
    const code = await main(args, env);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

const read = (dir: string, name: string) => readFileSync(join(dir, name), 'utf8');
const mode = (dir: string, name: string) => statSync(join(dir, name)).mode & 0o777;

describe('citadel pki create-ca', () => {
  it('writes the cacerts layout that openssl verifies, keys 0600 and matching their certificates', async () => {
    const dir = freshDir();
    const r = await citadel(['pki', 'create-ca', '--out', dir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem', 'root-key.pem']);
    expect(mode(dir, 'ca-key.pem')).toBe(0o600);
    expect(mode(dir, 'root-key.pem')).toBe(0o600);
    expect(mode(dir, 'ca-cert.pem')).toBe(0o644);

    const v = openssl(['verify', '-CAfile', join(dir, 'root-cert.pem'), '-untrusted', join(dir, 'cert-chain.pem'), join(dir, 'ca-cert.pem')]);
    expect(v.out).toContain('ca-cert.pem: OK');
    expect(read(dir, 'cert-chain.pem')).toBe(read(dir, 'ca-cert.pem') + read(dir, 'root-cert.pem'));

    // Key matches cert, per openssl and per us.
    const certPub = opensslOk(['x509', '-noout', '-pubkey', '-in', join(dir, 'ca-cert.pem')]);
    const keyPub = opensslOk(['pkey', '-pubout', '-in', join(dir, 'ca-key.pem')]);
    expect(keyPub).toBe(certPub);
    expect(opensslOk(['pkey', '-pubout', '-in', join(dir, 'root-key.pem')])).toBe(opensslOk(['x509', '-noout', '-pubkey', '-in', join(dir, 'root-cert.pem')]));
    expect(keyMatchesCertificate(parsePrivateKeyPem(read(dir, 'ca-key.pem')), parseCertificate(read(dir, 'ca-cert.pem')))).toBe(true);

    const [inter, root] = parseCertificates(read(dir, 'cert-chain.pem'));
    expect(inter).toMatchObject({ isCa: true, pathLen: 0, subject: 'O=cluster.local, CN=Intermediate CA', uris: ['spiffe://cluster.local'], key: { type: 'ecdsa-p256' } });
    expect(root).toMatchObject({ isCa: true, selfSigned: true, subject: 'O=cluster.local, CN=Root CA', uris: ['spiffe://cluster.local'] });
    expect(root!.notAfter - root!.notBefore).toBe(87600 * 3_600_000 + 120_000);
    expect(inter!.notAfter - inter!.notBefore).toBe(8760 * 3_600_000 + 120_000);

    // The output says what to do with the files and warns about the root key.
    expect(r.stdout).toMatch(/root-key\.pem\s+ROOT PRIVATE KEY: keep it offline.*never put it in the cacerts secret/);
    expect(r.stdout).toContain('kubectl create secret generic cacerts');
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem']) expect(r.stdout).toContain(`--from-file=${join(dir, f)}`);
    expect(r.stdout).not.toContain(`--from-file=${join(dir, 'root-key.pem')}`);
    expect(r.stdout).not.toMatch(/BEGIN/);

    // A workload certificate from this intermediate verifies with openssl against the written files.
    const signer = { cert: parseCertificate(read(dir, 'ca-cert.pem')), key: parsePrivateKeyPem(read(dir, 'ca-key.pem')) };
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const leaf = issueWorkloadCertificate({ signer, publicKey, spiffeId: 'spiffe://cluster.local/ns/a/sa/b', ttlMs: 3_600_000, now: Date.now() });
    writeFileSync(join(base, 'leaf.pem'), leaf.pem);
    expect(opensslOk(['verify', '-CAfile', join(dir, 'root-cert.pem'), '-untrusted', join(dir, 'cert-chain.pem'), join(base, 'leaf.pem')])).toContain('OK');
  });

  it('honours --key-type, --trust-domain (or TRUST_DOMAIN), --organization and the TTL flags', async () => {
    const dir = freshDir();
    const r = await citadel(['pki', 'create-ca', `--out=${dir}`, '--key-type', 'rsa-2048', '--root-ttl', '48h', '--ca-ttl', '24h', '--organization', 'Example Inc'], { TRUST_DOMAIN: 'example.org' });
    expect(r.code).toBe(0);
    const [inter, root] = parseCertificates(read(dir, 'cert-chain.pem'));
    expect(inter).toMatchObject({ key: { type: 'rsa-2048' }, uris: ['spiffe://example.org'], subject: 'O=Example Inc, CN=Intermediate CA' });
    expect(root!.key.type).toBe('rsa-2048');
    expect(root!.notAfter - root!.notBefore).toBe(48 * 3_600_000 + 120_000);
    expect(inter!.notAfter - inter!.notBefore).toBe(24 * 3_600_000 + 120_000);
    expect(opensslOk(['x509', '-noout', '-ext', 'subjectAltName', '-in', join(dir, 'ca-cert.pem')])).toContain('URI:spiffe://example.org');
    expect(new X509Certificate(read(dir, 'ca-cert.pem')).checkIssued(new X509Certificate(read(dir, 'root-cert.pem')))).toBe(true);
  });

  it('caps the intermediate at the root expiry and says so', async () => {
    const dir = freshDir();
    const r = await citadel(['pki', 'create-ca', '--out', dir, '--root-ttl', '10h', '--ca-ttl', '20h']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/capped at the root's expiry; --ca-ttl 20h/);
    const [inter, root] = parseCertificates(read(dir, 'cert-chain.pem'));
    expect(inter!.notAfter).toBe(root!.notAfter);
  });

  it('--from-root makes another intermediate under the same root (one per cluster)', async () => {
    const rootDir = freshDir();
    expect((await citadel(['pki', 'create-ca', '--out', rootDir])).code).toBe(0);
    const dir = freshDir();
    const r = await citadel(['pki', 'create-ca', '--out', dir, '--from-root', rootDir, '--key-type', 'ecdsa-p384']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
    expect(r.stdout).not.toContain('root-key.pem');
    expect(read(dir, 'root-cert.pem')).toBe(read(rootDir, 'root-cert.pem'));
    expect(read(dir, 'ca-cert.pem')).not.toBe(read(rootDir, 'ca-cert.pem'));
    expect(parseCertificate(read(dir, 'ca-cert.pem')).key.type).toBe('ecdsa-p384');
    for (const d of [dir, rootDir]) {
      expect(opensslOk(['verify', '-CAfile', join(rootDir, 'root-cert.pem'), '-untrusted', join(d, 'cert-chain.pem'), join(d, 'ca-cert.pem')])).toContain('OK');
    }
    expect(opensslOk(['pkey', '-pubout', '-in', join(dir, 'ca-key.pem')])).toBe(opensslOk(['x509', '-noout', '-pubkey', '-in', join(dir, 'ca-cert.pem')]));
  });

  it('--from-root reads PKCS#1/SEC1 root keys from other tools and refuses a key that does not match', async () => {
    const rootDir = freshDir();
    expect((await citadel(['pki', 'create-ca', '--out', rootDir])).code).toBe(0);
    // Rewrite the root key as SEC1, as openssl ec would.
    writeFileSync(join(rootDir, 'root-key.pem'), opensslOk(['ec', '-in', join(rootDir, 'root-key.pem')]));
    expect(read(rootDir, 'root-key.pem')).toMatch(/BEGIN EC PRIVATE KEY/);
    expect((await citadel(['pki', 'create-ca', '--out', freshDir(), '--from-root', rootDir])).code).toBe(0);

    writeFileSync(join(rootDir, 'root-key.pem'), read(rootDir, 'ca-key.pem'));
    const dir = freshDir();
    const r = await citadel(['pki', 'create-ca', '--out', dir, '--from-root', rootDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--from-root: .*root-key\.pem is not the key of .*root-cert\.pem/);
    expect(existsSync(dir)).toBe(false);
  });

  it('names the flag in every configuration error (exit 2) and writes nothing', async () => {
    const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
      [['pki', 'create-ca'], {}, /--out: needs a directory/],
      [['pki', 'create-ca', '--out', freshDir(), '--key-type', 'rsa-1024'], {}, /--key-type: must be one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096/],
      [['pki', 'create-ca', '--out', freshDir(), '--trust-domain', 'Cluster.Local'], {}, /--trust-domain \(TRUST_DOMAIN\): .*lowercase/],
      [['pki', 'create-ca', '--out', freshDir()], { TRUST_DOMAIN: 'td:80' }, /--trust-domain \(TRUST_DOMAIN\): .*port/],
      [['pki', 'create-ca', '--out', freshDir(), '--ca-ttl', '0s'], {}, /--ca-ttl: must be a positive duration/],
      [['pki', 'create-ca', '--out', freshDir(), '--root-ttl', 'forever'], {}, /--root-ttl: must be a duration/],
      [['pki', 'create-ca', '--out', freshDir(), '--from-root', join(base, 'missing')], {}, /--from-root: cannot read .*missing\/root-cert\.pem: ENOENT/],
      [['pki', 'create-ca', '--out', freshDir(), '--bogus'], {}, /unknown flag --bogus/],
    ];
    for (const [args, env, message] of cases) {
      const r = await citadel(args, env);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      const out = args[args.indexOf('--out') + 1];
      if (args.includes('--out')) expect(existsSync(out!)).toBe(false);
    }
  });

  it('refuses to overwrite an existing CA (nothing changes) unless --force', async () => {
    const dir = freshDir();
    expect((await citadel(['pki', 'create-ca', '--out', dir])).code).toBe(0);
    const before = readFileSync(join(dir, 'ca-key.pem'), 'utf8');
    rmSync(join(dir, 'root-cert.pem'));
    const r = await citadel(['pki', 'create-ca', '--out', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--out: .*already exists \(use --force to overwrite\)/);
    expect(existsSync(join(dir, 'root-cert.pem'))).toBe(false);
    expect(read(dir, 'ca-key.pem')).toBe(before);
    expect((await citadel(['pki', 'create-ca', '--out', dir, '--force'])).code).toBe(0);
    expect(read(dir, 'ca-key.pem')).not.toBe(before);
    expect(mode(dir, 'ca-key.pem')).toBe(0o600);
  });

  it('--help lists every flag with its env var and default', async () => {
    const r = await citadel(['pki', 'create-ca', '--help']);
    expect(r.code).toBe(0);
    for (const f of ['--out', '--trust-domain', '--key-type', '--root-ttl', '--ca-ttl', '--from-root', '--organization', '--force']) expect(r.stdout).toContain(f);
    expect(r.stdout).toContain('[env TRUST_DOMAIN, default "cluster.local"]');
    expect(r.stdout).toContain('default "87600h"');
    expect(r.stdout).toContain('default "8760h"');
  });
});

describe('citadel pki inspect', () => {
  it('prints subject, SPIFFE IDs, serial, issuer, validity, key type and CA flag for each certificate', async () => {
    const dir = freshDir();
    expect((await citadel(['pki', 'create-ca', '--out', dir, '--trust-domain', 'example.org'])).code).toBe(0);
    const signer = { cert: parseCertificate(read(dir, 'ca-cert.pem')), key: parsePrivateKeyPem(read(dir, 'ca-key.pem')) };
    const { publicKey } = await generateKeyPair('rsa-2048');
    const leaf = issueWorkloadCertificate({ signer, publicKey, spiffeId: 'spiffe://example.org/ns/shop/sa/cart', dnsNames: ['cart.shop.svc'], ttlMs: 3_600_000, now: Date.now() });
    const file = join(dir, 'bundle.pem');
    writeFileSync(file, leaf.pem + read(dir, 'cert-chain.pem'));

    const r = await citadel(['pki', 'inspect', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const blocks = r.stdout.split(/\n(?=Certificate \d of 3)/);
    expect(blocks).toHaveLength(3);
    const [leafOut, interOut, rootOut] = blocks as [string, string, string];
    expect(leafOut).toMatch(/^Certificate 1 of 3\n/);
    expect(leafOut).toMatch(/Subject:\s+\(empty\)/);
    expect(leafOut).toMatch(/SPIFFE IDs:\s+spiffe:\/\/example.org\/ns\/shop\/sa\/cart\n/);
    expect(leafOut).toMatch(/DNS names:\s+cart.shop.svc/);
    expect(leafOut).toContain(`Serial:       ${leaf.serialHex}`);
    expect(leafOut).toMatch(/Issuer:\s+O=example.org, CN=Intermediate CA\n/);
    expect(leafOut).toMatch(/Validity:\s+\S+ to \S+ \(\d+ hours left\)/);
    expect(leafOut).toMatch(/Key type:\s+rsa-2048/);
    expect(leafOut).toMatch(/CA:\s+no/);
    expect(interOut).toMatch(/CA:\s+yes \(pathLen 0\), may sign CRLs/);
    expect(rootOut).toMatch(/CA:\s+yes, may sign CRLs/);
    expect(interOut).toMatch(/SPIFFE IDs:\s+spiffe:\/\/example.org\n/);
    expect(rootOut).toMatch(/Issuer:\s+O=example.org, CN=Root CA \(self-signed\)/);
    expect(rootOut).toMatch(/Key type:\s+ecdsa-p256/);
    // --file works too.
    expect((await citadel(['pki', 'inspect', '--file', file])).stdout).toBe(r.stdout);
  });

  it('fails with a clear message on a missing file, a file without certificates, or a broken certificate', async () => {
    const missing = await citadel(['pki', 'inspect', join(base, 'nope.pem')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--file: cannot read .*nope\.pem: ENOENT/);
    const empty = join(base, 'empty.pem');
    writeFileSync(empty, 'hello\n');
    const r = await citadel(['pki', 'inspect', empty]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--file: .*empty\.pem: no PEM certificate found/);
    const broken = join(base, 'broken.pem');
    writeFileSync(broken, '-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n');
    const b = await citadel(['pki', 'inspect', broken]);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/malformed DER/);
    const none = await citadel(['pki', 'inspect']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--file: needs a PEM file/);
  });
});

describe('citadel pki revoke', () => {
  it('signs the offline root\'s CRL into ca-crl.pem that openssl verifies, adds and removes serials, keeps other CAs\' CRLs, and inspect reads it', async () => {
    const dir = freshDir();
    expect((await citadel(['pki', 'create-ca', '--out', dir])).code).toBe(0);
    const inter = parseCertificate(read(dir, 'ca-cert.pem'));
    const crlFile = join(dir, 'ca-crl.pem');
    const args = ['pki', 'revoke', '--ca-cert', join(dir, 'root-cert.pem'), '--ca-key', join(dir, 'root-key.pem'), '--out', crlFile];
    const first = await citadel(args);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/the CRL of "O=cluster.local, CN=Root CA" \(number \d+, 0 revoked/);
    expect(openssl(['crl', '-noout', '-verify', '-CAfile', join(dir, 'root-cert.pem'), '-in', crlFile]).ok).toBe(true);

    // A foreign CRL already in the file (e.g. the intermediate's) is kept as it is.
    const interCrl = issueCrl({ signer: { cert: inter, key: parsePrivateKeyPem(read(dir, 'ca-key.pem')) }, number: 1, thisUpdate: Date.now() - 60_000, nextUpdate: Date.now() + 3_600_000, entries: [] }).pem;
    writeFileSync(crlFile, read(dir, 'ca-crl.pem') + interCrl);
    expect((await citadel([...args, '--serial', inter.serialHex, '--reason', 'cACompromise'])).code).toBe(0);
    const text = read(dir, 'ca-crl.pem');
    expect(text).toContain(interCrl);
    // The revoked intermediate now fails openssl's full CRL check.
    const leafFile = join(dir, 'leaf.pem');
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    writeFileSync(leafFile, issueWorkloadCertificate({ signer: { cert: inter, key: parsePrivateKeyPem(read(dir, 'ca-key.pem')) }, publicKey, spiffeId: 'spiffe://cluster.local/ns/a/sa/b', ttlMs: 3_600_000, now: Date.now() }).pem);
    const verify = () => openssl(['verify', '-crl_check_all', '-CAfile', join(dir, 'root-cert.pem'), '-untrusted', join(dir, 'ca-cert.pem'), '-CRLfile', crlFile, leafFile]);
    expect(verify().out).toMatch(/certificate revoked/);

    const inspected = await citadel(['pki', 'inspect', crlFile]);
    expect(inspected.code).toBe(0);
    expect(inspected.stdout).toMatch(/^CRL 1 of 2\n\s+Issuer:\s+O=cluster.local, CN=Root CA\n/);
    expect(inspected.stdout).toMatch(/Next update:\s+\S+Z\n/);
    expect(inspected.stdout).toMatch(/CRL number:\s+\d+/);
    expect(inspected.stdout).toContain(`${inter.serialHex} at `);
    expect(inspected.stdout).toMatch(/\(cACompromise\)/);

    expect((await citadel([...args, '--unrevoke', inter.serialHex])).code).toBe(0);
    expect(verify().ok).toBe(true);
  });

  it('refuses a CA without cRLSign with a clear error, and inspect says so', async () => {
    const keyFile = join(base, `nocrl-key-${n}.pem`);
    opensslOk(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile]);
    const certFile = join(base, `nocrl-${n}.pem`);
    opensslOk(['req', '-x509', '-new', '-key', keyFile, '-subj', '/O=legacy', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-out', certFile]);
    const r = await citadel(['pki', 'revoke', '--ca-cert', certFile, '--ca-key', keyFile, '--out', join(base, `x-${n}.pem`)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/may not sign CRLs: its keyUsage lacks cRLSign/);
    expect((await citadel(['pki', 'inspect', certFile])).stdout).toMatch(/CA:\s+yes, may NOT sign CRLs/);
  });
});
