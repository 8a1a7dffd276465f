/**
 * `citadel pki create-ca` and `citadel pki inspect`: operator tools over src/pki. This file does the file
 * I/O and reads the clock; every certificate decision is in src/pki.
 */
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock } from '../clock.js';
import { formatDuration } from '../config/flags.js';
import { createCaFlags, inspectFlags, revokeFlags } from '../config/pki.js';
import { CitadelError } from '../errors.js';
import {
  crlSignProblem,
  generateKeyPair,
  isCrlSignedBy,
  issueCrl,
  normaliseSerial,
  parseCrls,
  issueCaCertificate,
  keyMatchesCertificate,
  parseCertificate,
  parseCertificates,
  parsePrivateKeyPem,
  privateKeyToPem,
  splitPem,
  type CrlEntry,
  type ParsedCertificate,
  type ParsedCrl,
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
    ['CA', cert.isCa ? `yes${cert.pathLen !== undefined ? ` (pathLen ${cert.pathLen})` : ''}, ${crlSignProblem(cert) ? 'may NOT sign CRLs (keyUsage lacks cRLSign)' : 'may sign CRLs'}` : 'no'],
  );
  return formatRows(rows);
}

const formatRows = (rows: ReadonlyArray<[string, string]>) => rows.map(([k, v]) => `  ${`${k}:`.padEnd(14)}${v}`).join('\n');

/** The human-readable inspection of one CRL (also used by tests). */
export function formatCrl(crl: ParsedCrl, now: number): string {
  const next = crl.nextUpdate === undefined ? '(none: RFC 5280 requires one)' : `${new Date(crl.nextUpdate).toISOString()}${crl.nextUpdate <= now ? ' (EXPIRED: Envoy refuses every handshake through this CA)' : ''}`;
  const rows: Array<[string, string]> = [
    ['Issuer', crl.issuer || '(empty)'],
    ['This update', new Date(crl.thisUpdate).toISOString()],
    ['Next update', next],
    ['CRL number', crl.number ?? '(none)'],
    ['Issuer key', crl.authorityKeyId ? crl.authorityKeyId.toString('hex') : '(no authority key identifier)'],
    ['Revoked', crl.entries.length === 0 ? 'none' : String(crl.entries.length)],
  ];
  for (const e of crl.entries) rows.push(['', `${e.serialHex} at ${new Date(e.revokedAt).toISOString()}${e.reason ? ` (${e.reason})` : ''}`]);
  return formatRows(rows);
}

export const inspectCommand = defineCommand({
  name: 'pki inspect',
  usage: 'citadel pki inspect FILE',
  summary: 'Print subject, SPIFFE IDs, serial, issuer, validity, key type and CA flag of each certificate in FILE, and issuer, updates, number and entries of each CRL.',
  positional: 'file',
  flags: inspectFlags,
  async run(config, io) {
    const path = required(config.file, 'file', 'needs a PEM file (citadel pki inspect FILE)');
    const text = await readText(path, 'file');
    const { certs, crls } = within('file', path, () => {
      const certBlocks = splitPem(text, 'CERTIFICATE');
      const crlBlocks = splitPem(text, 'X509 CRL');
      if (certBlocks.length === 0 && crlBlocks.length === 0) throw new CitadelError('PEM_INVALID', 'no PEM certificate found (nor a CRL)');
      return { certs: certBlocks.length ? parseCertificates(certBlocks.join('')) : [], crls: parseCrls(crlBlocks.join('')) };
    });
    const now = systemClock.now();
    const out = [
      ...certs.map((c, i) => `Certificate ${i + 1} of ${certs.length}\n${formatCertificate(c, now)}\n`),
      ...crls.map((c, i) => `CRL ${i + 1} of ${crls.length}\n${formatCrl(c, now)}\n`),
    ];
    io.stdout.write(out.join('\n'));
    return 0;
  },
});

export const revokeCommand = defineCommand({
  name: 'pki revoke',
  usage: 'citadel pki revoke --ca-cert root-cert.pem --ca-key root-key.pem --out ca-crl.pem [--serial HEX,...] [--unrevoke HEX,...] [--reason R] [--validity 720h]',
  summary: 'Sign (or re-sign) the CRL of a CA kept outside the cluster, e.g. the root of a plugged-in intermediate, into ca-crl.pem for the cacerts Secret.',
  flags: revokeFlags,
  async run(config, io) {
    const certPath = required(config.caCert, 'ca-cert', 'needs the CA certificate file');
    const keyPath = required(config.caKey, 'ca-key', 'needs the CA private key file');
    const out = required(config.out, 'out', 'needs the CRL file to write (ca-crl.pem)');
    const [certText, keyText] = [await readText(certPath, 'ca-cert'), await readText(keyPath, 'ca-key')];
    const cert = within('ca-cert', certPath, () => parseCertificate(certText));
    const key = within('ca-key', keyPath, () => parsePrivateKeyPem(keyText));
    if (!keyMatchesCertificate(key, cert)) throw new CitadelError('KEY_MISMATCH', `--ca-key: ${keyPath} is not the key of ${certPath}`);
    const problem = crlSignProblem(cert);
    if (problem) throw new CitadelError('NOT_A_CA', `--ca-cert: ${certPath} may not sign CRLs: ${problem}; reissue the CA with keyUsage cRLSign (citadel pki create-ca does)`);
    const existingText = (await exists(out)) ? await readText(out, 'out') : '';
    const existing = within('out', out, () => parseCrls(existingText));
    const mine = existing.filter((c) => isCrlSignedBy(c, cert));
    const others = existing.filter((c) => !mine.includes(c));
    const now = systemClock.now();
    const entries = new Map<string, CrlEntry>();
    for (const c of mine) for (const e of c.entries) entries.set(e.serialHex, e);
    const serials = (list: readonly string[], flagName: string) => list.map((s) => within(flagName, s, () => normaliseSerial(s)));
    for (const s of serials(config.serial ?? [], 'serial')) if (!entries.has(s)) entries.set(s, { serialHex: s, revokedAt: now, reason: config.reason! });
    for (const s of serials(config.unrevoke ?? [], 'unrevoke')) entries.delete(s);
    const lastNumber = mine.reduce((n, c) => (c.number !== undefined && BigInt(c.number) > n ? BigInt(c.number) : n), 0n);
    const number = Math.max(Number(lastNumber) + 1, Math.floor(now / 1000));
    const crl = issueCrl({ signer: { cert, key }, number, thisUpdate: now - 2 * 60_000, nextUpdate: now + config.validity!, entries: [...entries.values()] });
    await writeFile(out, [crl.pem, ...others.map((c) => c.pem)].join(''), { mode: 0o644 });
    io.stdout.write([
      `Wrote ${out}: the CRL of "${cert.subject}" (number ${number}, ${entries.size} revoked, next update ${new Date(now + config.validity!).toISOString()})${others.length ? ` and ${others.length} other CA CRL(s) unchanged` : ''}.`,
      'Put it into the cacerts Secret as ca-crl.pem, e.g.:',
      `  kubectl -n citadel-system create secret generic cacerts --from-file=... --from-file=ca-crl.pem=${out} --dry-run=client -o yaml | kubectl apply -f -`,
      `Run this again before the next update (citadel_server_crl_next_update_timestamp alerts on it).`,
      '',
    ].join('\n'));
    return 0;
  },
});

