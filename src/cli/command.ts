/** The shape of a `citadel <command>`: a flag table and a run function; main.ts does parsing and help. */
import type { ConfigOf, FlagTable } from '../config/flags.js';

export interface Command<F extends FlagTable = FlagTable> {
  readonly name: string;
  readonly usage: string;
  readonly summary: string;
  readonly flags: F;
  /** Name of a flag that may also be given as the first bare argument (`citadel pki inspect FILE`). */
  readonly positional?: string;
  /** Runs the command; resolves with the exit code once it is done (servers: after SIGTERM/SIGINT). */
  run(config: ConfigOf<F>, io: CommandIO): Promise<number>;
}

export interface CommandIO {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Aborted on SIGTERM/SIGINT. */
  readonly signal: AbortSignal;
}

/**
 * Resolves once `signal` is aborted (at once when it already is), with the reason's message for the shutdown log
 * line: servers call this after start-up and then stop what they started.
 */
export function untilAborted(signal: AbortSignal): Promise<string> {
  const reasonText = () => String((signal.reason as Error | undefined)?.message ?? signal.reason ?? 'signal');
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(reasonText());
    signal.addEventListener('abort', () => resolve(reasonText()), { once: true });
  });
}

export function defineCommand<F extends FlagTable>(cmd: Command<F>): Command<F> {
  return cmd;
}

/** Node and OpenSSL versions of this process, in the start-up log line of `ca` and `agent`. */
export const RUNTIME = { node: process.version, openssl: process.versions.openssl };

/** The oldest Node.js major citadel runs on: 24 is the LTS line with OpenSSL 3.5. */
export const MIN_NODE_MAJOR = 24;

/** Why `version` (process.version's form, `v24.1.0`) cannot run citadel, or undefined when it can. */
export function unsupportedRuntime(version: string): string | undefined {
  const major = Number(/^v(\d+)\./.exec(version)?.[1]);
  if (major >= MIN_NODE_MAJOR) return undefined;
  return (
    `citadel needs Node.js ${MIN_NODE_MAJOR} or newer, and this is ${version}. ` +
    'In a clone of the repository, `npm ci` installs Node 24 as node_modules/.bin/node and the npm scripts use it; ' +
    'elsewhere install Node 24 LTS (https://nodejs.org) or use the container images.'
  );
}
