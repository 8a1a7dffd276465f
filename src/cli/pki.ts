/**
 * `citadel pki create-ca` and `citadel pki inspect`: operator tools over src/pki. This file does the file
 * I/O and reads the clock; every certificate decision is in src/pki.
 */
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock } from '../clock.js';
import { flag, formatDuration, parse } from '../config/flags.js';
import { CitadelError } from '../errors.js';
import {
  KEY_TYPES,
  generateKeyPair,
  issueCaCertificate,
  keyMatchesCertificate,
  parseCertificate,
  parseCertificates,
  parsePrivateKeyPem,
  privateKeyToPem,
  splitPem,
  validateTrustDomain,
  type KeyType,
  type ParsedCertificate,
} from '../pki/index.js';
import { defineCommand } from './command.js';

/** File names of Istio's plugged-in CA layout (the `cacerts` Secret), plus the root key we keep apart. */
export const CACERTS_FILES = {
  rootCert: 'root-cert.pem',
  rootKey: 'root-key.pem',
  caCert: 'ca-cert.pem',
  caKey: 'ca-key.pem',
  certChain: 'cert-chain.pem',
} as const;

const configError = (message: string, detail?: string) => new CitadelError('CONFIG_INVALID', message, detail);

/** A flag value that has a default (or must be given); names the flag when it is missing. */
function required<T>(value: T | undefined, flagName: string, what = 'needs a value'): T {
  if (value === undefined) throw configError(`--${flagName}: ${what}`);
  return value;
}

async function readText(path: string, flagName: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw configError(`--${flagName}: cannot read ${path}`, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
}

/** Reads a PEM file through `fn`, naming the flag and file when the content is bad. */
function within<T>(flagName: string, path: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CitadelError) throw new CitadelError(err.code, `--${flagName}: ${path}: ${err.message}`, err.detail, { cause: err });
    throw err;
  }
}

const createCaFlags = {
  out: flag({ name: 'out', help: 'Directory to write root-cert.pem, ca-cert.pem, ca-key.pem, cert-chain.pem (and root-key.pem for a new root).', parse: parse.string }),
  trustDomain: flag({ name: 'trust-domain', env: 'TRUST_DOMAIN', default: 'cluster.local', help: 'Trust domain: the spiffe://<trust-domain> URI SAN of both CA certificates.', parse: validateTrustDomain }),
  keyType: flag({ name: 'key-type', default: 'ecdsa-p256', help: `Key type of the new keys (${KEY_TYPES.join(', ')}).`, parse: parse.oneOf<KeyType>(...KEY_TYPES) }),
  rootTtl: flag({ name: 'root-ttl', default: '87600h', help: 'Lifetime of a new root certificate.', parse: parse.duration }),
  caTtl: flag({ name: 'ca-ttl', default: '8760h', help: 'Lifetime of the intermediate (never beyond the root).', parse: parse.duration }),
  fromRoot: flag({ name: 'from-root', help: 'Directory with root-cert.pem and root-key.pem of an existing root: make another intermediate under it.', parse: parse.string }),
  organization: flag({ name: 'organization', help: 'Subject O= of the certificates [default: the trust domain].', parse: parse.string }),
  force: flag({ name: 'force', boolean: true, default: 'false', help: 'Overwrite files that already exist in --out.', parse: parse.bool }),
};

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes `files` into `dir`: keys 0600, certificates 0644; refuses to overwrite unless `force`. */
async function writeFiles(dir: string, files: ReadonlyArray<{ name: string; content: string; secret: boolean }>, force: boolean): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!force) {
    // Check every name first so that a refusal leaves the directory as it was.
    for (const f of files) {
      const path = join(dir, f.name);
      if (await exists(path)) throw configError(`--out: ${path} already exists (use --force to overwrite)`);
    }
  }
  for (const f of files) {
    const path = join(dir, f.name);
    try {
      await writeFile(path, f.content, { mode: f.secret ? 0o600 : 0o644, flag: force ? 'w' : 'wx' });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw configError(`--out: ${path} already exists (use --force to overwrite)`);
      throw configError(`--out: cannot write ${path}`, code ?? (err as Error).message);
    }
  }
}

export const createCaCommand = defineCommand({
  name: 'pki create-ca',
  usage: 'citadel pki create-ca --out DIR [--trust-domain TD] [--key-type TYPE] [--root-ttl 87600h] [--ca-ttl 8760h] [--from-root DIR]',
  summary:
    'Write a root and an intermediate CA in the cacerts layout (root-cert.pem, ca-cert.pem, ca-key.pem, cert-chain.pem). ' +
    'A new root also gets root-key.pem, which belongs offline. With --from-root, make another intermediate under an existing root (one per cluster, shared root).',
  flags: createCaFlags,
  async run(config, io) {
    const dir = required(config.out, 'out', 'needs a directory');
    const td = required(config.trustDomain, 'trust-domain');
    const keyType = required(config.keyType, 'key-type');
    const rootTtl = required(config.rootTtl, 'root-ttl');
    const caTtl = required(config.caTtl, 'ca-ttl');
    const organization = config.organization ?? td;
    const now = systemClock.now();

    let root: ParsedCertificate;
    let rootKeyPem: string | undefined;
    let rootKey;
    if (config.fromRoot !== undefined) {
      const certPath = join(config.fromRoot, CACERTS_FILES.rootCert);
      const keyPath = join(config.fromRoot, CACERTS_FILES.rootKey);
      const [certText, keyText] = [await readText(certPath, 'from-root'), await readText(keyPath, 'from-root')];
      root = within('from-root', certPath, () => parseCertificate(certText));
      rootKey = within('from-root', keyPath, () => parsePrivateKeyPem(keyText));
      if (!keyMatchesCertificate(rootKey, root)) throw new CitadelError('KEY_MISMATCH', `--from-root: ${keyPath} is not the key of ${certPath}`);
      if (!root.isCa) throw new CitadelError('NOT_A_CA', `--from-root: ${certPath} is not a CA certificate`);
    } else {
      rootKey = (await generateKeyPair(keyType)).privateKey;
      const issued = issueCaCertificate({ key: rootKey, organization, commonName: 'Root CA', trustDomain: td, ttlMs: rootTtl, now });
      root = parseCertificate(issued.pem);
      rootKeyPem = privateKeyToPem(rootKey);
    }

    const caKey = (await generateKeyPair(keyType)).privateKey;
    const intermediate = issueCaCertificate({
      key: caKey,
      signer: { cert: root, key: rootKey },
      organization,
      commonName: 'Intermediate CA',
      trustDomain: td,
      ttlMs: caTtl,
      now,
      pathLen: 0,
    });

    const files = [
      { name: CACERTS_FILES.rootCert, content: root.pem, secret: false },
      ...(rootKeyPem ? [{ name: CACERTS_FILES.rootKey, content: rootKeyPem, secret: true }] : []),
      { name: CACERTS_FILES.caCert, content: intermediate.pem, secret: false },
      { name: CACERTS_FILES.caKey, content: privateKeyToPem(caKey), secret: true },
      { name: CACERTS_FILES.certChain, content: intermediate.pem + root.pem, secret: false },
    ];
    await writeFiles(dir, files, config.force === true);

    const capped = intermediate.notAfter < now + caTtl - 1000;
    const lines = [
      `Wrote a CA for trust domain "${td}" to ${dir}:`,
      `  ${CACERTS_FILES.rootCert.padEnd(15)} root certificate${config.fromRoot ? ` (copied from ${config.fromRoot})` : ''}, valid until ${new Date(root.notAfter).toISOString()}`,
      ...(rootKeyPem
        ? [`  ${CACERTS_FILES.rootKey.padEnd(15)} ROOT PRIVATE KEY: keep it offline (needed only for --from-root); never put it in the cacerts secret`]
        : []),
      `  ${CACERTS_FILES.caCert.padEnd(15)} intermediate certificate, ${keyType}, valid until ${new Date(intermediate.notAfter).toISOString()}${capped ? ` (capped at the root's expiry; --ca-ttl ${formatDuration(caTtl)} asked for more)` : ''}`,
      `  ${CACERTS_FILES.caKey.padEnd(15)} intermediate private key (mode 0600)`,
      `  ${CACERTS_FILES.certChain.padEnd(15)} intermediate then root`,
      '',
      'Load it into the cluster (namespace of citadel ca):',
      `  kubectl create secret generic cacerts -n citadel-system \\`,
      `    --from-file=${join(dir, CACERTS_FILES.caCert)} --from-file=${join(dir, CACERTS_FILES.caKey)} \\`,
      `    --from-file=${join(dir, CACERTS_FILES.rootCert)} --from-file=${join(dir, CACERTS_FILES.certChain)}`,
      '',
    ];
    io.stdout.write(lines.join('\n'));
    return 0;
  },
});

const inspectFlags = {
  file: flag({ name: 'file', help: 'PEM file with one or more certificates (may also be given as the first argument).', parse: parse.string }),
};

function describeValidity(cert: ParsedCertificate, now: number): string {
  const range = `${new Date(cert.notBefore).toISOString()} to ${new Date(cert.notAfter).toISOString()}`;
  if (now < cert.notBefore) return `${range} (not valid yet)`;
  if (now > cert.notAfter) return `${range} (EXPIRED)`;
  const left = cert.notAfter - now;
  const days = Math.floor(left / 86_400_000);
  return `${range} (${days >= 1 ? `${days} days` : `${Math.floor(left / 3_600_000)} hours`} left)`;
}

/** The human-readable inspection of one certificate (also used by tests). */
export function formatCertificate(cert: ParsedCertificate, now: number): string {
  const spiffe = cert.uris.filter((u) => u.startsWith('spiffe://'));
  const otherUris = cert.uris.filter((u) => !u.startsWith('spiffe://'));
  const rows: Array<[string, string]> = [
    ['Subject', cert.subject || '(empty)'],
    ['SPIFFE IDs', spiffe.length ? spiffe.join(', ') : '(none)'],
  ];
  if (otherUris.length) rows.push(['Other URIs', otherUris.join(', ')]);
  if (cert.dnsNames.length) rows.push(['DNS names', cert.dnsNames.join(', ')]);
  if (cert.ipAddresses.length) rows.push(['IP addresses', cert.ipAddresses.join(', ')]);
  rows.push(
    ['Serial', cert.serialHex],
    ['Issuer', `${cert.issuer || '(empty)'}${cert.selfSigned ? ' (self-signed)' : ''}`],
    ['Validity', describeValidity(cert, now)],
    ['Key type', cert.key.type],
    ['CA', cert.isCa ? `yes${cert.pathLen !== undefined ? ` (pathLen ${cert.pathLen})` : ''}` : 'no'],
  );
  return rows.map(([k, v]) => `  ${`${k}:`.padEnd(14)}${v}`).join('\n');
}

export const inspectCommand = defineCommand({
  name: 'pki inspect',
  usage: 'citadel pki inspect FILE',
  summary: 'Print subject, SPIFFE IDs, serial, issuer, validity, key type and CA flag of each certificate in FILE.',
  positional: 'file',
  flags: inspectFlags,
  async run(config, io) {
    const path = required(config.file, 'file', 'needs a PEM file (citadel pki inspect FILE)');
    const text = await readText(path, 'file');
    const certs = within('file', path, () => {
      const blocks = splitPem(text, 'CERTIFICATE');
      if (blocks.length === 0) throw new CitadelError('PEM_INVALID', 'no PEM certificate found');
      return parseCertificates(blocks.join(''));
    });
    const now = systemClock.now();
    const out = certs.map((c, i) => `Certificate ${i + 1} of ${certs.length}\n${formatCertificate(c, now)}\n`);
    io.stdout.write(out.join('\n'));
    return 0;
  },
});
