import { describe, expect, it } from 'vitest';
import { CitadelError } from '../../../src/errors.js';
import { createCsr, generateKeyPair, issueWorkloadCertificate, parseCertificate, parseCsr, parsePrivateKeyPem, privateKeyToPem } from '../../../src/pki/index.js';
import { encodePem } from '../../../src/pki/pem.js';
import { NOW, HOUR, makeCa } from './helpers.js';

/** A deterministic PRNG so a failure can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Every mutation must either parse or fail with a CitadelError (never a TypeError, RangeError or hang). */
function fuzz(label: string, der: Buffer, parse: (pem: string) => unknown, rounds: number, seed: number): { ok: number; rejected: Map<string, number> } {
  const rand = prng(seed);
  const rejected = new Map<string, number>();
  let ok = 0;
  for (let i = 0; i < rounds; i++) {
    const m = Buffer.from(der);
    const kind = Math.floor(rand() * 4);
    let input: Buffer = m;
    if (kind === 0) {
      for (let j = 0; j < 1 + Math.floor(rand() * 3); j++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
    } else if (kind === 1) {
      input = m.subarray(0, Math.floor(rand() * m.length));
    } else if (kind === 2) {
      const at = Math.floor(rand() * m.length);
      input = Buffer.concat([m.subarray(0, at), Buffer.from([Math.floor(rand() * 256)]), m.subarray(at)]);
    } else {
      const at = Math.floor(rand() * m.length);
      input = Buffer.concat([m.subarray(0, at), m.subarray(at + 1 + Math.floor(rand() * 8))]);
    }
    try {
      parse(encodePem(label, input));
      ok++;
    } catch (err) {
      if (!(err instanceof CitadelError)) throw new Error(`mutation ${i} (kind ${kind}) threw a non-CitadelError: ${String(err)}\n${input.toString('hex')}`);
      rejected.set(err.code, (rejected.get(err.code) ?? 0) + 1);
    }
  }
  return { ok, rejected };
}

describe('mutated input never escapes as anything but a CitadelError', () => {
  it('certificates', async () => {
    const { intermediate } = await makeCa('ecdsa-p256', 'rsa-2048');
    const { publicKey } = await generateKeyPair('ecdsa-p256');
    const { der } = issueWorkloadCertificate({ signer: intermediate, publicKey, spiffeId: 'spiffe://cluster.local/ns/a/sa/b', dnsNames: ['a.b'], ttlMs: HOUR, now: NOW });
    const r = fuzz('CERTIFICATE', der, parseCertificate, 3000, 1);
    expect(r.rejected.get('DER_INVALID')).toBeGreaterThan(100);
  });

  it('CSRs', async () => {
    for (const type of ['ecdsa-p256', 'rsa-2048'] as const) {
      const { privateKey } = await generateKeyPair(type);
      const pem = createCsr({ key: privateKey, spiffeId: 'spiffe://cluster.local/ns/a/sa/b' });
      const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
      const r = fuzz('CERTIFICATE REQUEST', der, (text) => expect(parseCsr(text).uris).toEqual(['spiffe://cluster.local/ns/a/sa/b']), 2000, 2);
      // Nearly every change breaks the DER or the signature; none may be accepted with a changed SAN.
      expect((r.rejected.get('DER_INVALID') ?? 0) + (r.rejected.get('SIGNATURE_INVALID') ?? 0)).toBeGreaterThan(1500);
    }
  });

  it('private keys', async () => {
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const der = Buffer.from(privateKeyToPem(privateKey).replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    fuzz('PRIVATE KEY', der, parsePrivateKeyPem, 1000, 3);
  });
});
