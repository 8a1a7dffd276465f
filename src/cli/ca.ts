// Placeholder until the ca command lands; replaced by its own issue's work.
import { defineCommand } from './command.js';

export const caCommand = defineCommand({
  name: 'ca',
  usage: 'citadel ca [flags]',
  summary: 'not built yet',
  flags: {},
  async run() {
    throw new Error('citadel ca is not built yet');
  },
});
