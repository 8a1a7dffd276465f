import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { CitadelError } from '../../../src/errors.js';
import { fromGrpcError, isRetryableStatus, toGrpcStatus } from '../../../src/grpc/errors.js';

describe('toGrpcStatus', () => {
  it('maps a CitadelError to its status and safe message, never the detail', () => {
    const s = toGrpcStatus(new CitadelError('PERMISSION_DENIED', 'CSR asks for spiffe://x/ns/a/sa/b', 'token of sa c'));
    expect(s).toEqual({ code: status.PERMISSION_DENIED, details: 'CSR asks for spiffe://x/ns/a/sa/b' });
    expect(toGrpcStatus(new CitadelError('RATE_LIMITED', 'slow down')).code).toBe(status.RESOURCE_EXHAUSTED);
    expect(toGrpcStatus(new CitadelError('KEY_TOO_WEAK', 'weak')).code).toBe(status.INVALID_ARGUMENT);
    // A CA that is not ready yet is worth a retry; INTERNAL would say it is broken.
    expect(toGrpcStatus(new CitadelError('CA_NOT_READY', 'loading')).code).toBe(status.UNAVAILABLE);
  });
  it('hides anything else behind INTERNAL "internal error"', () => {
    expect(toGrpcStatus(new Error('db password is hunter2'))).toEqual({ code: status.INTERNAL, details: 'internal error' });
    expect(toGrpcStatus('x')).toEqual({ code: status.INTERNAL, details: 'internal error' });
  });
});

describe('fromGrpcError', () => {
  it('classifies remote statuses', () => {
    const e = (code: status, details = '') => fromGrpcError(Object.assign(new Error('x'), { code, details }), 'Call');
    expect(e(status.UNAUTHENTICATED, 'bad token').code).toBe('UNAUTHENTICATED');
    expect(e(status.UNAUTHENTICATED, 'bad token').message).toBe('Call: UNAUTHENTICATED: bad token');
    expect(e(status.PERMISSION_DENIED).code).toBe('PERMISSION_DENIED');
    expect(e(status.RESOURCE_EXHAUSTED).code).toBe('RATE_LIMITED');
    expect(e(status.UNAVAILABLE).code).toBe('UPSTREAM_UNAVAILABLE');
    expect(e(status.DEADLINE_EXCEEDED).code).toBe('UPSTREAM_UNAVAILABLE');
    expect(e(status.INTERNAL).code).toBe('UPSTREAM_UNAVAILABLE');
    expect(e(status.INVALID_ARGUMENT).code).toBe('CSR_INVALID');
    expect(fromGrpcError(new Error('plain'), 'Call').code).toBe('INTERNAL');
  });
  it('knows which statuses are worth a retry', () => {
    expect(isRetryableStatus(status.UNAVAILABLE)).toBe(true);
    expect(isRetryableStatus(status.UNAUTHENTICATED)).toBe(false);
  });
});
