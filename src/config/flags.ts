/**
 * Flags + environment -> one validated, frozen config object. Each program declares its flags once
 * (name, env var, default, parser, help); the same table drives parsing, `--help` and the generated docs/configuration.md.
 * Every error names the flag (and env var) and the reason, so bad config fails at the edge.
 */
import { CitadelError } from '../errors.js';

export interface Flag<T> {
  /** Long name without dashes, e.g. `trust-domain`. */
  readonly name: string;
  /** Environment variable read when the flag is absent (Istio's name where one exists). */
  readonly env?: string;
  readonly help: string;
  /** Raw default, parsed like a user value; undefined means "not set". */
  readonly default?: string;
  readonly parse: (raw: string) => T;
  /** Flags that take no value (`--once`). */
  readonly boolean?: boolean;
}

export type FlagTable = Record<string, Flag<unknown>>;
export type ConfigOf<F extends FlagTable> = {
  readonly [K in keyof F]: F[K] extends Flag<infer T> ? (F[K]['default'] extends string ? T : T | undefined) : never;
};

/** Declares a flag; with a string `default` the parsed value is typed as always present. */
export function flag<T>(spec: Flag<T> & { default: string }): Flag<T> & { default: string };
export function flag<T>(spec: Flag<T>): Flag<T>;
export function flag<T>(spec: Flag<T>): Flag<T> {
  return spec;
}

function flagLabel(f: Flag<unknown>): string {
  return f.env ? `--${f.name} (${f.env})` : `--${f.name}`;
}

/**
 * Parses argv (after the subcommand) and env against the table. Flags win over env vars, env vars over defaults.
 * Accepts `--name value` and `--name=value`. Unknown flags and stray arguments are errors.
 */
export function parseConfig<F extends FlagTable>(table: F, argv: readonly string[], env: NodeJS.ProcessEnv): ConfigOf<F> {
  const byName = new Map(Object.entries(table).map(([key, f]) => [f.name, { key, f }]));
  const raw = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw configError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const entry = byName.get(name);
    if (!entry) throw configError(`unknown flag --${name} (see --help)`);
    let value: string;
    if (eq !== -1) value = arg.slice(eq + 1);
    else if (entry.f.boolean) value = 'true';
    else {
      const next = argv[++i];
      if (next === undefined) throw configError(`${flagLabel(entry.f)}: needs a value`);
      value = next;
    }
    if (raw.has(entry.key)) throw configError(`${flagLabel(entry.f)}: given more than once`);
    raw.set(entry.key, value);
  }
  const out: Record<string, unknown> = {};
  for (const [key, f] of Object.entries(table)) {
    const fromEnv = f.env !== undefined && env[f.env] !== undefined && env[f.env] !== '' ? env[f.env] : undefined;
    const value = raw.get(key) ?? fromEnv ?? f.default;
    if (value === undefined) {
      out[key] = undefined;
      continue;
    }
    try {
      out[key] = f.parse(value);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw configError(`${flagLabel(f)}: ${reason} (got "${value}")`);
    }
  }
  return Object.freeze(out) as ConfigOf<F>;
}

function configError(message: string): CitadelError {
  return new CitadelError('CONFIG_INVALID', `invalid configuration: ${message}`);
}

/** The error of a check across flags (checkCaConfig, checkAgentConfig), naming the flag at fault. */
export function flagError(flagName: string, message: string): CitadelError {
  return configError(`--${flagName}: ${message}`);
}

/** `--help` text: every flag with its env var and default. */
export function helpText(usage: string, summary: string, table: FlagTable): string {
  const rows = Object.values(table).map((f) => {
    const left = `  --${f.name}${f.boolean ? '' : ' <value>'}`;
    const extras = [f.env ? `env ${f.env}` : '', f.default !== undefined && !f.boolean ? `default ${JSON.stringify(f.default)}` : '']
      .filter(Boolean)
      .join(', ');
    return `${left}\n      ${f.help}${extras ? ` [${extras}]` : ''}`;
  });
  return `Usage: ${usage}\n\n${summary}\n\nFlags:\n${rows.join('\n')}\n  --help\n      Show this help.\n`;
}

// ---- Value parsers. Each throws an Error whose message is the reason; parseConfig adds the flag name. ----

export const parse = {
  string: (raw: string): string => {
    if (raw.trim() === '') throw new Error('must not be empty');
    return raw;
  },
  bool: (raw: string): boolean => {
    if (/^(true|1|yes)$/i.test(raw)) return true;
    if (/^(false|0|no)$/i.test(raw)) return false;
    throw new Error('must be true or false');
  },
  int: (min: number, max: number) => (raw: string): number => {
    if (!/^-?\d+$/.test(raw)) throw new Error('must be a whole number');
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`must be between ${min} and ${max}`);
    return n;
  },
  number: (min: number, max: number) => (raw: string): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n)) throw new Error('must be a number');
    if (n < min || n > max) throw new Error(`must be between ${min} and ${max}`);
    return n;
  },
  oneOf: <T extends string>(...values: T[]) => (raw: string): T => {
    if (!(values as string[]).includes(raw)) throw new Error(`must be one of ${values.join(', ')}`);
    return raw as T;
  },
  list: (raw: string): string[] => raw.split(',').map((s) => s.trim()).filter(Boolean),
  /** A duration that may be 0 (meaning "off"). */
  durationOrZero: (raw: string): number => {
    const ms = parseDuration(raw);
    if (ms < 0) throw new Error('must not be negative');
    return ms;
  },
  /** Go-style duration ("90s", "1h30m", "500ms", "2160h") -> milliseconds; must be positive. */
  duration: (raw: string): number => {
    const ms = parseDuration(raw);
    if (ms <= 0) throw new Error('must be a positive duration');
    return ms;
  },
  /** `host:port`, `:port` (all interfaces) or `unix:/path`. */
  address: (raw: string): ListenAddress => parseAddress(raw),
};

const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Go-style duration (`90s`, `1h30m`, `0`) to milliseconds.
 * @throws Error naming the accepted forms (parseConfig adds the flag's name).
 */
export function parseDuration(raw: string): number {
  const s = raw.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (matched === 0 || matched !== s.length) throw new Error('must be a duration such as 90s, 15m, 24h or 1h30m');
  return total;
}

/** Formats milliseconds as a Go-style duration ("24h0m0s" style is noisy; we print the largest exact unit). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % size === 0 && ms >= size) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/**
 * `host:port`, `[v6]:port`, `:port` (all interfaces) or `unix:/path`.
 * @throws Error naming the accepted forms, or when the port is above 65535.
 */
export function parseAddress(raw: string): ListenAddress {
  if (raw.startsWith('unix:')) {
    const path = raw.slice(5);
    if (!path) throw new Error('unix: needs a path');
    return { kind: 'unix', path };
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(raw);
  if (!m) throw new Error('must be host:port, :port or unix:/path');
  const port = Number(m[3]);
  if (port > 65535) throw new Error('port must be at most 65535');
  return { kind: 'tcp', host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** The inverse of parseAddress (IPv6 hosts bracketed); what grpc-js and logs are given. */
export function formatAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
