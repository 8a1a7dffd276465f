import { createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  decodeJwtSvid,
  deriveJwtSigningKey,
  generateKeyPair,
  importJwks,
  issueCaCertificate,
  parseCertificate,
  parseSpiffeBundle,
  signJwtSvid,
  spiffeBundleJson,
  validateJwtSvid,
} from '../../../src/pki/index.js';

const NOW = Date.UTC(2026, 5, 1);
const SUB = 'spiffe://cluster.local/ns/app/sa/web';

async function caKey() {
  return (await generateKeyPair('ecdsa-p256')).privateKey;
}

describe('JWT-SVID keys derived per period', () => {
  it('are the same for the same CA key, trust domain and period, and differ otherwise', async () => {
    const key = await caKey();
    const a = deriveJwtSigningKey({ caKey: key, trustDomain: 'cluster.local', period: 7 });
    const b = deriveJwtSigningKey({ caKey: key, trustDomain: 'cluster.local', period: 7 });
    expect(a.kid).toBe(b.kid);
    expect(a.privateKey.export({ format: 'jwk' })).toEqual(b.privateKey.export({ format: 'jwk' }));
    expect(deriveJwtSigningKey({ caKey: key, trustDomain: 'cluster.local', period: 8 }).kid).not.toBe(a.kid);
    expect(deriveJwtSigningKey({ caKey: key, trustDomain: 'other.td', period: 7 }).kid).not.toBe(a.kid);
    expect(deriveJwtSigningKey({ caKey: await caKey(), trustDomain: 'cluster.local', period: 7 }).kid).not.toBe(a.kid);
    // The public JWK is the private key's own (node derives it independently from d).
    expect(createPublicKey(a.privateKey).export({ format: 'jwk' })).toMatchObject({ kty: 'EC', crv: 'P-256', x: a.publicJwk.x, y: a.publicJwk.y });
  });

  it('works from an RSA CA key too', async () => {
    const rsa = (await generateKeyPair('rsa-2048')).privateKey;
    expect(deriveJwtSigningKey({ caKey: rsa, trustDomain: 'cluster.local', period: 1 }).publicJwk.crv).toBe('P-256');
  });
});

describe('JWT-SVID signing and validation', () => {
  const setup = async () => {
    const key = deriveJwtSigningKey({ caKey: await caKey(), trustDomain: 'cluster.local', period: 1 });
    const keys = importJwks(new Map([[key.kid, { ...key.publicJwk }]]));
    const token = signJwtSvid(key, { sub: SUB, aud: ['db'], exp: Math.floor(NOW / 1000) + 300, iat: Math.floor(NOW / 1000) });
    return { key, keys, token };
  };

  it('round-trips: ES256 header with kid and typ, one audience as a string', async () => {
    const { key, keys, token } = await setup();
    const { header, claims } = decodeJwtSvid(token);
    expect(header).toEqual({ alg: 'ES256', kid: key.kid, typ: 'JWT' });
    expect(claims.aud).toBe('db');
    expect(validateJwtSvid({ token, audience: 'db', keys, now: NOW }).sub).toBe(SUB);
  });

  it('refuses another audience, an expired token, a bad signature, an unknown kid and alg none', async () => {
    const { key, keys, token } = await setup();
    const check = (t: string, audience = 'db', now = NOW) => () => validateJwtSvid({ token: t, audience, keys, now });
    expect(check(token, 'cache')).toThrow(/not for audience "cache"/);
    expect(check(token, 'db', NOW + 301_000)).toThrow(/expired/);
    const [h, p, s] = token.split('.') as [string, string, string];
    const flipped = Buffer.from(s, 'base64url');
    flipped[5]! ^= 1;
    expect(check(`${h}.${p}.${flipped.toString('base64url')}`)).toThrow(/signature does not verify/);
    // Same header and signature over a changed payload.
    const forged = Buffer.from(JSON.stringify({ ...decodeJwtSvid(token).claims, sub: 'spiffe://cluster.local/ns/app/sa/admin' })).toString('base64url');
    expect(check(`${h}.${forged}.${s}`)).toThrow(/signature does not verify/);
    const other = deriveJwtSigningKey({ caKey: await caKey(), trustDomain: 'cluster.local', period: 1 });
    expect(check(signJwtSvid(other, { sub: SUB, aud: ['db'], exp: NOW / 1000 + 60, iat: NOW / 1000 }))).toThrow(/no key/);
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', kid: key.kid })).toString('base64url')}.${p}.`;
    expect(check(none)).toThrow(/unsupported token algorithm/);
    expect(check('not-a-jwt')).toThrow(expect.objectContaining({ code: 'JWT_INVALID' }));
  });

  it('validates RS256 tokens from a foreign issuer with its JWK', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const signingInput = `${enc({ alg: 'RS256', kid: 'r1' })}.${enc({ sub: SUB, aud: ['x', 'db'], exp: NOW / 1000 + 60 })}`;
    const token = `${signingInput}.${sign('sha256', Buffer.from(signingInput), privateKey).toString('base64url')}`;
    const keys = importJwks(new Map([['r1', publicKey.export({ format: 'jwk' })]]));
    expect(validateJwtSvid({ token, audience: 'db', keys, now: NOW }).aud).toEqual(['x', 'db']);
  });
});

describe('SPIFFE bundle JSON', () => {
  it('has x509-svid keys (one x5c, no kid), jwt-svid keys (kid), sequence and refresh hint, and parses back', async () => {
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const root = parseCertificate(issueCaCertificate({ key: privateKey, organization: 'cluster.local', trustDomain: 'cluster.local', ttlMs: 86_400_000, now: NOW }).pem);
    const jwt = deriveJwtSigningKey({ caKey: privateKey, trustDomain: 'cluster.local', period: 3 });
    const json = spiffeBundleJson({ roots: [root], jwtKeys: [jwt], sequence: 42, refreshHintSeconds: 300 });
    const doc = JSON.parse(json) as { keys: Record<string, unknown>[]; spiffe_sequence: number; spiffe_refresh_hint: number };
    expect(doc.spiffe_sequence).toBe(42);
    expect(doc.spiffe_refresh_hint).toBe(300);
    const [x509, jwk] = doc.keys as [Record<string, unknown>, Record<string, unknown>];
    expect(x509).toMatchObject({ use: 'x509-svid', kty: 'EC', crv: 'P-256', x5c: [root.der.toString('base64')] });
    expect(x509.kid).toBeUndefined();
    expect(jwk).toEqual({ use: 'jwt-svid', kid: jwt.kid, ...jwt.publicJwk });
    const parsed = parseSpiffeBundle(json);
    expect(parsed.x509Authorities).toEqual([root.der]);
    expect([...parsed.jwtAuthorities.keys()]).toEqual([jwt.kid]);
    expect(parsed).toMatchObject({ sequence: 42, refreshHintSeconds: 300 });
  });

  it('ignores entries with an unknown use or without kid, and refuses what is not a JWK set', () => {
    const parsed = parseSpiffeBundle(JSON.stringify({ keys: [{ kty: 'EC', use: 'wit-svid', kid: 'w' }, { kty: 'EC', use: 'jwt-svid' }, { use: 'jwt-svid', kid: 'no-kty' }] }));
    expect(parsed.jwtAuthorities.size).toBe(0);
    expect(() => parseSpiffeBundle('{"nokeys":1}')).toThrow(/no keys array/);
    expect(() => parseSpiffeBundle('not json')).toThrow(/not JSON/);
  });
});
