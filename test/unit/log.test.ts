import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CitadelError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';

function logLine(fields: Record<string, unknown>): Record<string, unknown> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  createLogger({ destination: out }).warn(fields, 'x');
  return JSON.parse(text) as Record<string, unknown>;
}

describe('the err log field', () => {
  it('shows a CitadelError by code, message and detail, without a stack (an expected failure)', () => {
    expect(logLine({ err: new CitadelError('UPSTREAM_UNAVAILABLE', 'cannot verify the token right now', 'TokenReview: 503') }).err).toEqual({
      type: 'CitadelError',
      code: 'UPSTREAM_UNAVAILABLE',
      message: 'cannot verify the token right now',
      detail: 'TokenReview: 503',
    });
  });

  it('keeps the type and stack of any other Error (maybe a bug), and only the first line of its message', () => {
    const err = logLine({ err: new TypeError('HTTP-Code: 409\nBody: {"kind":"Status", ...}') }).err as Record<string, unknown>;
    expect(err.type).toBe('TypeError');
    expect(err.message).toBe('HTTP-Code: 409');
    expect(err.stack).toMatch(/TypeError: HTTP-Code: 409/);
  });

  it('still says something for a thrown non-Error', () => {
    expect(logLine({ err: 'plain string' }).err).toEqual({ message: 'plain string' });
  });

  it('redacts tokens and keys that reach a logger by mistake', () => {
    const line = logLine({ token: 'eyJhbGciOi.secret', req: { authorization: 'Bearer x' } });
    expect(JSON.stringify(line)).not.toMatch(/eyJhbGciOi|Bearer x/);
  });
});
