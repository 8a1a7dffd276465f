/**
 * Differential check of CSR accept/refuse against an independent parser: `openssl req -verify`. Every CSR citadel
 * accepts must parse and verify in OpenSSL too; where OpenSSL accepts what citadel refuses, the refusal must be
 * one of citadel's deliberate extra rules (strict DER, supported keys and algorithms, bounded sizes, SAN policy).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CitadelError } from '../../src/errors.js';
import { encodePem } from '../../src/pki/pem.js';
import { checkCsr } from './targets.js';

/** Codes citadel may refuse with where OpenSSL accepts: rules OpenSSL does not have. */
export const STRICTER_CODES = new Set(['DER_INVALID', 'CSR_INVALID', 'KEY_UNSUPPORTED', 'KEY_TOO_WEAK', 'SIGNATURE_INVALID', 'PERMISSION_DENIED', 'PEM_INVALID', 'INPUT_TOO_LARGE']);

export interface DifferentialReport {
  readonly compared: number;
  /** Both accept, both refuse. */
  readonly agree: number;
  /** citadel accepts, OpenSSL refuses: always a bug. */
  readonly onlyCitadelAccepts: Buffer[];
  /** OpenSSL accepts, citadel refuses, by citadel's code. */
  readonly onlyOpensslAccepts: Record<string, number>;
}

function opensslVerifies(file: string): boolean {
  try {
    // Exit status 0: parsed, and the self-signature verifies.
    execFileSync('openssl', ['req', '-verify', '-noout', '-in', file], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Compares citadel's CSR check with OpenSSL on each DER input. */
export function differentialCsr(ders: readonly Buffer[]): DifferentialReport {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fuzz-diff-'));
  const onlyCitadelAccepts: Buffer[] = [];
  const onlyOpensslAccepts: Record<string, number> = {};
  let agree = 0;
  try {
    ders.forEach((der, i) => {
      const pem = encodePem('CERTIFICATE REQUEST', der);
      let ours = 'OK';
      try {
        checkCsr(pem);
      } catch (err) {
        ours = err instanceof CitadelError ? err.code : 'NON_CITADEL_ERROR';
      }
      const file = path.join(dir, `${i}.pem`);
      fs.writeFileSync(file, pem);
      const theirs = opensslVerifies(file);
      if ((ours === 'OK' || ours === 'PERMISSION_DENIED') && !theirs) onlyCitadelAccepts.push(der);
      else if (ours !== 'OK' && ours !== 'PERMISSION_DENIED' && theirs) onlyOpensslAccepts[ours] = (onlyOpensslAccepts[ours] ?? 0) + 1;
      else agree++;
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { compared: ders.length, agree, onlyCitadelAccepts, onlyOpensslAccepts };
}
