/**
 * JWT-SVIDs (SPIFFE JWT-SVID spec) and SPIFFE bundles (Trust Domain and Bundle spec §4): ES256 signing keys
 * derived from the CA's key per rotation period, compact JWS signing and validation, and the bundle JSON.
 * Pure: node:crypto only, time passed in.
 *
 * Why derived keys: every CA replica must sign with the same key and publish the same key set without a second
 * store to coordinate through. Each period's key is HKDF(CA signing key, trust domain, period), so any replica
 * holding the CA material computes it, the next period's key can be published a whole period before it signs,
 * and the previous one stays published for a period after (longer than any JWT-SVID lives).
 */
import { createECDH, createHash, createPrivateKey, createPublicKey, hkdfSync, sign, verify, type JsonWebKey, type KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import type { ParsedCertificate } from './certificate.js';

/** Order of the P-256 group: a derived scalar must lie in [1, n-1]. */
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/** An ES256 JWT signing key with its RFC 7638 thumbprint as `kid`. */
export interface JwtSigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  /** Public JWK (kty, crv, x, y). */
  readonly publicJwk: Readonly<{ kty: 'EC'; crv: 'P-256'; x: string; y: string }>;
}

const b64url = (buf: Buffer) => buf.toString('base64url');

/** RFC 7638 thumbprint of an EC public JWK (members in lexicographic order). */
export function jwkThumbprint(jwk: { crv: string; kty: string; x: string; y: string }): string {
  return b64url(createHash('sha256').update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })).digest());
}

/**
 * The ES256 key of one rotation period: HKDF-SHA256 over the CA signing key's PKCS#8 DER, salted and bound to
 * the trust domain and period, reduced to a valid P-256 scalar (a rare out-of-range output is re-derived).
 */
export function deriveJwtSigningKey(input: { caKey: KeyObject; trustDomain: string; period: number }): JwtSigningKey {
  const ikm = input.caKey.export({ format: 'der', type: 'pkcs8' });
  for (let attempt = 0; ; attempt++) {
    const d = Buffer.from(hkdfSync('sha256', ikm, 'citadel jwt-svid signing key', `${input.trustDomain}/${input.period}/${attempt}`, 32));
    const scalar = BigInt('0x' + d.toString('hex'));
    if (scalar === 0n || scalar >= P256_ORDER) continue;
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(d);
    const point = ecdh.getPublicKey();
    const publicJwk = { kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33, 65)) } as const;
    const privateKey = createPrivateKey({ key: { ...publicJwk, d: b64url(d) }, format: 'jwk' });
    return { kid: jwkThumbprint(publicJwk), privateKey, publicJwk };
  }
}

/** Claims of a JWT-SVID; `exp`/`iat` in seconds. Other claims may appear in validated tokens. */
export interface JwtSvidClaims {
  readonly sub: string;
  readonly aud: readonly string[];
  readonly exp: number;
  readonly iat: number;
  readonly [claim: string]: unknown;
}

/** Signs a compact JWS (header alg ES256, kid, typ JWT). `aud` is a string when it holds one value (spec: one recommended). */
export function signJwtSvid(key: JwtSigningKey, claims: JwtSvidClaims): string {
  const header = b64url(Buffer.from(JSON.stringify({ alg: 'ES256', kid: key.kid, typ: 'JWT' })));
  const body = { ...claims, aud: claims.aud.length === 1 ? claims.aud[0] : [...claims.aud] };
  const payload = b64url(Buffer.from(JSON.stringify(body)));
  const signature = sign('sha256', Buffer.from(`${header}.${payload}`), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${header}.${payload}.${b64url(signature)}`;
}

/** Algorithms the JWT-SVID spec allows, with their node:crypto parameters. */
const ALGORITHMS: Readonly<Record<string, { hash: string; ec?: true; pss?: true }>> = {
  RS256: { hash: 'sha256' }, RS384: { hash: 'sha384' }, RS512: { hash: 'sha512' },
  ES256: { hash: 'sha256', ec: true }, ES384: { hash: 'sha384', ec: true }, ES512: { hash: 'sha512', ec: true },
  PS256: { hash: 'sha256', pss: true }, PS384: { hash: 'sha384', pss: true }, PS512: { hash: 'sha512', pss: true },
};

const MAX_TOKEN_BYTES = 16 * 1024;

const invalid = (message: string) => new CitadelError('JWT_INVALID', message);

function decodeSegment(segment: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw invalid(`the token's ${what} is not a JSON object`);
}

/** A JWT-SVID's subject and claims, read without checking anything (callers use it to pick keys or log). */
export function decodeJwtSvid(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) throw invalid(`the token is larger than ${MAX_TOKEN_BYTES} bytes`);
  const parts = token.split('.');
  if (parts.length !== 3) throw invalid('the token is not a compact JWS');
  return { header: decodeSegment(parts[0]!, 'header'), claims: decodeSegment(parts[1]!, 'payload') };
}

/**
 * Validates a JWT-SVID: compact JWS with an allowed `alg` and a `kid` found among `keys` (the bundle of the
 * subject's trust domain, which the caller picks from `sub`), a good signature, `sub` a SPIFFE ID, unexpired
 * `exp`, `audience` among `aud`. Returns the claims.
 * @throws CitadelError JWT_INVALID naming the first check that failed.
 */
export function validateJwtSvid(input: { token: string; audience: string; keys: ReadonlyMap<string, KeyObject>; now: number }): Record<string, unknown> & { sub: string } {
  const { header, claims } = decodeJwtSvid(input.token);
  const alg = typeof header.alg === 'string' ? ALGORITHMS[header.alg] : undefined;
  if (!alg) throw invalid(`unsupported token algorithm ${JSON.stringify(header.alg)}`);
  if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') throw invalid(`unsupported token type ${JSON.stringify(header.typ)}`);
  if (typeof header.kid !== 'string' || header.kid === '') throw invalid('the token header has no key id');
  const key = input.keys.get(header.kid);
  if (!key) throw invalid(`no key ${JSON.stringify(header.kid.slice(0, 100))} in the trust domain's bundle`);
  const [h, p, s] = input.token.split('.') as [string, string, string];
  const ok = verify(
    alg.hash,
    Buffer.from(`${h}.${p}`),
    { key, ...(alg.ec ? { dsaEncoding: 'ieee-p1363' as const } : {}), ...(alg.pss ? { padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: -1 } : {}) },
    Buffer.from(s, 'base64url'),
  );
  if (!ok) throw invalid('the token signature does not verify');
  if (typeof claims.sub !== 'string' || !claims.sub.startsWith('spiffe://')) throw invalid('the token has no SPIFFE ID subject');
  if (typeof claims.exp !== 'number') throw invalid('the token has no expiry');
  if (claims.exp * 1000 <= input.now) throw invalid('the token has expired');
  const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
  if (!aud.includes(input.audience)) throw invalid(`the token is not for audience ${JSON.stringify(input.audience.slice(0, 200))}`);
  return claims as Record<string, unknown> & { sub: string };
}

/** A SPIFFE bundle (JWK Set with the SPIFFE members). */
export interface SpiffeBundle {
  readonly x509Authorities: readonly Buffer[];
  /** kid -> public JWK. */
  readonly jwtAuthorities: ReadonlyMap<string, JsonWebKey>;
  readonly sequence?: number;
  readonly refreshHintSeconds?: number;
}

/** The bundle's JSON: one `x509-svid` JWK per root (x5c, no kid), one `jwt-svid` JWK per key (with kid). */
export function spiffeBundleJson(input: { roots: readonly ParsedCertificate[]; jwtKeys: readonly Pick<JwtSigningKey, 'kid' | 'publicJwk'>[]; sequence: number; refreshHintSeconds: number }): string {
  const keys: object[] = [];
  for (const root of input.roots) {
    const jwk = createPublicKey(root.pem).export({ format: 'jwk' });
    keys.push({ use: 'x509-svid', ...jwk, x5c: [root.der.toString('base64')] });
  }
  for (const k of input.jwtKeys) keys.push({ use: 'jwt-svid', kid: k.kid, ...k.publicJwk });
  return JSON.stringify({ keys, spiffe_sequence: input.sequence, spiffe_refresh_hint: input.refreshHintSeconds }, null, 2) + '\n';
}

/** A JWKS of JWT keys only, without SPIFFE members (what FetchJWTBundles carries, as SPIRE sends it). */
export function jwtBundleJson(keys: ReadonlyMap<string, JsonWebKey>): string {
  return JSON.stringify({ keys: [...keys].map(([kid, jwk]) => ({ ...jwk, kid })) });
}

/**
 * Reads a SPIFFE bundle. Entries with an unknown `use` or `kty` are ignored (spec); a `jwt-svid` key without `kid`
 * or an `x509-svid` entry without `x5c` is skipped.
 * @throws CitadelError JWT_INVALID when the text is not a JWK Set.
 */
export function parseSpiffeBundle(text: string): SpiffeBundle {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CitadelError('JWT_INVALID', 'the SPIFFE bundle is not JSON');
  }
  const keys = (doc as { keys?: unknown })?.keys;
  if (!Array.isArray(keys)) throw new CitadelError('JWT_INVALID', 'the SPIFFE bundle has no keys array');
  const x509Authorities: Buffer[] = [];
  const jwtAuthorities = new Map<string, JsonWebKey>();
  for (const entry of keys as Record<string, unknown>[]) {
    if (!entry || typeof entry !== 'object' || typeof entry.kty !== 'string') continue;
    if (entry.use === 'x509-svid' && Array.isArray(entry.x5c) && typeof entry.x5c[0] === 'string') {
      x509Authorities.push(Buffer.from(entry.x5c[0], 'base64'));
    } else if (entry.use === 'jwt-svid' && typeof entry.kid === 'string' && entry.kid !== '') {
      const { use: _use, kid, ...jwk } = entry;
      jwtAuthorities.set(kid, jwk as JsonWebKey);
    }
  }
  const d = doc as { spiffe_sequence?: unknown; spiffe_refresh_hint?: unknown };
  return {
    x509Authorities,
    jwtAuthorities,
    ...(typeof d.spiffe_sequence === 'number' ? { sequence: d.spiffe_sequence } : {}),
    ...(typeof d.spiffe_refresh_hint === 'number' ? { refreshHintSeconds: d.spiffe_refresh_hint } : {}),
  };
}

/** Public keys of JWKs by kid; keys node:crypto cannot import are left out. */
export function importJwks(jwks: ReadonlyMap<string, JsonWebKey>): Map<string, KeyObject> {
  const out = new Map<string, KeyObject>();
  for (const [kid, jwk] of jwks) {
    try {
      out.set(kid, createPublicKey({ key: jwk, format: 'jwk' }));
    } catch {
      // An unsupported kty/crv is ignored, as the bundle spec says for unknown entries.
    }
  }
  return out;
}
