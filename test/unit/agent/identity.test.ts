import { describe, expect, it } from 'vitest';
import { decodeTokenClaims, resolveIdentity } from '../../../src/agent/identity.js';
import { isCitadelError } from '../../../src/errors.js';
import { fakeToken } from './support.js';

const jwt = (payload: unknown) => `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;

describe('decodeTokenClaims', () => {
  it('reads namespace and ServiceAccount from a bound token', () => {
    expect(decodeTokenClaims(fakeToken('shop', 'frontend'))).toEqual({ namespace: 'shop', serviceAccount: 'frontend' });
  });

  it('reads legacy secret-token claims', () => {
    const token = jwt({ 'kubernetes.io/serviceaccount/namespace': 'legacy', 'kubernetes.io/serviceaccount/service-account.name': 'old' });
    expect(decodeTokenClaims(token)).toEqual({ namespace: 'legacy', serviceAccount: 'old' });
  });

  it('falls back to the subject', () => {
    expect(decodeTokenClaims(jwt({ sub: 'system:serviceaccount:ns1:sa1' }))).toEqual({ namespace: 'ns1', serviceAccount: 'sa1' });
    expect(decodeTokenClaims(jwt({ sub: 'someone-else' }))).toEqual({});
  });

  it('rejects what is not a JWT', () => {
    for (const bad of ['opaque', 'a.b', 'a.!!!.c', `a.${Buffer.from('[1]x').toString('base64url')}.c`]) {
      expect(() => decodeTokenClaims(bad)).toThrow();
    }
    try {
      decodeTokenClaims('not-a-jwt');
    } catch (err) {
      expect(isCitadelError(err, 'UNAUTHENTICATED')).toBe(true);
    }
  });
});

describe('resolveIdentity', () => {
  it('builds the SPIFFE ID from the token', () => {
    const id = resolveIdentity({ trustDomain: 'cluster.local', token: fakeToken('shop', 'frontend') });
    expect(id.spiffeId).toBe('spiffe://cluster.local/ns/shop/sa/frontend');
    expect(id.conflicts).toEqual([]);
  });

  it('prefers explicit configuration and reports a disagreement', () => {
    const id = resolveIdentity({ trustDomain: 'example.org', namespace: 'a', serviceAccount: 'b', token: fakeToken('shop', 'frontend') });
    expect(id.spiffeId).toBe('spiffe://example.org/ns/a/sa/b');
    expect(id.conflicts).toHaveLength(2);
  });

  it('mixes a configured namespace with the token ServiceAccount', () => {
    expect(resolveIdentity({ trustDomain: 'td', namespace: 'shop', token: fakeToken('shop', 'cart') }).spiffeId).toBe('spiffe://td/ns/shop/sa/cart');
  });

  it('works from configuration alone (opaque or no token)', () => {
    expect(resolveIdentity({ trustDomain: 'td', namespace: 'n', serviceAccount: 's', token: 'opaque' }).spiffeId).toBe('spiffe://td/ns/n/sa/s');
  });

  it('fails when the identity is unknown', () => {
    expect(() => resolveIdentity({ trustDomain: 'td' })).toThrow(/cannot tell the workload identity/);
    expect(() => resolveIdentity({ trustDomain: 'td', namespace: 'n', token: 'opaque' })).toThrow(/SERVICE_ACCOUNT/);
  });

  it('rejects an invalid trust domain', () => {
    expect(() => resolveIdentity({ trustDomain: 'Bad Domain', namespace: 'n', serviceAccount: 's' })).toThrow();
  });
});
