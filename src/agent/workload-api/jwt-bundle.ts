/**
 * The trust domain's JWT-SVID keys, from the SPIFFE bundle file the CA publishes in istio-ca-root-cert
 * (`spiffe-bundle.json`, mounted beside root-cert.pem). Watched like the root file; a file that does not parse
 * keeps the last good keys.
 */
import type { JsonWebKey, KeyObject } from 'node:crypto';
import type { Clock } from '../../clock.js';
import { toCitadelError } from '../../errors.js';
import { watchFiles, type FileWatcher } from '../../file-watch.js';
import type { Logger } from '../../log.js';
import { importJwks, jwtBundleJson, parseSpiffeBundle } from '../../pki/index.js';

export interface JwtBundle {
  /** kid -> public key. */
  keys(): ReadonlyMap<string, KeyObject>;
  /** The keys as a JWKS (no SPIFFE members), as FetchJWTBundles sends it. */
  jwksJson(): string;
  onChange(listener: () => void): () => void;
  close(): void;
}

/** Reads `path` now and on every change. */
export async function watchJwtBundle(deps: { path: string; clock: Clock; log: Logger; pollMs?: number }): Promise<JwtBundle> {
  let jwks = new Map<string, JsonWebKey>();
  let keys = new Map<string, KeyObject>();
  let json = jwtBundleJson(jwks);
  const listeners = new Set<() => void>();
  const watcher: FileWatcher = watchFiles({
    paths: [deps.path],
    clock: deps.clock,
    log: deps.log,
    pollMs: deps.pollMs,
    onChange: (contents) => {
      const text = contents.get(deps.path);
      if (text === undefined || text.trim() === '') return;
      try {
        jwks = new Map(parseSpiffeBundle(text).jwtAuthorities);
      } catch (err) {
        deps.log.error({ path: deps.path, err: toCitadelError(err) }, 'SPIFFE bundle file unusable; keeping the last JWT keys');
        return;
      }
      const next = jwtBundleJson(jwks);
      if (next === json) return;
      json = next;
      keys = importJwks(jwks);
      deps.log.info({ path: deps.path, keyIds: [...jwks.keys()] }, 'JWT-SVID keys loaded');
      for (const l of [...listeners]) l();
    },
  });
  await watcher.checkNow();
  return {
    keys: () => keys,
    jwksJson: () => json,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: () => watcher.close(),
  };
}
