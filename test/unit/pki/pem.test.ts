import { describe, expect, it } from 'vitest';
import { MAX_INPUT_BYTES, decodePemBlocks, decodeSinglePem, encodePem, splitPem } from '../../../src/pki/pem.js';
import { expectCode } from './helpers.js';

const der = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
const pem = encodePem('CERTIFICATE', der);

describe('PEM', () => {
  it('encodes 64-character lines with a final newline', () => {
    const lines = pem.split('\n');
    expect(lines[0]).toBe('-----BEGIN CERTIFICATE-----');
    expect(lines[1]).toHaveLength(64);
    expect(lines.at(-2)).toBe('-----END CERTIFICATE-----');
    expect(pem.endsWith('-----\n')).toBe(true);
  });

  it('splits bundles, ignores text between blocks and normalises each block', () => {
    const messy = `subject=foo\r\n${pem.replace(/\n/g, '\r\n').replace('-----\r\n', '-----\r\n  ')}\n\nsome comment\n${encodePem('PRIVATE KEY', Buffer.from('k'))}${pem}`;
    expect(splitPem(messy)).toEqual([pem, encodePem('PRIVATE KEY', Buffer.from('k')), pem]);
    expect(splitPem(messy, 'CERTIFICATE')).toEqual([pem, pem]);
    expect(splitPem('no pem here')).toEqual([]);
  });

  it('rejects mismatched labels, bad base64, headers and a BEGIN without END', () => {
    expectCode(() => decodePemBlocks(pem.replace('END CERTIFICATE', 'END X509 CRL')), 'PEM_INVALID', /ends with/);
    expectCode(() => decodePemBlocks(pem.replace(/\n[A-Za-z]/, '\n*')), 'PEM_INVALID', /base64/);
    expectCode(() => decodePemBlocks('-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n'), 'PEM_INVALID', /base64/);
    expectCode(() => decodePemBlocks('-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n'), 'PEM_INVALID');
    expectCode(() => decodePemBlocks('-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n'), 'PEM_INVALID', /headers/);
    expectCode(() => decodePemBlocks(pem + pem.slice(0, 80)), 'PEM_INVALID', /without an END/);
  });

  it('decodeSinglePem: none is PEM_INVALID, several is PEM_MULTIPLE, another label is PEM_INVALID', () => {
    expect(decodeSinglePem(pem, ['CERTIFICATE'], 'certificate').der).toEqual(der);
    expectCode(() => decodeSinglePem('hello', ['CERTIFICATE'], 'certificate'), 'PEM_INVALID', /no PEM/);
    expectCode(() => decodeSinglePem(pem + pem, ['CERTIFICATE'], 'certificate'), 'PEM_MULTIPLE');
    expectCode(() => decodeSinglePem(encodePem('PUBLIC KEY', der), ['CERTIFICATE'], 'certificate'), 'PEM_INVALID', /PUBLIC KEY/);
  });

  it('rejects input over 64 KiB before looking at it', () => {
    expect(MAX_INPUT_BYTES).toBe(65536);
    const big = pem + ' '.repeat(MAX_INPUT_BYTES - pem.length + 1);
    expectCode(() => splitPem(big), 'INPUT_TOO_LARGE');
    expect(splitPem(big.slice(0, MAX_INPUT_BYTES))).toEqual([pem]);
  });
});
