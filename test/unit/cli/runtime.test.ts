import { describe, expect, it } from 'vitest';
import { MIN_NODE_MAJOR, unsupportedRuntime } from '../../../src/cli/command.js';

describe('the Node.js runtime', () => {
  it('refuses Node before 24 with a message that says what to do, and accepts 24 and later', () => {
    for (const old of ['v20.20.2', 'v22.20.0', 'v23.11.1']) {
      const why = unsupportedRuntime(old);
      expect(why).toContain(`citadel needs Node.js 24 or newer, and this is ${old}`);
      expect(why).toContain('node_modules/.bin/node');
    }
    for (const ok of ['v24.0.0', 'v24.21.0', 'v26.12.1', 'v100.0.0']) expect(unsupportedRuntime(ok)).toBeUndefined();
    expect(unsupportedRuntime('not a version')).toBeDefined();
  });

  it('runs the tests themselves (and so every process they spawn with process.execPath) on Node 24 or later', () => {
    expect(Number(process.version.slice(1).split('.')[0])).toBeGreaterThanOrEqual(MIN_NODE_MAJOR);
    expect(process.versions.openssl).toMatch(/^3\.([5-9]|\d\d)\./);
  });
});
