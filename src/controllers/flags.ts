/**
 * The controllers' part of `citadel ca`'s flag table. src/cli/ca.ts spreads `controllerFlags` into its table
 * and passes `controllerOptions(config)` to startControllers, so the flags, their help and their parsing live
 * next to the code that uses them.
 */
import { flag, parse, type ConfigOf } from '../config/flags.js';
import { CitadelError } from '../errors.js';
import { DEFAULT_EXCLUDED_NAMESPACES } from './root-configmap.js';
import { SA_SECRETS_MODES, type SaSecretsMode } from './sa-secrets.js';
import { parseLabelSelector, type LabelSelector } from './selector.js';

const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const controllerFlags = {
  saSecrets: flag<SaSecretsMode>({
    name: 'sa-secrets',
    default: 'labeled',
    help: 'Secrets istio.<sa> (type istio.io/key-and-cert) per ServiceAccount: off, labeled (namespaces labelled citadel.io/sa-secrets=enabled) or all.',
    parse: parse.oneOf(...SA_SECRETS_MODES),
  }),
  namespaceSelector: flag<LabelSelector>({
    name: 'namespace-selector',
    default: '',
    help: 'Label selector of the namespaces that get the istio-ca-root-cert ConfigMap (e.g. "env in (prod,staging),!legacy"); empty selects all.',
    parse: parseLabelSelector,
  }),
  excludeNamespaces: flag<string[]>({
    name: 'exclude-namespaces',
    default: DEFAULT_EXCLUDED_NAMESPACES.join(','),
    help: 'Comma-separated namespaces that never get the istio-ca-root-cert ConfigMap.',
    parse: (raw) => {
      const names = parse.list(raw);
      const bad = names.find((n) => !NAMESPACE_NAME.test(n));
      if (bad) throw new Error(`"${bad}" is not a namespace name`);
      return names;
    },
  }),
  leaseDuration: flag<number>({
    name: 'leader-election-lease-duration',
    default: '15s',
    help: 'How long followers wait after the leader\'s last renewal before taking over.',
    parse: parse.duration,
  }),
  renewDeadline: flag<number>({
    name: 'leader-election-renew-deadline',
    default: '10s',
    help: 'The leader stops writing when it could not renew for this long (must be shorter than the lease duration).',
    parse: parse.duration,
  }),
  retryPeriod: flag<number>({
    name: 'leader-election-retry-period',
    default: '2s',
    help: 'How often the leader renews and followers try to acquire.',
    parse: parse.duration,
  }),
  writeQps: flag<number>({
    name: 'controller-write-qps',
    default: '50',
    help: 'Client-side limit on the controllers\' Kubernetes writes per second (burst: twice this).',
    parse: parse.number(0.1, 10_000),
  }),
};

export type ControllerFlagConfig = ConfigOf<typeof controllerFlags>;

/**
 * The startControllers options the flags set.
 * @throws CitadelError CONFIG_INVALID when the leader-election timings are inconsistent.
 */
export function controllerOptions(config: ControllerFlagConfig) {
  // Every flag has a default, so parseConfig always sets these; the fallbacks only satisfy the type.
  const leaseDurationMs = config.leaseDuration ?? 15_000;
  const renewDeadlineMs = config.renewDeadline ?? 10_000;
  const retryPeriodMs = config.retryPeriod ?? 2_000;
  const writeQps = config.writeQps ?? 50;
  if (!(retryPeriodMs < renewDeadlineMs && renewDeadlineMs < leaseDurationMs)) {
    throw new CitadelError(
      'CONFIG_INVALID',
      'invalid configuration: --leader-election-retry-period < --leader-election-renew-deadline < --leader-election-lease-duration must hold',
    );
  }
  return {
    saSecrets: config.saSecrets ?? 'labeled',
    namespaceSelector: config.namespaceSelector,
    excludedNamespaces: config.excludeNamespaces,
    leaseDurationMs,
    renewDeadlineMs,
    retryPeriodMs,
    writeQps,
    writeBurst: Math.max(1, Math.ceil(writeQps * 2)),
  } as const;
}
