// Placeholder until the agent command lands; replaced by its own issue's work.
import { defineCommand } from './command.js';

export const agentCommand = defineCommand({
  name: 'agent',
  usage: 'citadel agent [flags]',
  summary: 'not built yet',
  flags: {},
  async run() {
    throw new Error('citadel agent is not built yet');
  },
});
