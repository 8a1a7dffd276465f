import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/flags.js';
import { controllerFlags, controllerOptions } from '../../../src/controllers/flags.js';
import { isCitadelError } from '../../../src/errors.js';

const parseArgs = (argv: string[]) => parseConfig(controllerFlags, argv, {});

describe('controllerFlags', () => {
  it('has working defaults', () => {
    const opts = controllerOptions(parseArgs([]));
    expect(opts).toMatchObject({
      saSecrets: 'labeled',
      excludedNamespaces: ['kube-public', 'kube-node-lease'],
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      writeQps: 50,
      writeBurst: 100,
    });
    expect(opts.namespaceSelector?.matches({ anything: 'x' })).toBe(true);
  });

  it('parses every flag', () => {
    const opts = controllerOptions(parseArgs([
      '--sa-secrets=all', '--namespace-selector', 'env in (prod),!legacy', '--exclude-namespaces', 'kube-public, tmp',
      '--leader-election-lease-duration=6s', '--leader-election-renew-deadline=4s', '--leader-election-retry-period=1s', '--controller-write-qps=5',
    ]));
    expect(opts.saSecrets).toBe('all');
    expect(opts.namespaceSelector?.toString()).toBe('env=prod,!legacy');
    expect(opts.excludedNamespaces).toEqual(['kube-public', 'tmp']);
    expect([opts.leaseDurationMs, opts.renewDeadlineMs, opts.retryPeriodMs, opts.writeQps, opts.writeBurst]).toEqual([6000, 4000, 1000, 5, 10]);
  });

  it.each([
    [['--sa-secrets=some'], /--sa-secrets: must be one of off, labeled, all/],
    [['--namespace-selector=env in (a'], /--namespace-selector: label selector: unbalanced/],
    [['--exclude-namespaces=Bad_Name'], /--exclude-namespaces: "Bad_Name" is not a namespace name/],
    [['--controller-write-qps=0'], /--controller-write-qps: must be between/],
  ])('refuses %j naming the flag', (argv, message) => {
    expect(() => parseArgs(argv)).toThrow(message);
  });

  it('refuses inconsistent leader election timings', () => {
    let error: unknown;
    try {
      controllerOptions(parseArgs(['--leader-election-renew-deadline=20s']));
    } catch (err) {
      error = err;
    }
    expect(isCitadelError(error, 'CONFIG_INVALID')).toBe(true);
  });
});
