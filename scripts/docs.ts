// `npm run docs`: regenerates the configuration reference (docs/configuration.md) from the flag tables.
import { readFileSync, writeFileSync } from 'node:fs';
import { REFERENCE_DOC, withConfigReference } from '../src/cli/reference.js';

const path = new URL(`../../${REFERENCE_DOC}`, import.meta.url);
writeFileSync(path, await withConfigReference(readFileSync(path, 'utf8')));
console.log(`${REFERENCE_DOC} updated`);
