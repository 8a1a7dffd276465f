/**
 * JWT-SVIDs and the trust domain's SPIFFE bundle.
 *
 * Signing keys: one ES256 key per rotation period, derived from the CA's current signing key (src/pki/jwt.ts says
 * why), so every replica signs with the same key and publishes the same set without coordinating. The bundle
 * always publishes three keys: the previous period's (tokens it signed are still live: a token lives at most
 * --jwt-svid-max-ttl, which is at most one period), the current one, and the next one (published a whole period
 * before it signs, far more than the 3-5 refresh hints the federation spec asks for).
 *
 * Minting: the caller (authenticated exactly as for CreateCertificate) gets a token for its own identity only;
 * audiences are required; the lifetime is the request's, the default when it asks for none, refused above the
 * maximum.
 */
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { deriveJwtSigningKey, signJwtSvid, spiffeBundleJson, type JwtSigningKey } from '../pki/index.js';
import type { Caller } from './authn.js';
import type { Keyring } from './keyring.js';
import type { CaMaterial } from './material.js';
import type { KeyedRateLimiter } from '../rate-limit.js';

export interface JwtKeySet {
  /** The key that signs at `now`. @throws CitadelError CA_NOT_READY before key material is loaded. */
  signingKey(now: number): JwtSigningKey;
  /** Previous, current and next period's keys (empty before key material is loaded). */
  publishedKeys(now: number): JwtSigningKey[];
  /** Start (ms) of the period holding `now`. */
  periodStart(now: number): number;
  readonly rotationMs: number;
}

/**
 * Derives keys from the keyring's current signing key; cached per (material, period). When the CA material
 * changes, the old material's previous and current keys stay published for `retainMs` (the longest JWT-SVID
 * lifetime), so tokens they signed keep validating; the new material's key signs at once.
 */
export function createJwtKeySet(deps: { keyring: Pick<Keyring, 'current'>; trustDomain: string; rotationMs: number; retainMs: number; clock: Clock }): JwtKeySet {
  const cache = new Map<string, JwtSigningKey>();
  let retained: { key: JwtSigningKey; until: number }[] = [];
  let lastMaterial: CaMaterial | undefined;
  const derive = (material: CaMaterial, period: number): JwtSigningKey => {
    const id = `${material.fingerprint}/${period}`;
    let key = cache.get(id);
    if (!key) {
      if (cache.size > 16) cache.clear();
      key = deriveJwtSigningKey({ caKey: material.signer.key, trustDomain: deps.trustDomain, period });
      cache.set(id, key);
    }
    return key;
  };
  const periodOf = (now: number) => Math.floor(now / deps.rotationMs);
  const material = (): CaMaterial | undefined => {
    const current = deps.keyring.current();
    if (lastMaterial && current && current.fingerprint !== lastMaterial.fingerprint) {
      const now = deps.clock.now();
      const p = periodOf(now);
      retained.push(...[p - 1, p].map((period) => ({ key: derive(lastMaterial!, period), until: now + deps.retainMs })));
    }
    lastMaterial = current ?? lastMaterial;
    return current;
  };
  return {
    rotationMs: deps.rotationMs,
    periodStart: (now) => periodOf(now) * deps.rotationMs,
    signingKey(now) {
      const m = material();
      if (!m) throw new CitadelError('CA_NOT_READY', 'the CA has no key material yet');
      return derive(m, periodOf(now));
    },
    publishedKeys(now) {
      const m = material();
      if (!m) return [];
      const p = periodOf(now);
      retained = retained.filter((r) => r.until > now);
      const keys = [p - 1, p, p + 1].map((period) => derive(m, period));
      const kids = new Set(keys.map((k) => k.kid));
      return [...retained.map((r) => r.key).filter((k) => !kids.has(k.kid) && kids.add(k.kid)), ...keys];
    },
  };
}

export interface JwtSvidPolicy {
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
  /** At most this many audiences, each at most 256 bytes. */
  readonly maxAudiences: number;
}

export interface JwtSvidRequest {
  readonly audience: readonly string[];
  /** Seconds; <= 0 means the default. */
  readonly validityDurationSeconds: number;
}

/**
 * Mints a JWT-SVID for `caller` (its own identity only). Logs one audit line (never the token).
 * @throws CitadelError REQUEST_INVALID (no or bad audience), TTL_INVALID (above the maximum), RATE_LIMITED
 *   (over the per-identity limit), CA_NOT_READY.
 */
export function mintJwtSvid(deps: { keys: JwtKeySet; policy: JwtSvidPolicy; clock: Clock; log: Logger; rateLimiter?: KeyedRateLimiter }, caller: Caller, req: JwtSvidRequest): { token: string; expiresAt: number } {
  const audience = req.audience.filter((a) => a !== '');
  if (audience.length === 0) throw new CitadelError('REQUEST_INVALID', 'audience must be specified');
  if (audience.length > deps.policy.maxAudiences || audience.some((a) => Buffer.byteLength(a) > 256)) {
    throw new CitadelError('REQUEST_INVALID', `at most ${deps.policy.maxAudiences} audiences of at most 256 bytes each`);
  }
  let ttlMs = deps.policy.defaultTtlMs;
  if (Number.isFinite(req.validityDurationSeconds) && req.validityDurationSeconds > 0) {
    ttlMs = req.validityDurationSeconds * 1000;
    if (ttlMs > deps.policy.maxTtlMs) {
      throw new CitadelError('TTL_INVALID', `requested JWT-SVID TTL ${req.validityDurationSeconds}s is greater than the max allowed TTL ${Math.floor(deps.policy.maxTtlMs / 1000)}s`);
    }
  }
  if (deps.rateLimiter && !deps.rateLimiter.tryTake(caller.identity)) {
    throw new CitadelError('RATE_LIMITED', `too many JWT-SVID requests for ${caller.identity}; retry later`);
  }
  const now = deps.clock.now();
  const key = deps.keys.signingKey(now);
  const iat = Math.floor(now / 1000);
  const exp = Math.floor((now + ttlMs) / 1000);
  const token = signJwtSvid(key, { sub: caller.identity, aud: audience, exp, iat });
  deps.log.info({ audit: 'jwt-svid-issued', identity: caller.identity, audience, kid: key.kid, exp: new Date(exp * 1000).toISOString(), authn: caller.method }, 'issued JWT-SVID');
  return { token, expiresAt: exp * 1000 };
}

/** The trust domain's SPIFFE bundle, kept current, with change events (roots changed or a key period began). */
export interface SpiffeBundleSource {
  /** The bundle JSON, or undefined before key material is loaded. */
  json(): string | undefined;
  onChange(listener: () => void): () => void;
  stop(): void;
}

/**
 * `spiffe_sequence` is the start (seconds) of the newest content: the current key period or the newest root's
 * notBefore, whichever is later. Every replica computes the same number for the same content, so a client
 * switching replicas behind a Service never sees it go back.
 */
export function createSpiffeBundleSource(deps: { keyring: Pick<Keyring, 'current' | 'bundleRoots' | 'onChange'>; keys: JwtKeySet; refreshHintSeconds: number; clock: Clock; log: Logger }): SpiffeBundleSource {
  const listeners = new Set<() => void>();
  let current: string | undefined;
  let timer: Timer | undefined;
  let stopped = false;
  const build = (): string | undefined => {
    if (!deps.keyring.current()) return undefined;
    const now = deps.clock.now();
    const roots = deps.keyring.bundleRoots();
    const newestRoot = Math.max(0, ...roots.map((r) => r.notBefore));
    return spiffeBundleJson({
      roots,
      jwtKeys: deps.keys.publishedKeys(now),
      sequence: Math.floor(Math.max(deps.keys.periodStart(now), newestRoot) / 1000),
      refreshHintSeconds: deps.refreshHintSeconds,
    });
  };
  const refresh = () => {
    const next = build();
    if (next === current) return;
    current = next;
    for (const l of [...listeners]) {
      try {
        l();
      } catch (err) {
        deps.log.error({ err }, 'SPIFFE bundle listener failed');
      }
    }
  };
  const armPeriodTimer = () => {
    if (stopped) return;
    const now = deps.clock.now();
    timer = deps.clock.setTimer(() => {
      refresh();
      armPeriodTimer();
    }, deps.keys.periodStart(now) + deps.keys.rotationMs - now);
  };
  const unsubscribe = deps.keyring.onChange(refresh);
  current = build();
  armPeriodTimer();
  return {
    json: () => current,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop() {
      stopped = true;
      timer?.cancel();
      unsubscribe();
    },
  };
}
