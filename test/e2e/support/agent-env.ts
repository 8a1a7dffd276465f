/**
 * Pieces for the agent e2e tests: the compiled `citadel` (as users run it), agent processes in a pod root,
 * tiny TCP apps that answer every line with their name, raw TCP clients, and waiting helpers.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../harness/index.js';
import { startProcess, type ManagedProcess } from '../../harness/process.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CITADEL_MAIN = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

/** Compiles the repo when a source file is newer than its output (the tests spawn dist/, as users do). */
export async function ensureBuilt(): Promise<void> {
  const stale = (dir: string): boolean =>
    fs.readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true }).some((e) => {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) return stale(rel);
      if (!e.name.endsWith('.ts')) return false;
      const out = path.join(REPO_ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
      return !fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(path.join(REPO_ROOT, rel)).mtimeMs;
    });
  if (stale('src')) {
    // Type errors elsewhere in the tree do not stop tsc from emitting.
    await new Promise<void>((resolve) => {
      execFile(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: REPO_ROOT, timeout: 240_000 }, () => resolve());
    });
  }
  if (!fs.existsSync(CITADEL_MAIN)) throw new Error(`${CITADEL_MAIN} missing after tsc`);
}

export interface HttpResult {
  status: number;
  body: string;
}

/** GET with a short timeout; network errors become status 0. */
export function httpGet(url: string, timeoutMs = 2000): Promise<HttpResult> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', (err) => resolve({ status: 0, body: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
  });
}

/** Polls `check` until it returns a truthy value; throws with `what` and `context()` after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, opts: { timeoutMs?: number; intervalMs?: number; context?: () => string } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let lastError = '';
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}${opts.context ? `\n${opts.context()}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
}

export interface RunningAgent {
  readonly proc: ManagedProcess;
  readonly statusUrl: string;
  /** Waits for /readyz 200. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** /metrics text. */
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/** Starts `citadel agent` with `cwd` as the pod root (Istio's ./var/run/secrets/... defaults resolve there). */
export async function startAgent(opts: { name: string; cwd: string; args: readonly string[]; env?: NodeJS.ProcessEnv; logDir: string }): Promise<RunningAgent> {
  const port = await freePort();
  const statusUrl = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name: `agent ${opts.name}`,
    command: process.execPath,
    args: [CITADEL_MAIN, 'agent', '--status-address', `127.0.0.1:${port}`, '--log-level', 'debug', ...opts.args],
    cwd: opts.cwd,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...opts.env },
    logPath: path.join(opts.logDir, `agent-${opts.name}.log`),
  });
  return {
    proc,
    statusUrl,
    async waitReady(timeoutMs = 30_000) {
      await eventually(`agent ${opts.name} /readyz`, async () => {
        if (!proc.running()) throw new Error(`agent ${opts.name} exited (${await proc.exited})\n${proc.tail()}`);
        return (await httpGet(`${statusUrl}/readyz`)).status === 200;
      }, { timeoutMs, context: () => proc.tail(30) });
    },
    async metrics() {
      return (await httpGet(`${statusUrl}/metrics`)).body;
    },
    stop: () => proc.stop(5000),
  };
}

/** Reads a Prometheus sample (`name{labels}` exactly as printed, or a bare name); undefined when absent. */
export function metricValue(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return undefined;
}

export interface LineApp {
  readonly port: number;
  /** Connections accepted so far (Envoy's tcp_proxy connects before the downstream handshake is done). */
  connections(): number;
  /** Lines received so far: data that got through. */
  lines(): number;
  close(): Promise<void>;
}

/** A TCP app that answers every line `x` with `<name>:x`. */
export async function startLineApp(name: string): Promise<LineApp> {
  let count = 0;
  let lines = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString('utf8');
      let i;
      while ((i = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, i);
        buffered = buffered.slice(i + 1);
        lines++;
        socket.write(`${name}:${line}\n`);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => count,
    lines: () => lines,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface LineClient {
  /** Sends `line` and resolves with the answer line; rejects when the connection fails or closes first. */
  ask(line: string, timeoutMs?: number): Promise<string>;
  close(): void;
  readonly closed: boolean;
}

/** Opens a plain TCP connection (to an Envoy outbound listener) and talks in lines. */
export function connectLines(port: number, timeoutMs = 5000): Promise<LineClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let closed = false;
    let buffered = '';
    const waiters: Array<{ resolve: (l: string) => void; reject: (e: Error) => void }> = [];
    const failAll = (err: Error) => {
      closed = true;
      for (const w of waiters.splice(0)) w.reject(err);
    };
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to 127.0.0.1:${port} timed out`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve({
        ask(line, askTimeoutMs = 5000) {
          return new Promise<string>((res, rej) => {
            if (closed) return rej(new Error('connection closed'));
            const t = setTimeout(() => rej(new Error(`no answer to "${line}" within ${askTimeoutMs} ms`)), askTimeoutMs);
            waiters.push({ resolve: (l) => { clearTimeout(t); res(l); }, reject: (e) => { clearTimeout(t); rej(e); } });
            socket.write(`${line}\n`);
          });
        },
        close() {
          closed = true;
          socket.destroy();
        },
        get closed() {
          return closed;
        },
      });
    });
    socket.on('data', (chunk) => {
      buffered += chunk.toString('utf8');
      let i;
      while ((i = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, i);
        buffered = buffered.slice(i + 1);
        waiters.shift()?.resolve(line);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      failAll(err);
      reject(err);
    });
    socket.on('close', () => failAll(new Error('connection closed by peer')));
  });
}

/** One request over a fresh connection: connect, ask, close. Rejects on any failure (e.g. a refused handshake). */
export async function requestOnce(port: number, line: string, timeoutMs = 5000): Promise<string> {
  const client = await connectLines(port, timeoutMs);
  try {
    return await client.ask(line, timeoutMs);
  } finally {
    client.close();
  }
}
