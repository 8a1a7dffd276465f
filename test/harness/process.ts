/**
 * A real component running as a child process: its output goes to a log file (shown in failure messages),
 * it is registered with the reaper, and stop() ends it with SIGTERM, then SIGKILL after a grace period.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { killGroup, trackPid, untrackPid } from './reaper.js';

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  /** Resolves with the exit code (or signal name) when the process has exited. */
  readonly exited: Promise<number | string>;
  /** True until the process has exited. */
  running(): boolean;
  /** The last `lines` lines of its log, for error messages. */
  tail(lines?: number): string;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s); resolves once it has exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL (a crash, an OOM kill, a node gone); resolves once it has exited. */
  kill(): Promise<void>;
}

export interface StartProcessOptions {
  name: string;
  command: string;
  args: readonly string[];
  logPath: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** Spawns `command` in its own process group with stdout+stderr appended to `logPath`. Throws if spawn fails. */
export async function startProcess(opts: StartProcessOptions): Promise<ManagedProcess> {
  const logFd = fs.openSync(opts.logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(opts.command, opts.args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true,
      stdio: ['ignore', logFd, logFd],
    });
  } finally {
    fs.closeSync(logFd);
  }
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) => reject(new Error(`cannot start ${opts.name} (${opts.command}): ${err.message}`)));
  });
  const pid = child.pid!;
  trackPid(pid);
  let alive = true;
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      alive = false;
      // The group may hold children of the child; make sure none outlive it.
      killGroup(pid, 'SIGKILL');
      untrackPid(pid);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  child.unref();
  const tail = (lines = 40) => {
    try {
      return fs.readFileSync(opts.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  };
  let stopping: Promise<void> | undefined;
  return {
    name: opts.name,
    pid,
    logPath: opts.logPath,
    exited,
    running: () => alive,
    tail,
    stop(graceMs = 5000) {
      stopping ??= (async () => {
        if (!alive) return;
        // The child is unref'd so it never holds a run open by itself; while stopping, hold the event loop until
        // its exit is seen, or a caller with nothing else pending would exit before `await stop()` returns.
        child.ref();
        killGroup(pid, 'SIGTERM');
        const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
    async kill() {
      child.ref();
      killGroup(pid, 'SIGKILL');
      await exited;
    },
  };
}
