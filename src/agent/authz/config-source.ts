/**
 * The agent's authorization input: the namespace's compiled document (the `citadel-authz` ConfigMap, mounted as a
 * file) and the pod's labels (a downward-API file), both watched. From them it derives, per ECDS resource name, the
 * RBAC filter config for this workload (src/authz/workload.ts), and tells subscribers when anything changed.
 *
 * Until both files have been read successfully no name is available, so Envoy keeps waiting instead of serving
 * with no policy. A later unreadable or malformed file is logged and ignored: the last good configuration stays.
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../../clock.js';
import type { Logger } from '../../log.js';
import { watchFiles, type FileWatcher } from '../../file-watch.js';
import type { CompiledAuthz } from '../../authz/types.js';
import { parseCompiledAuthz, parsePodLabels, rbacFilterConfig } from '../../authz/workload.js';

export interface AuthzConfigEntry {
  /** Changes with content (a digest). */
  readonly version: string;
  /** The RBAC filter config, `@type` set. */
  readonly typedConfig: Record<string, unknown>;
}

export interface AuthzConfigSource {
  get(name: string): AuthzConfigEntry | undefined;
  /** Why `name` has no entry (for logs). */
  pendingReason(name: string): string;
  /** Called after every change of the inputs. Returns an unsubscribe function. */
  subscribe(listener: () => void): () => void;
}

export interface AuthzFiles extends AuthzConfigSource {
  /** Reads both files now (and starts watching); resolves after the first read. */
  start(): Promise<void>;
  /** True once a document and the labels have been loaded. */
  loaded(): boolean;
  stop(): void;
}

const digest = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);

export function watchAuthzFiles(deps: { policyFile: string; labelsFile: string; clock: Clock; log: Logger; pollMs?: number }): AuthzFiles {
  const { log } = deps;
  let doc: CompiledAuthz | undefined;
  let labels: Record<string, string> | undefined;
  const listeners = new Set<() => void>();
  let watcher: FileWatcher | undefined;

  /**
   * Parses `text` (one of the two files) when present; returns the new value when it differs from `current`,
   * undefined when there is nothing new (missing, invalid or unchanged: the last good value stays).
   */
  const load = <T>(file: string, what: string, text: string | undefined, current: T | undefined, parse: (t: string) => T): T | undefined => {
    if (text === undefined) {
      if (current === undefined) log.info({ file }, `no ${what} file (yet); ECDS requests wait for it`);
      return undefined;
    }
    try {
      const next = parse(text);
      if (current !== undefined && digest(next) === digest(current)) return undefined;
      log.info({ file }, `loaded ${what}`);
      return next;
    } catch (err) {
      log.error({ file, err }, `${what} file is not valid; keeping the last good one`);
      return undefined;
    }
  };

  const onChange = (contents: ReadonlyMap<string, string | undefined>) => {
    const nextDoc = load(deps.policyFile, 'authorization policy', contents.get(deps.policyFile), doc, parseCompiledAuthz);
    const nextLabels = load(deps.labelsFile, 'pod labels', contents.get(deps.labelsFile), labels, parsePodLabels);
    if (nextDoc) doc = nextDoc;
    if (nextLabels) labels = nextLabels;
    const changed = nextDoc !== undefined || nextLabels !== undefined;
    if (changed) for (const l of [...listeners]) l();
  };

  return {
    get(name) {
      if (!doc || !labels) return undefined;
      const typedConfig = rbacFilterConfig(doc, labels, name);
      return typedConfig && { version: digest(typedConfig), typedConfig };
    },
    pendingReason(name) {
      if (!doc) return `no policy file ${deps.policyFile}`;
      if (!labels) return `no labels file ${deps.labelsFile}`;
      return `"${name}" is not an authorization filter name (citadel-authz-allow|deny[-<port>])`;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async start() {
      watcher ??= watchFiles({ paths: [deps.policyFile, deps.labelsFile], clock: deps.clock, log, onChange, pollMs: deps.pollMs ?? 2000 });
      await watcher.checkNow();
    },
    loaded: () => doc !== undefined && labels !== undefined,
    stop() {
      watcher?.close();
      listeners.clear();
    },
  };
}
