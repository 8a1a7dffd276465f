#!/usr/bin/env node
/**
 * `citadel <command>`: the composition roots. Commands are loaded lazily so `citadel pki` does not pull in
 * gRPC or the Kubernetes client.
 */
import { realpathSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseConfig, helpText } from '../config/flags.js';
import { CitadelError } from '../errors.js';
import { unsupportedRuntime, type Command } from './command.js';

// V8 keeps the compiled code of the modules a command loads (all of them load after this line) in
// NODE_COMPILE_CACHE or the OS temp directory, so the next start skips compiling them; on a read-only file system
// it stays off and nothing else changes.
module.enableCompileCache?.();

export const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  ca: { summary: 'Run the certificate authority (Istio CSR API, root ConfigMaps, ServiceAccount secrets).', load: async () => (await import('./ca.js')).caCommand as unknown as Command },
  agent: { summary: 'Run the workload agent (key + CSR, Envoy SDS over a Unix socket, rotation).', load: async () => (await import('./agent.js')).agentCommand as unknown as Command },
  'pki create-ca': { summary: 'Write a root and an intermediate in the cacerts layout.', load: async () => (await import('./pki.js')).createCaCommand as unknown as Command },
  'pki revoke': { summary: 'Sign the CRL of a CA kept outside the cluster into ca-crl.pem.', load: async () => (await import('./pki.js')).revokeCommand as unknown as Command },
  'pki inspect': { summary: 'Print subject, SPIFFE IDs, serial, issuer, validity, key type and CA flag of each certificate.', load: async () => (await import('./pki.js')).inspectCommand as unknown as Command },
};

function topHelp(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(16)}${c.summary}`);
  return `Usage: citadel <command> [flags]\n\nCommands:\n${rows.join('\n')}\n\nRun "citadel <command> --help" for its flags.\n`;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [first, second] = argv;
  const name = first && COMMANDS[`${first} ${second}`] ? `${first} ${second}` : first;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp());
    return name ? 0 : 2;
  }
  const tooOld = unsupportedRuntime(process.version);
  if (tooOld) {
    process.stderr.write(`citadel: ${tooOld}\n`);
    return 1;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`citadel: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${topHelp()}`);
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

// Run when executed directly (the `citadel` bin), not when imported by tests.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`citadel: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
