/**
 * Plugged-in key material (`cacerts`): read from the Secret in the CA's namespace or from files in
 * `--cacerts-dir`, validated, installed in the keyring, and reloaded when it changes. A reload is applied only
 * when the new set is valid; otherwise the old material stays in use and the failure is logged and counted.
 *
 * A reload that signs under a root the trust bundle does not hold yet (the whole Secret replaced with a new root
 * at once) is done in two steps, as self-signed rotation is: the new roots go into the bundle at once (root
 * ConfigMaps, every replica's serving certificate client CAs) while the previous material keeps signing, and
 * only after `publishDelayMs` does the new material sign, leaves and the CA's own serving certificate alike.
 * Pods see ConfigMap changes only when kubelet syncs their volume (up to about a minute); a leaf or serving
 * certificate under a root they do not have yet would fail their handshakes.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';
import { watchFiles } from '../file-watch.js';
import type { Logger } from '../log.js';
import type { SecretData, SecretWatch } from '../kube/secrets.js';
import type { Keyring } from './keyring.js';
import { CACERTS_FILES, detectLayout, loadPluggedMaterial, type CaMaterial, type MaterialFiles } from './material.js';
import type { CaMetrics } from './metrics.js';

/** The plugged-in files present in `dir` (only the known names; a missing directory is an empty set). */
export function readCacertsDir(dir: string): MaterialFiles {
  const out: Record<string, string> = {};
  for (const name of CACERTS_FILES) {
    try {
      out[name] = fs.readFileSync(path.join(dir, name), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw new CitadelError('CA_MATERIAL_INVALID', `${path.join(dir, name)}: cannot be read: ${(err as Error).message}`);
    }
  }
  return out;
}

/** The plugged-in keys of a Secret's data (`ca-crl.pem` goes to `onCrl`; other keys, such as `istio-generated`, are ignored). */
export function cacertsFromSecret(secret: SecretData): MaterialFiles {
  const out: Record<string, string> = {};
  for (const name of CACERTS_FILES) if (secret.data[name] !== undefined) out[name] = secret.data[name]!;
  return out;
}

/** True when the set holds any plugged-in file (so the CA must use it or stop). */
export const hasPluggedFiles = (files: MaterialFiles) => detectLayout(files).kind !== 'none';

function filesDigest(files: MaterialFiles): string {
  const h = createHash('sha256');
  for (const name of Object.keys(files).sort()) h.update(`${name}\0${files[name]}\0`);
  return h.digest('hex');
}

export interface PluggedSourceDeps {
  readonly keyring: Keyring;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: CaMetrics;
  /**
   * Gets `ca-crl.pem` (undefined when absent) after the material it belongs to is installed, at start and on every
   * change of it. Judged on its own (src/ca/revocation.ts): a bad CRL never stops the key material.
   */
  readonly onCrl?: (text: string | undefined, source: string) => void;
  /** How long a new root is published before material under it signs (0: at once). */
  readonly publishDelayMs: number;
}

/** Istio's optional CRL file beside the plugged-in key material. */
export const CA_CRL_FILE = 'ca-crl.pem';

/** A running reload loop. */
export interface MaterialSource {
  readonly description: string;
  stop(): Promise<void>;
}

/**
 * Validates candidates and installs them, or keeps the old material and reports why. Material under a root the
 * bundle lacks is staged: its roots are published now, it signs after the publish delay. A newer candidate
 * replaces a staged one. `afterStagedInstall` runs once staged material is installed.
 */
function createReloader(deps: PluggedSourceDeps, source: string, afterStagedInstall: () => void): { reload(files: MaterialFiles): void; stop(): void } {
  let staged: Timer | undefined;
  return {
    reload(files) {
      let material: CaMaterial;
      try {
        material = loadPluggedMaterial(files, source, deps.clock.now());
      } catch (err) {
        deps.metrics?.keyMaterialReloadErrors.inc();
        deps.log.error({ source, reason: err instanceof Error ? err.message : String(err) }, 'new CA key material refused; still signing with the previous material');
        return;
      }
      staged?.cancel();
      staged = undefined;
      if (deps.publishDelayMs <= 0 || deps.keyring.trusts(material.anchor)) {
        deps.keyring.install(material);
        return;
      }
      const delay = deps.publishDelayMs;
      // Long enough to reach the switch; an abandoned root (a newer candidate came first) leaves soon after.
      deps.keyring.publishAhead(material.roots, deps.clock.now() + 2 * delay);
      deps.log.info(
        { source, root: material.anchor.subject, serial: material.anchor.serialHex, signsAfterMs: delay },
        'new CA root published in the trust bundle; the new material signs once the publish delay has passed',
      );
      staged = deps.clock.setTimer(() => {
        staged = undefined;
        deps.keyring.install(material);
        // The CRL file may belong to the material that only signs now: judge it again.
        afterStagedInstall();
      }, delay);
    },
    stop() {
      staged?.cancel();
      staged = undefined;
    },
  };
}

/**
 * Loads the plugged-in files of `dir` and installs them, then follows them (src/file-watch.ts: fs.watch with a
 * 100 ms debounce, as Istio, plus polling every `pollIntervalMs` for file systems without events). A file that
 * cannot be read counts as missing, so the set is refused and the previous material stays in use.
 * @throws CitadelError CA_MATERIAL_INVALID when the initial set is invalid or incomplete.
 */
export function startDirectorySource(deps: PluggedSourceDeps & { dir: string; pollIntervalMs: number }): MaterialSource {
  const source = `directory ${deps.dir}`;
  const initial = readCacertsDir(deps.dir);
  deps.keyring.install(loadPluggedMaterial(initial, source, deps.clock.now()));
  let lastDigest = filesDigest(initial);
  const crlPath = path.join(deps.dir, CA_CRL_FILE);
  let lastCrl: string | undefined;
  const reloader = createReloader(deps, source, () => deps.onCrl?.(lastCrl, source));
  const watcher = watchFiles({
    paths: [...CACERTS_FILES.map((name) => path.join(deps.dir, name)), crlPath],
    clock: deps.clock,
    log: deps.log,
    pollMs: deps.pollIntervalMs,
    onChange(contents) {
      const files: Record<string, string> = {};
      for (const [file, text] of contents) if (text !== undefined && file !== crlPath) files[path.basename(file)] = text;
      const digest = filesDigest(files);
      if (digest !== lastDigest) {
        lastDigest = digest;
        deps.log.info({ source }, 'CA key material files changed; validating');
        reloader.reload(files);
      }
      const crl = contents.get(crlPath);
      if (crl !== lastCrl) {
        lastCrl = crl;
        deps.onCrl?.(crl, source);
      }
    },
  });
  void watcher.checkNow();
  return {
    description: source,
    async stop() {
      watcher.close();
      reloader.stop();
    },
  };
}

/**
 * Installs the plugged-in material of the `cacerts` Secret already read (`initial`), then follows the Secret
 * through `watch` (created by the caller with onChange wired to the returned `onSecret`).
 * @throws CitadelError CA_MATERIAL_INVALID when the initial set is invalid or incomplete.
 */
export function startSecretSource(deps: PluggedSourceDeps & { initial: SecretData }): { description: string; onSecret: (s: SecretData | undefined) => void; attach: (w: SecretWatch) => MaterialSource } {
  const source = `secret ${deps.initial.namespace}/${deps.initial.name}`;
  const initialFiles = cacertsFromSecret(deps.initial);
  deps.keyring.install(loadPluggedMaterial(initialFiles, source, deps.clock.now()));
  let lastDigest = filesDigest(initialFiles);
  let lastCrl = deps.initial.data[CA_CRL_FILE];
  deps.onCrl?.(lastCrl, source);
  const reloader = createReloader(deps, source, () => deps.onCrl?.(lastCrl, source));
  return {
    description: source,
    onSecret(secret) {
      if (!secret) {
        deps.log.warn({ source }, 'cacerts Secret deleted; still signing with the last valid material (restart to change modes)');
        return;
      }
      const files = cacertsFromSecret(secret);
      const digest = filesDigest(files);
      if (digest !== lastDigest) {
        lastDigest = digest;
        deps.log.info({ source, resourceVersion: secret.resourceVersion }, 'cacerts Secret changed; validating');
        reloader.reload(files);
      }
      const crl = secret.data[CA_CRL_FILE];
      if (crl !== lastCrl) {
        lastCrl = crl;
        deps.onCrl?.(crl, source);
      }
    },
    attach(watch) {
      return {
        description: source,
        stop: async () => {
          reloader.stop();
          await watch.stop();
        },
      };
    },
  };
}
