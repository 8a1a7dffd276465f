/**
 * Serves `file-cert:<cert-path>~<key-path>` and `file-root:<path>` (and `file-root:system`, the OS bundle) from
 * files, pushing whenever they change. Each watched file's parent directory is watched (so atomic renames and
 * Kubernetes' `..data` symlink swaps are seen), events are debounced, and a slow poll backs up missed events.
 * An unreadable or invalid file never replaces the last good content; it is logged once per distinct problem.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { rootCertificates } from 'node:tls';
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import type { ResolvedSecret, SecretResolver } from './secret-source.js';

export const FILE_CERT_PREFIX = 'file-cert:';
export const FILE_ROOT_PREFIX = 'file-root:';

/** What a file-backed resource name asks for; undefined when the name is not one (or is malformed). */
export function parseFileResourceName(name: string):
  | { kind: 'cert'; certPath: string; keyPath: string }
  | { kind: 'root'; path: string }
  | { kind: 'system-root' }
  | undefined {
  if (name.startsWith(FILE_CERT_PREFIX)) {
    const parts = name.slice(FILE_CERT_PREFIX.length).split('~');
    if (parts.length !== 2 || !parts[0] || !parts[1]) return undefined;
    return { kind: 'cert', certPath: parts[0], keyPath: parts[1] };
  }
  if (name.startsWith(FILE_ROOT_PREFIX)) {
    const path = name.slice(FILE_ROOT_PREFIX.length);
    if (!path) return undefined;
    return path === 'system' ? { kind: 'system-root' } : { kind: 'root', path };
  }
  return undefined;
}

export interface FileResolverDeps {
  clock: Clock;
  log: Logger;
  /** Quiet time after a directory event before re-reading (default 100 ms). */
  debounceMs?: number;
  /** Re-read interval that catches events fs.watch missed and directories that appear later (default 30 s). */
  pollMs?: number;
}

/** A SecretResolver for file-cert:/file-root: names. */
export function fileSecretResolver(deps: FileResolverDeps): SecretResolver {
  return {
    resolve(name, sink) {
      const parsed = parseFileResourceName(name);
      if (!parsed) return undefined;
      if (parsed.kind === 'system-root') {
        sink.setValidationContext(name, rootCertificates.join('\n'));
        return { stop() {} };
      }
      const paths = parsed.kind === 'cert' ? [resolvePath(parsed.certPath), resolvePath(parsed.keyPath)] : [resolvePath(parsed.path)];
      const load = async (): Promise<void> => {
        const [first, second] = await Promise.all(paths.map((p) => readFile(p, 'utf8')));
        if (parsed.kind === 'cert') sink.setTlsCertificate(name, first!, second!);
        else sink.setValidationContext(name, first!);
      };
      return watchFiles(name, paths, load, deps);
    },
  };
}

function watchFiles(name: string, paths: string[], load: () => Promise<void>, deps: FileResolverDeps): ResolvedSecret {
  const log = deps.log.child({ resource: name });
  const debounceMs = deps.debounceMs ?? 100;
  const pollMs = deps.pollMs ?? 30_000;
  const dirs = [...new Set(paths.map((p) => dirname(p)))];
  const watchers = new Map<string, FSWatcher>();
  let stopped = false;
  let debounce: Timer | undefined;
  let poll: Timer | undefined;
  let loading = false;
  let again = false;
  let lastProblem: string | undefined;

  const reload = async (): Promise<void> => {
    if (stopped) return;
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      await load();
      if (lastProblem) log.info('secret files readable again');
      lastProblem = undefined;
    } catch (err) {
      const problem = (err as Error).message;
      if (problem !== lastProblem) log.warn({ err: problem }, 'cannot load secret files; keeping the last good content');
      lastProblem = problem;
    } finally {
      loading = false;
    }
    if (again) {
      again = false;
      await reload();
    }
  };

  const schedule = () => {
    if (stopped) return;
    debounce?.cancel();
    debounce = deps.clock.setTimer(() => void reload(), debounceMs);
  };

  const ensureWatchers = () => {
    for (const dir of dirs) {
      if (watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, schedule);
        w.on('error', () => {
          // The directory went away (or was replaced): drop the watcher; the poll re-creates it.
          w.close();
          watchers.delete(dir);
          schedule();
        });
        watchers.set(dir, w);
      } catch {
        // Directory missing for now; the poll retries.
      }
    }
  };

  const arm = () => {
    poll = deps.clock.setTimer(() => {
      if (stopped) return;
      ensureWatchers();
      void reload().finally(() => {
        if (!stopped) arm();
      });
    }, pollMs);
  };

  ensureWatchers();
  void reload();
  arm();
  return {
    stop() {
      stopped = true;
      debounce?.cancel();
      poll?.cancel();
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
