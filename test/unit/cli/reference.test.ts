import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configReference, REFERENCE_DOC, withConfigReference } from '../../../src/cli/reference.js';

describe('the configuration reference (docs/configuration.md)', () => {
  it('is up to date with the flag tables (run `npm run docs` after changing a flag)', async () => {
    const doc = readFileSync(new URL(`../../../${REFERENCE_DOC}`, import.meta.url), 'utf8');
    expect(await withConfigReference(doc)).toBe(doc);
  });

  it('lists every flag of every command with its env var', async () => {
    const ref = await configReference();
    for (const needle of ['`--trust-domain` | `TRUST_DOMAIN`', '`--ca-address` | `CA_ADDR`', '`--cacerts-dir` | `ROOT_CA_DIR`']) {
      expect(ref).toContain(needle);
    }
  });
});
