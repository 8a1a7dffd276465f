/**
 * Leaves nothing behind, however the test run ends. Every process the harness starts and every temp dir it
 * makes is registered with a small watchdog process (one per Node process, started lazily, detached in its
 * own session). The watchdog reads commands from a pipe; when the pipe closes, because we exited normally, were
 * interrupted, crashed or were SIGKILLed, it SIGKILLs the process groups still registered and removes the dirs
 * still registered. A clean shutdown unregisters everything first, so then it has nothing to do.
 *
 * On top of that, a synchronous `exit` handler does the same in-process, because vitest ends the process with
 * process.exit() on Ctrl-C without running globalSetup teardowns.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

// Runs as `node -e`: plain JavaScript, no imports from this repo.
const WATCHDOG = `
const fs = require('node:fs');
const pids = new Set(), dirs = new Set();
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => {});
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    const [cmd, ...rest] = line.split(' '); const arg = rest.join(' ');
    if (cmd === 'pid') pids.add(Number(arg)); else if (cmd === '-pid') pids.delete(Number(arg));
    else if (cmd === 'dir') dirs.add(arg); else if (cmd === '-dir') dirs.delete(arg);
  }
});
const reap = () => {
  for (const pid of pids) { try { process.kill(-pid, 'SIGKILL'); } catch {} }
  setTimeout(() => {
    for (const dir of dirs) { try { fs.rmSync(dir, { recursive: true, force: true }); } catch {} }
    process.exit(0);
  }, pids.size ? 300 : 0);
};
process.stdin.on('end', reap);
process.stdin.on('error', reap);
`;

let watchdog: ChildProcess | undefined;
const livePids = new Set<number>();
const liveDirs = new Set<string>();

function send(line: string): void {
  if (!watchdog) {
    watchdog = spawn(process.execPath, ['-e', WATCHDOG], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
    watchdog.unref();
    const stdin = watchdog.stdin as unknown as { unref?: () => void } | null;
    stdin?.unref?.();
    watchdog.stdin?.on('error', () => {});
    process.on('exit', reapNow);
  }
  watchdog.stdin?.write(`${line}\n`);
}

/** Synchronous last-chance cleanup: SIGKILL the registered process groups, remove the registered dirs. */
function reapNow(): void {
  for (const pid of livePids) killGroup(pid, 'SIGKILL');
  for (const dir of liveDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // the watchdog tries again once our pipe closes
    }
  }
}

/** Sends `signal` to the process group led by `pid` (every child is spawned detached, as a group leader). */
export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the whole group is gone already
  }
}

/** Registers a process (spawned with `detached: true`, so it leads its own group) to be killed if we die. */
export function trackPid(pid: number): void {
  livePids.add(pid);
  send(`pid ${pid}`);
}

/** Unregisters a process once it has exited. */
export function untrackPid(pid: number): void {
  livePids.delete(pid);
  send(`-pid ${pid}`);
}

/** Registers a temp dir to be removed if we die. */
export function trackDir(dir: string): void {
  liveDirs.add(dir);
  send(`dir ${dir}`);
}

/** Unregisters a temp dir once it has been removed. */
export function untrackDir(dir: string): void {
  liveDirs.delete(dir);
  send(`-dir ${dir}`);
}
