import { beforeAll, describe, expect, it } from 'vitest';
import { detectLayout, loadPluggedMaterial, loadSelfSignedMaterial } from '../../../src/ca/material.js';
import { isCitadelError } from '../../../src/errors.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, type TestCa } from './fixtures.js';

const NOW = Date.UTC(2026, 5, 1);
let root: TestCa;
let inter: TestCa;
let other: TestCa;

beforeAll(async () => {
  root = await makeRoot('Root', NOW - DAY);
  inter = await makeIntermediate(root, 'Inter', NOW - DAY);
  other = await makeRoot('Other', NOW - DAY);
});

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isCitadelError(err, 'CA_MATERIAL_INVALID')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('accepted');
}

describe('detectLayout', () => {
  it('tells Istio, TLS and no layout apart and lists what is missing', () => {
    expect(detectLayout({})).toEqual({ kind: 'none' });
    expect(detectLayout({ 'root-cert.pem': 'x' })).toEqual({ kind: 'istio', missing: ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem'] });
    expect(detectLayout({ 'tls.crt': 'x', 'ca.crt': 'y' })).toEqual({ kind: 'tls', missing: ['tls.key'] });
    expect(detectLayout(istioFiles(inter, root))).toEqual({ kind: 'istio', missing: [] });
  });
});

describe('loadPluggedMaterial', () => {
  it('accepts a root + intermediate set and derives the response chain from the verified path', () => {
    const m = loadPluggedMaterial(istioFiles(inter, root), 'dir /x', NOW);
    expect(m.mode).toBe('plugged');
    expect(m.intermediates.map((c) => c.subject)).toEqual([inter.cert.subject]);
    expect(m.roots.map((c) => c.subject)).toEqual([root.cert.subject]);
    expect(m.anchor.subject).toBe(root.cert.subject);
  });

  it('accepts the kubernetes.io/tls layout', () => {
    const m = loadPluggedMaterial({ 'tls.crt': inter.pem + root.pem, 'tls.key': inter.keyPem, 'ca.crt': root.pem }, 'secret ns/cacerts', NOW);
    expect(m.signer.cert.subject).toBe(inter.cert.subject);
  });

  it('accepts a root used directly as the signing certificate', () => {
    const m = loadPluggedMaterial({ 'ca-cert.pem': root.pem, 'ca-key.pem': root.keyPem, 'cert-chain.pem': '', 'root-cert.pem': root.pem }, 's', NOW);
    expect(m.intermediates).toEqual([]);
  });

  it('refuses each broken set with the file and the reason', () => {
    const good = istioFiles(inter, root);
    expect(refusal(() => loadPluggedMaterial({ ...good, 'ca-key.pem': undefined as unknown as string }, 'S', NOW))).toBe(
      'S: ca-key.pem: missing (found only ca-cert.pem, cert-chain.pem, root-cert.pem); all of ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem are required',
    );
    expect(refusal(() => loadPluggedMaterial({ ...good, 'ca-key.pem': other.keyPem }, 'S', NOW))).toBe('S: ca-key.pem: does not match the public key of ca-cert.pem');
    expect(refusal(() => loadPluggedMaterial({ ...good, 'root-cert.pem': other.pem }, 'S', NOW))).toMatch(/^S: cert-chain\.pem: ca-cert\.pem does not chain to root-cert\.pem/);
    expect(refusal(() => loadPluggedMaterial({ ...good, 'ca-key.pem': 'junk' }, 'S', NOW))).toMatch(/^S: ca-key\.pem: /);
    expect(refusal(() => loadPluggedMaterial({ ...good, 'ca-cert.pem': '' }, 'S', NOW))).toBe('S: ca-cert.pem: is empty');
    expect(refusal(() => loadPluggedMaterial({ ...good, 'ca-cert.pem': inter.pem + root.pem }, 'S', NOW))).toMatch(/holds 2 certificates/);
    expect(refusal(() => loadPluggedMaterial(good, 'S', NOW + 200 * DAY))).toMatch(/^S: ca-cert\.pem: expired at /);
    expect(refusal(() => loadPluggedMaterial({}, 'S', NOW))).toMatch(/no CA files found/);
  });
});

describe('loadSelfSignedMaterial', () => {
  it('keeps older roots from root-cert.pem while they are valid', async () => {
    const older = await makeRoot('Older', NOW - 10 * DAY, 20 * DAY);
    const m = loadSelfSignedMaterial({ 'ca-cert.pem': root.pem, 'ca-key.pem': root.keyPem, 'root-cert.pem': root.pem + older.pem }, 'S', NOW);
    expect(m.roots.map((r) => r.subject)).toEqual([root.cert.subject, older.cert.subject]);
    const later = loadSelfSignedMaterial({ 'ca-cert.pem': root.pem, 'ca-key.pem': root.keyPem, 'root-cert.pem': root.pem + older.pem }, 'S', NOW + 11 * DAY);
    expect(later.roots.map((r) => r.subject)).toEqual([root.cert.subject]);
  });

  it('refuses an intermediate or a foreign key', () => {
    expect(refusal(() => loadSelfSignedMaterial({ 'ca-cert.pem': inter.pem, 'ca-key.pem': inter.keyPem }, 'S', NOW))).toBe('S: ca-cert.pem: is not self-signed');
    expect(refusal(() => loadSelfSignedMaterial({ 'ca-cert.pem': root.pem, 'ca-key.pem': other.keyPem }, 'S', NOW))).toMatch(/ca-key\.pem: does not match/);
    expect(refusal(() => loadSelfSignedMaterial({ 'ca-cert.pem': root.pem }, 'S', NOW))).toBe('S: ca-key.pem: missing or empty');
  });
});
