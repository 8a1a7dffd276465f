import { describe, expect, it } from 'vitest';
import { isCitadelError } from '../../../src/errors.js';
import { parseLabelSelector } from '../../../src/controllers/selector.js';

describe('parseLabelSelector', () => {
  const cases: [string, Record<string, string>, boolean][] = [
    ['', {}, true],
    ['env=prod', { env: 'prod' }, true],
    ['env==prod', { env: 'prod' }, true],
    ['env=prod', { env: 'dev' }, false],
    ['env=prod', {}, false],
    ['env!=prod', {}, true],
    ['env!=prod', { env: 'prod' }, false],
    ['env in (prod, staging)', { env: 'staging' }, true],
    ['env in (prod,staging)', { env: 'dev' }, false],
    ['env notin (prod,staging)', { env: 'dev' }, true],
    ['env notin (prod,staging)', {}, true],
    ['env notin (prod,staging)', { env: 'prod' }, false],
    ['istio-injection', { 'istio-injection': 'enabled' }, true],
    ['istio-injection', {}, false],
    ['!citadel.io/skip', {}, true],
    ['!citadel.io/skip', { 'citadel.io/skip': '' }, false],
    ['team=a, env in (prod,dev), !legacy', { team: 'a', env: 'dev' }, true],
    ['team=a, env in (prod,dev), !legacy', { team: 'a', env: 'dev', legacy: 'y' }, false],
    ['empty=', { empty: '' }, true],
  ];
  it.each(cases)('%j against %j -> %s', (raw, labels, expected) => {
    expect(parseLabelSelector(raw).matches(labels)).toBe(expected);
  });

  it('prints a canonical form', () => {
    expect(parseLabelSelector(' env == prod ,tier in (web, api),!x,y').toString()).toBe('env=prod,tier in (api,web),!x,y');
  });

  it.each(['a,,b', 'env in (a', 'env in a,b)', '=x', 'bad key=1', 'env=-x-', 'Bad_Prefix/x=1', 'x>1', '!'])(
    'refuses %j with CONFIG_INVALID',
    (raw) => {
      let error: unknown;
      try {
        parseLabelSelector(raw);
      } catch (err) {
        error = err;
      }
      expect(isCitadelError(error, 'CONFIG_INVALID')).toBe(true);
      expect((error as Error).message).toMatch(/^label selector: /);
    },
  );
});
