/**
 * The entry of the agent's bundle (dist/bundle/agent.mjs, built by scripts/bundle.ts, run by the agent image):
 * `citadel agent` alone, its arguments being the agent's flags. One file instead of ~150 modules: Node's module
 * loader (resolving, stat, reading each file) was most of the agent's start-up CPU.
 */
import type { Command } from './command.js';
import { agentCommand } from './agent.js';
import { runAsProgram } from './run.js';

runAsProgram({ agent: { summary: agentCommand.summary, load: async () => agentCommand as unknown as Command } }, ['agent', ...process.argv.slice(2)]);
