/**
 * Pieces for the agent e2e tests: the compiled `citadel` (as users run it), agent processes in a pod root,
 * tiny TCP apps that answer every line with their name, raw TCP clients, and waiting helpers.
 */
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { freePort } from '../../harness/index.js';
import { startProcess, type ManagedProcess } from '../../harness/process.js';
import { AGENT_BUNDLE, CITADEL_MAIN } from '../../support/build.js';
import { waitFor, type PollOptions } from '../../support/wait.js';

export { CITADEL_MAIN, ensureBuilt, ensureBundled, REPO_ROOT } from '../../support/build.js';

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

/** `waitFor` with the e2e defaults: 30 s, polled every 200 ms (processes and Envoys take a while to converge). */
export function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, opts: PollOptions = {}): Promise<T> {
  return waitFor(what, check, { timeoutMs: 30_000, intervalMs: 200, ...opts });
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

/**
 * Starts `citadel agent` with `cwd` as the pod root (Istio's ./var/run/secrets/... defaults resolve there); with
 * `bundled`, the agent image's bundle (ensureBundled() first) instead of dist/src.
 */
export async function startAgent(opts: { name: string; cwd: string; args: readonly string[]; env?: NodeJS.ProcessEnv; logDir: string; bundled?: boolean }): Promise<RunningAgent> {
  const port = await freePort();
  const statusUrl = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name: `agent ${opts.name}`,
    command: process.execPath,
    args: [...(opts.bundled ? [AGENT_BUNDLE] : [CITADEL_MAIN, 'agent']), '--status-address', `127.0.0.1:${port}`, '--log-level', 'debug', ...opts.args],
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

/** Calls `onLine` with each newline-terminated line that arrives on `socket` (without the newline). */
function onLines(socket: net.Socket, onLine: (line: string) => void): void {
  let buffered = '';
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      onLine(line);
    }
  });
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
    onLines(socket, (line) => {
      lines++;
      socket.write(`${name}:${line}\n`);
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
    onLines(socket, (line) => waiters.shift()?.resolve(line));
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
