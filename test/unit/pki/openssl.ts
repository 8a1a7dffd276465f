/** Helpers that run the real `openssl` command as an independent verifier of what src/pki produces. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export interface OpensslResult {
  ok: boolean;
  out: string;
}

/** Runs openssl; never throws on a non-zero exit (the result says), stdout and stderr together. */
export function openssl(args: readonly string[], input?: string | Buffer): OpensslResult {
  try {
    const out = execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'], encoding: 'utf8' });
    return { ok: true, out };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/** Like openssl() but throws with openssl's output when it fails. */
export function opensslOk(args: readonly string[], input?: string | Buffer): string {
  const r = openssl(args, input);
  if (!r.ok) throw new Error(`openssl ${args.join(' ')} failed:\n${r.out}`);
  return r.out;
}

/** A scratch directory removed after the test file; `file(name, content)` writes and returns a path. */
export function scratch(): { dir: string; file(name: string, content: string | Buffer): string } {
  const dir = mkdtempSync(join(tmpdir(), 'citadel-pki-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, file: (name, content) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  } };
}

/** The `-text` dump of a certificate with the extensions we care about. */
export function x509Text(certPem: string): string {
  return opensslOk(['x509', '-noout', '-text', '-ext', 'subjectAltName,keyUsage,extendedKeyUsage,basicConstraints,subjectKeyIdentifier,authorityKeyIdentifier'], certPem);
}

/** openssl verify with a root file and optional untrusted intermediates, at an optional time (seconds). */
export function opensslVerify(files: { root: string; untrusted?: string; cert: string; attime?: number; extra?: string[] }): OpensslResult {
  const args = ['verify', '-CAfile', files.root];
  if (files.untrusted) args.push('-untrusted', files.untrusted);
  if (files.attime !== undefined) args.push('-attime', String(Math.floor(files.attime)));
  args.push(...(files.extra ?? []), files.cert);
  return openssl(args);
}
