#!/usr/bin/env node
/**
 * `citadel <command>`: the composition roots. Commands are loaded lazily so `citadel pki` does not pull in
 * gRPC or the Kubernetes client.
 */
import { realpathSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Command } from './command.js';
import { runAsProgram, runCommand, type CommandTable } from './run.js';

// V8 keeps the compiled code of the modules a command loads (all of them load after this line) in
// NODE_COMPILE_CACHE or the OS temp directory, so the next start skips compiling them; on a read-only file system
// it stays off and nothing else changes.
module.enableCompileCache?.();

export const COMMANDS: CommandTable = {
  ca: { summary: 'Run the certificate authority (Istio CSR API, root ConfigMaps, ServiceAccount secrets).', load: async () => (await import('./ca.js')).caCommand as unknown as Command },
  agent: { summary: 'Run the workload agent (key + CSR, Envoy SDS over a Unix socket, rotation).', load: async () => (await import('./agent.js')).agentCommand as unknown as Command },
  'pki create-ca': { summary: 'Write a root and an intermediate in the cacerts layout.', load: async () => (await import('./pki.js')).createCaCommand as unknown as Command },
  'pki revoke': { summary: 'Sign the CRL of a CA kept outside the cluster into ca-crl.pem.', load: async () => (await import('./pki.js')).revokeCommand as unknown as Command },
  'pki inspect': { summary: 'Print subject, SPIFFE IDs, serial, issuer, validity, key type and CA flag of each certificate.', load: async () => (await import('./pki.js')).inspectCommand as unknown as Command },
};

export function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(COMMANDS, argv, env);
}

// Run when executed directly (the `citadel` bin), not when imported by tests.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) runAsProgram(COMMANDS, process.argv.slice(2));
