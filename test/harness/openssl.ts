/**
 * A throwaway CA for the test control plane, made with the `openssl` command (independent of our own src/pki):
 * the kube-apiserver serving certificate, client certificates (the admin, or any user/group a test needs)
 * and the ServiceAccount token signing key.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Runs `openssl args...`; throws with openssl's stderr when it fails. */
export async function openssl(args: readonly string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync('openssl', args, { cwd, maxBuffer: 4 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

export interface CaFiles {
  readonly certPath: string;
  readonly keyPath: string;
}

export interface CertFiles {
  readonly certPath: string;
  readonly keyPath: string;
}

const CNF = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
`;

function writeConfig(dir: string): string {
  const file = path.join(dir, 'openssl.cnf');
  if (!fs.existsSync(file)) fs.writeFileSync(file, CNF);
  return file;
}

/** Escapes a value for openssl's -subj syntax (/O=a/CN=b). */
function subjectPart(key: string, value: string): string {
  return `/${key}=${value.replace(/[\\/]/g, (c) => `\\${c}`)}`;
}

/** A self-signed ECDSA P-256 CA valid for `days`, written to `<dir>/<name>.crt|.key`. */
export async function createCa(dir: string, name: string, commonName: string, days = 7): Promise<CaFiles> {
  const config = writeConfig(dir);
  const certPath = path.join(dir, `${name}.crt`);
  const keyPath = path.join(dir, `${name}.key`);
  await openssl(['req', '-x509', '-new', '-nodes', '-config', config, '-extensions', 'ca_ext',
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-keyout', keyPath, '-out', certPath,
    '-days', String(days), '-subj', subjectPart('CN', commonName)]);
  fs.chmodSync(keyPath, 0o600);
  return { certPath, keyPath };
}

export interface LeafOptions {
  ca: CaFiles;
  dir: string;
  /** File name stem: `<dir>/<name>.crt|.key`. */
  name: string;
  commonName: string;
  /** Subject O= values; for Kubernetes client certificates these are the user's groups. */
  organizations?: readonly string[];
  /** subjectAltName entries in openssl syntax, e.g. `IP:127.0.0.1`, `DNS:localhost`. */
  subjectAltNames?: readonly string[];
  usage: 'server' | 'client';
  days?: number;
}

/** An ECDSA P-256 leaf certificate signed by `ca`. */
export async function issueLeaf(opts: LeafOptions): Promise<CertFiles> {
  const config = writeConfig(opts.dir);
  const certPath = path.join(opts.dir, `${opts.name}.crt`);
  const keyPath = path.join(opts.dir, `${opts.name}.key`);
  const csrPath = path.join(opts.dir, `${opts.name}.csr`);
  const extPath = path.join(opts.dir, `${opts.name}.ext`);
  const subject = [...(opts.organizations ?? []).map((o) => subjectPart('O', o)), subjectPart('CN', opts.commonName)].join('');
  const ext = [
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature',
    `extendedKeyUsage = ${opts.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
    'authorityKeyIdentifier = keyid',
    ...(opts.subjectAltNames?.length ? [`subjectAltName = ${opts.subjectAltNames.join(',')}`] : []),
  ];
  fs.writeFileSync(extPath, `[leaf]\n${ext.join('\n')}\n`);
  await openssl(['req', '-new', '-nodes', '-config', config, '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-keyout', keyPath, '-out', csrPath, '-subj', subject]);
  fs.chmodSync(keyPath, 0o600);
  await openssl(['x509', '-req', '-in', csrPath, '-CA', opts.ca.certPath, '-CAkey', opts.ca.keyPath,
    '-set_serial', `0x${randomBytes(16).toString('hex').replace(/^[89a-f]/, '7')}`, '-days', String(opts.days ?? 7),
    '-extfile', extPath, '-extensions', 'leaf', '-out', certPath]);
  fs.rmSync(csrPath);
  fs.rmSync(extPath);
  return { certPath, keyPath };
}

/** An RSA-2048 private key (PKCS#8 PEM) at `<dir>/<name>.key` and its public key at `<dir>/<name>.pub`. */
export async function createRsaKeyPair(dir: string, name: string): Promise<{ keyPath: string; publicKeyPath: string }> {
  const keyPath = path.join(dir, `${name}.key`);
  const publicKeyPath = path.join(dir, `${name}.pub`);
  await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', keyPath]);
  fs.chmodSync(keyPath, 0o600);
  await openssl(['pkey', '-in', keyPath, '-pubout', '-out', publicKeyPath]);
  return { keyPath, publicKeyPath };
}
