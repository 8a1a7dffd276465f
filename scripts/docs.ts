// `npm run docs`: regenerates the configuration reference in README.md from the flag tables.
import { readFileSync, writeFileSync } from 'node:fs';
import { withConfigReference } from '../src/cli/reference.js';

const path = new URL('../../README.md', import.meta.url);
writeFileSync(path, await withConfigReference(readFileSync(path, 'utf8')));
console.log('README.md configuration reference updated');
