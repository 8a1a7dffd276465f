/**
 * Watches a few files by content. fs.watch on each parent directory gives a quick reaction (it also sees the
 * `..data` symlink swap Kubernetes uses for ConfigMap/Secret volumes); a poll on the Clock is the backstop for
 * file systems where inotify says nothing. A change is any difference in content (or presence), so touching a
 * file without changing it is not a change.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Clock, Timer } from './clock.js';
import type { Logger } from './log.js';

/** Contents by path; undefined when the file is missing or unreadable. */
export type FileContents = ReadonlyMap<string, string | undefined>;

export interface FileWatcher {
  /** Reads the files now and calls `onChange` if anything differs from the last read (the first read always does). */
  checkNow(): Promise<void>;
  close(): void;
}

export interface WatchFilesDeps {
  paths: readonly string[];
  clock: Clock;
  log: Logger;
  /** Called with every file's content after a change; may be async (checks are serialised). */
  onChange(contents: FileContents): void | Promise<void>;
  /** Poll interval (default 2 s). */
  pollMs?: number;
  /** Debounce after a file system event (default 100 ms): writers often touch cert and key one after the other. */
  debounceMs?: number;
  /** Called when a directory cannot be watched (polling still covers it). */
  onWatchFailure?(dir: string, err: unknown): void;
}

/** Starts watching; call checkNow() for the initial read. */
export function watchFiles(deps: WatchFilesDeps): FileWatcher {
  const pollMs = deps.pollMs ?? 2000;
  const debounceMs = deps.debounceMs ?? 100;
  let last: Map<string, string> | undefined;
  let closed = false;
  let running: Promise<void> = Promise.resolve();
  let pollTimer: Timer | undefined;
  let debounceTimer: Timer | undefined;
  const watchers: fs.FSWatcher[] = [];

  const read = async (): Promise<Map<string, string | undefined>> => {
    const out = new Map<string, string | undefined>();
    for (const p of deps.paths) {
      try {
        out.set(p, await fs.promises.readFile(p, 'utf8'));
      } catch {
        out.set(p, undefined);
      }
    }
    return out;
  };
  const digest = (v: string | undefined) => (v === undefined ? '-' : createHash('sha256').update(v).digest('hex'));

  const check = () => {
    running = running.then(async () => {
      if (closed) return;
      const contents = await read();
      const digests = new Map([...contents].map(([p, v]) => [p, digest(v)]));
      const changed = !last || [...digests].some(([p, d]) => last!.get(p) !== d);
      if (!changed || closed) return;
      last = digests;
      try {
        await deps.onChange(contents);
      } catch (err) {
        deps.log.error({ err }, 'file change handler failed');
      }
    });
    return running;
  };

  const schedulePoll = () => {
    if (closed) return;
    pollTimer = deps.clock.setTimer(() => {
      void check().finally(schedulePoll);
    }, pollMs);
  };
  const onEvent = () => {
    if (closed) return;
    debounceTimer?.cancel();
    debounceTimer = deps.clock.setTimer(() => void check(), debounceMs);
  };

  for (const dir of new Set(deps.paths.map((p) => path.dirname(p)))) {
    try {
      const w = fs.watch(dir, { persistent: false }, onEvent);
      w.on('error', (err) => deps.onWatchFailure?.(dir, err));
      watchers.push(w);
    } catch (err) {
      deps.log.warn({ dir, err: (err as Error).message }, 'cannot watch directory; polling only');
      deps.onWatchFailure?.(dir, err);
    }
  }
  schedulePoll();

  return {
    checkNow: check,
    close() {
      closed = true;
      pollTimer?.cancel();
      debounceTimer?.cancel();
      for (const w of watchers) w.close();
    },
  };
}
