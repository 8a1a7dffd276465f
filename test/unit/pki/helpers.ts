/** Shared test helpers for the PKI unit tests. */
import { expect } from 'vitest';
import { CitadelError, type ErrorCode } from '../../../src/errors.js';
import { generateKeyPair, issueCaCertificate, parseCertificate, type KeyType, type Signer } from '../../../src/pki/index.js';

/** Asserts that `fn` throws a CitadelError with `code` (and, optionally, a message matching `message`). */
export function expectCode(fn: () => unknown, code: ErrorCode, message?: RegExp): CitadelError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected a CitadelError ${code}`).toBeInstanceOf(CitadelError);
  const err = thrown as CitadelError;
  expect(err.code, err.message).toBe(code);
  if (message) expect(err.message).toMatch(message);
  return err;
}

export const DAY = 86_400_000;
export const HOUR = 3_600_000;
/** A fixed issuance time (2026-06-01T00:00:00Z) so that results do not depend on the clock. */
export const NOW = Date.UTC(2026, 5, 1);

/** A self-signed root and an intermediate under it, with keys of the given types. */
export async function makeCa(rootType: KeyType = 'ecdsa-p256', interType: KeyType = rootType, now = NOW): Promise<{ root: Signer; intermediate: Signer }> {
  const rootKeys = await generateKeyPair(rootType);
  const root = parseCertificate(issueCaCertificate({ key: rootKeys.privateKey, organization: 'cluster.local', commonName: 'Root CA', trustDomain: 'cluster.local', ttlMs: 3650 * DAY, now }).pem);
  const interKeys = await generateKeyPair(interType);
  const intermediate = parseCertificate(
    issueCaCertificate({ key: interKeys.privateKey, signer: { cert: root, key: rootKeys.privateKey }, organization: 'cluster.local', commonName: 'Intermediate CA', trustDomain: 'cluster.local', ttlMs: 365 * DAY, now, pathLen: 0 }).pem,
  );
  return { root: { cert: root, key: rootKeys.privateKey }, intermediate: { cert: intermediate, key: interKeys.privateKey } };
}
