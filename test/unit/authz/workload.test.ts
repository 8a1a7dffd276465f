import { describe, expect, it } from 'vitest';
import { compileNamespace } from '../../../src/authz/compile.js';
import { parseAuthzResourceName, parseCompiledAuthz, parsePodLabels, rbacFilterConfig } from '../../../src/authz/workload.js';
import type { AuthorizationPolicySpec } from '../../../src/authz/types.js';

const doc = (policies: Array<[string, AuthorizationPolicySpec]>) =>
  compileNamespace({ namespace: 'ns', trustDomain: 'cluster.local', policies: policies.map(([name, spec]) => ({ metadata: { name, namespace: 'ns' }, spec })) }).document;

describe('the agent side: which RBAC config Envoy gets for a filter name', () => {
  it('parses filter names', () => {
    expect(parseAuthzResourceName('citadel-authz-allow')).toEqual({ action: 'allow' });
    expect(parseAuthzResourceName('citadel-authz-deny-8080')).toEqual({ action: 'deny', port: 8080 });
    for (const bad of ['citadel-authz-allow-0', 'citadel-authz-allow-70000', 'citadel-authz-log', 'default']) expect(parseAuthzResourceName(bad)).toBeUndefined();
  });

  it('parses downward-API label files (Go-quoted values)', () => {
    expect(parsePodLabels('app="api"\napp.kubernetes.io/name="photo-backend"\nq="a\\"b"\n')).toEqual({ app: 'api', 'app.kubernetes.io/name': 'photo-backend', q: 'a"b' });
    expect(() => parsePodLabels('novalue\n')).toThrow(/line 1/);
  });

  it('refuses documents of another format version', () => {
    expect(() => parseCompiledAuthz('{"version":2,"selectors":[]}')).toThrow(/format version 2/);
  });

  it('no policy selects the workload: filters without rules (enforce nothing)', () => {
    const d = doc([['p', { selector: { matchLabels: { app: 'other' } }, rules: [{}] }]]);
    expect(rbacFilterConfig(d, { app: 'api' }, 'citadel-authz-allow')).toEqual({ '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC', rules_stat_prefix: 'allow_' });
    expect(rbacFilterConfig(d, { app: 'api' }, 'citadel-authz-deny')).not.toHaveProperty('rules');
    expect(rbacFilterConfig(d, { app: 'api' }, 'not-ours')).toBeUndefined();
  });

  it('merges every selector that matches the labels; an ALLOW policy with no rules denies all', () => {
    const d = doc([
      ['all', { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] }],
      ['api', { selector: { matchLabels: { app: 'api' } }, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }],
      ['locked', { selector: { matchLabels: { app: 'locked' } } }],
    ]);
    expect(Object.keys((rbacFilterConfig(d, { app: 'api', x: 'y' }, 'citadel-authz-deny') as { rules: { policies: object } }).rules.policies)).toEqual(['ns[ns]-policy[all]-rule[0]']);
    expect(rbacFilterConfig(d, { app: 'api' }, 'citadel-authz-allow')).toMatchObject({ rules: { action: 'ALLOW', policies: { 'ns[ns]-policy[api]-rule[0]': {} } } });
    expect(rbacFilterConfig(d, { app: 'locked' }, 'citadel-authz-allow')).toMatchObject({ rules: { action: 'ALLOW', policies: {} } });
  });

  it('decides port conditions for the workload port in the filter name', () => {
    const d = doc([['p', { rules: [{ to: [{ operation: { ports: ['8080'] } }, { operation: { notPorts: ['8080'], methods: ['GET'] } }] }] }]]);
    const perms = (name: string) => (rbacFilterConfig(d, {}, name) as { rules: { policies: Record<string, { permissions: unknown[] }> } }).rules.policies['ns[ns]-policy[p]-rule[0]']!.permissions;
    expect(perms('citadel-authz-allow-8080')).toEqual([{ or_rules: { rules: [{ any: true }, { and_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }, { not_rule: { any: true } }] } }] } }]);
    expect(perms('citadel-authz-allow-9090')).toEqual([{ or_rules: { rules: [{ not_rule: { any: true } }, { and_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }, { not_rule: { not_rule: { any: true } } }] } }] } }]);
    // Without a port in the name the condition stays a destination_port (Envoy's own listener port).
    expect(JSON.stringify(perms('citadel-authz-allow'))).toContain('"destination_port":8080');
  });
});
