// Placeholder until `citadel pki` lands (issue 2).
import { defineCommand } from './command.js';

const placeholder = (name: string) =>
  defineCommand({ name, usage: `citadel ${name}`, summary: 'not built yet', flags: {}, async run() { throw new Error(`citadel ${name} is not built yet`); } });
export const createCaCommand = placeholder('pki create-ca');
export const inspectCommand = placeholder('pki inspect');
