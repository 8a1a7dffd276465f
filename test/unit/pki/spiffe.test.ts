import { describe, expect, it } from 'vitest';
import { isSpiffeId, parseSpiffeId, parseWorkloadSpiffeId, trustDomainId, validateTrustDomain, workloadSpiffeId } from '../../../src/pki/index.js';
import { expectCode } from './helpers.js';

describe('SPIFFE IDs (SPIFFE-ID section 2)', () => {
  it.each([
    ['spiffe://cluster.local/ns/default/sa/bookinfo', 'cluster.local', '/ns/default/sa/bookinfo'],
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://a-b_c.9/x/Y.z-_/0', 'a-b_c.9', '/x/Y.z-_/0'],
    ['spiffe://td/...', 'td', '/...'],
    ['spiffe://td/.a/a.', 'td', '/.a/a.'],
  ])('accepts %s', (id, trustDomain, path) => {
    expect(parseSpiffeId(id)).toEqual({ trustDomain, path });
    expect(isSpiffeId(id)).toBe(true);
  });

  it.each([
    ['', /empty/],
    ['http://cluster.local/ns/a', /scheme/],
    ['SPIFFE://cluster.local/ns/a', /scheme/],
    ['spiffe:/cluster.local/ns/a', /scheme/],
    ['spiffe://', /trust domain is empty/],
    ['spiffe:///ns/a', /trust domain is empty/],
    ['spiffe://cluster.local:8080/ns/a', /port/],
    ['spiffe://user@cluster.local/ns/a', /userinfo/],
    ['spiffe://Cluster.local/ns/a', /lowercase/],
    ['spiffe://clu%73ter.local/ns/a', /percent/],
    ['spiffe://clüster.local/ns/a', /may only contain/],
    ['spiffe://cluster.local/ns/a?x=1', /query/],
    ['spiffe://cluster.local/ns/a#frag', /fragment/],
    ['spiffe://cluster.local/', /empty segment/],
    ['spiffe://cluster.local/ns//a', /empty segment/],
    ['spiffe://cluster.local/ns/a/', /trailing slash/],
    ['spiffe://cluster.local/./a', /"\." or "\.\."/],
    ['spiffe://cluster.local/ns/..', /"\." or "\.\."/],
    ['spiffe://cluster.local/ns/a%2Fb', /percent/],
    ['spiffe://cluster.local/ns/a b', /may only contain/],
    ['spiffe://cluster.local/ns/ä', /may only contain/],
  ])('rejects %j', (id, reason) => {
    expectCode(() => parseSpiffeId(id), 'SPIFFE_ID_INVALID', reason);
    expect(isSpiffeId(id)).toBe(false);
  });

  it('accepts IDs of exactly 2048 bytes and rejects longer ones', () => {
    const prefix = 'spiffe://td/';
    const exact = prefix + 'a'.repeat(2048 - prefix.length);
    expect(Buffer.byteLength(exact)).toBe(2048);
    expect(parseSpiffeId(exact).trustDomain).toBe('td');
    expectCode(() => parseSpiffeId(exact + 'a'), 'SPIFFE_ID_INVALID', /2048 bytes/);
  });

  it('limits the trust domain to 255 bytes', () => {
    expect(validateTrustDomain('a'.repeat(255))).toBe('a'.repeat(255));
    expectCode(() => validateTrustDomain('a'.repeat(256)), 'SPIFFE_ID_INVALID', /255/);
    expectCode(() => parseSpiffeId(`spiffe://${'a'.repeat(256)}/x`), 'SPIFFE_ID_INVALID', /255/);
  });

  it('validates trust domain names on their own', () => {
    expect(validateTrustDomain('cluster.local')).toBe('cluster.local');
    for (const bad of ['', 'Cluster.local', 'td:80', 'a/b', 'a%41']) expectCode(() => validateTrustDomain(bad), 'SPIFFE_ID_INVALID');
    expect(trustDomainId('example.org')).toBe('spiffe://example.org');
  });

  it('builds and parses Istio workload IDs', () => {
    const id = workloadSpiffeId('cluster.local', 'default', 'bookinfo-productpage');
    expect(id).toBe('spiffe://cluster.local/ns/default/sa/bookinfo-productpage');
    expect(parseWorkloadSpiffeId(id)).toEqual({ trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'bookinfo-productpage' });
    expect(parseWorkloadSpiffeId('spiffe://cluster.local/ns/default')).toBeUndefined();
    expect(parseWorkloadSpiffeId('spiffe://cluster.local/ns/a/sa/b/c')).toBeUndefined();
    expect(parseWorkloadSpiffeId('spiffe://Bad/ns/a/sa/b')).toBeUndefined();
    expectCode(() => workloadSpiffeId('cluster.local', '', 'sa'), 'SPIFFE_ID_INVALID', /namespace/);
    expectCode(() => workloadSpiffeId('cluster.local', 'ns', 'a/b'), 'SPIFFE_ID_INVALID', /service account/);
    expectCode(() => workloadSpiffeId('Cluster', 'ns', 'sa'), 'SPIFFE_ID_INVALID', /lowercase/);
    expectCode(() => workloadSpiffeId('td', 'ns', 'x'.repeat(2040)), 'SPIFFE_ID_INVALID', /2048/);
  });
});
