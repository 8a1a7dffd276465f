/**
 * Running one command of a command table: help, the runtime check, flags and env parsed once, signals, and the
 * exit code. main.ts runs it over every command (the `citadel` bin); a bundle entry (agent-main.ts) over one.
 */
import { parseConfig, helpText } from '../config/flags.js';
import { CitadelError } from '../errors.js';
import { unsupportedRuntime, type Command } from './command.js';

export type CommandTable = Record<string, { summary: string; load: () => Promise<Command> }>;

function topHelp(commands: CommandTable): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(16)}${c.summary}`);
  return `Usage: citadel <command> [flags]\n\nCommands:\n${rows.join('\n')}\n\nRun "citadel <command> --help" for its flags.\n`;
}

/** Runs the command `argv` names (one or two words) with the rest of `argv` as its flags; resolves with the exit code. */
export async function runCommand(commands: CommandTable, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [first, second] = argv;
  const name = first && commands[`${first} ${second}`] ? `${first} ${second}` : first;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp(commands));
    return name ? 0 : 2;
  }
  const tooOld = unsupportedRuntime(process.version);
  if (tooOld) {
    process.stderr.write(`citadel: ${tooOld}\n`);
    return 1;
  }
  const entry = commands[name];
  if (!entry) {
    process.stderr.write(`citadel: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${topHelp(commands)}`);
    return 2;
  }
  const cmd = await entry.load();
  let rest = argv.slice(name.split(' ').length);
  if (cmd.positional && rest[0] !== undefined && !rest[0].startsWith('-')) rest = [`--${cmd.positional}`, ...rest];
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(helpText(cmd.usage, cmd.summary, cmd.flags));
    return 0;
  }
  const controller = new AbortController();
  const stop = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130); // second signal: give up waiting
    controller.abort(new Error(`received ${sig}`));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  try {
    const config = parseConfig(cmd.flags, rest, env);
    return await cmd.run(config, { stdout: process.stdout, stderr: process.stderr, env, signal: controller.signal });
  } catch (err) {
    if (err instanceof CitadelError) {
      process.stderr.write(`citadel ${name}: ${err.message}${err.detail ? `: ${err.detail}` : ''}\n`);
      return err.code === 'CONFIG_INVALID' ? 2 : 1;
    }
    throw err;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}

/** runCommand as the process: exits with its code, or prints the stack of what it threw and exits 1. */
export function runAsProgram(commands: CommandTable, argv: string[]): void {
  runCommand(commands, argv).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`citadel: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
