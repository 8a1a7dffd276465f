/**
 * JWT-SVIDs for the Workload API, cached per audience set. A token is handed out only while more than half of
 * its life is left; after that the next request mints a new one from the CA (so a client always gets a token
 * with at least half its lifetime ahead, and a burst of requests for one audience makes one CA call). Concurrent
 * requests for the same audiences share one call. Expired entries are dropped; the cache is bounded.
 */
import type { Clock } from '../../clock.js';
import { CitadelError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { decodeJwtSvid } from '../../pki/index.js';

export interface JwtSvidMinter {
  /** Asks the CA for a token (src/agent/ca-issuer.ts `mintJwtSvid`). */
  mintJwtSvid(audience: readonly string[], ttlMs: number, signal?: AbortSignal): Promise<string>;
}

export interface JwtSvidCache {
  /**
   * A token for `audience` (order and duplicates do not matter) whose subject is `spiffeId`.
   * @throws CitadelError from the CA call; CERT_INVALID when the CA's token is not for us, these audiences, or now.
   */
  get(audience: readonly string[], spiffeId: string): Promise<string>;
  /** Entries held (for tests and metrics). */
  size(): number;
}

interface Entry {
  readonly token: string;
  readonly spiffeId: string;
  readonly refreshAt: number;
  readonly expiresAt: number;
}

const MAX_ENTRIES = 256;

export function createJwtSvidCache(deps: { minter: JwtSvidMinter; ttlMs: number; clock: Clock; log: Logger }): JwtSvidCache {
  const entries = new Map<string, Entry>();
  const inFlight = new Map<string, Promise<string>>();

  const mint = async (key: string, audience: string[], spiffeId: string): Promise<string> => {
    const requestedAt = deps.clock.now();
    const token = await deps.minter.mintJwtSvid(audience, deps.ttlMs);
    const { claims } = decodeJwtSvid(token);
    const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
    const exp = typeof claims.exp === 'number' ? claims.exp * 1000 : 0;
    if (claims.sub !== spiffeId || !audience.every((a) => aud.includes(a)) || exp <= deps.clock.now()) {
      throw new CitadelError('CERT_INVALID', 'the CA returned a JWT-SVID for another subject, audience or time', `sub ${String(claims.sub)}`);
    }
    for (const [k, e] of entries) if (e.expiresAt <= deps.clock.now()) entries.delete(k);
    if (entries.size >= MAX_ENTRIES) entries.delete(entries.keys().next().value!);
    entries.set(key, { token, spiffeId, expiresAt: exp, refreshAt: requestedAt + (exp - requestedAt) / 2 });
    deps.log.debug({ audience, exp: new Date(exp).toISOString() }, 'JWT-SVID minted');
    return token;
  };

  return {
    get(audience, spiffeId) {
      const sorted = [...new Set(audience)].sort();
      const key = JSON.stringify(sorted);
      const cached = entries.get(key);
      if (cached && cached.spiffeId === spiffeId && deps.clock.now() < cached.refreshAt) return Promise.resolve(cached.token);
      let pending = inFlight.get(key);
      if (!pending) {
        pending = mint(key, sorted, spiffeId).finally(() => inFlight.delete(key));
        inFlight.set(key, pending);
      }
      return pending;
    },
    size: () => entries.size,
  };
}
