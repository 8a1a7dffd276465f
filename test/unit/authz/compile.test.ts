import { describe, expect, it } from 'vitest';
import { compileNamespace } from '../../../src/authz/compile.js';
import type { AuthorizationPolicyObject, AuthorizationPolicySpec } from '../../../src/authz/types.js';

const NS = 'default';
const policy = (name: string, spec: AuthorizationPolicySpec, extra: { namespace?: string; annotations?: Record<string, string> } = {}): AuthorizationPolicyObject => ({
  metadata: { name, namespace: extra.namespace ?? NS, generation: 3, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
  spec,
});
const compile = (policies: AuthorizationPolicyObject[], trustDomain = 'cluster.local') => compileNamespace({ namespace: NS, trustDomain, policies });
const id = (name: string, rule = 0) => `ns[${NS}]-policy[${name}]-rule[${rule}]`;
const principal = (exact: string) => ({ authenticated: { principal_name: { exact } } });

describe('compileNamespace: Istio semantics', () => {
  it("the seed's ServiceRole/Binding as an AuthorizationPolicy: GET on /apis/* from frontend", () => {
    const { document, reports } = compile([policy('backend-apis-viewer', {
      selector: { matchLabels: { app: 'backend' } },
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/frontend'] } }], to: [{ operation: { methods: ['GET'], paths: ['/apis/*'] } }] }],
    })]);
    expect(reports).toEqual([{ name: 'backend-apis-viewer', generation: 3, problems: [] }]);
    expect(document).toEqual({
      version: 1,
      namespace: NS,
      selectors: [{
        matchLabels: { app: 'backend' },
        allow: {
          [id('backend-apis-viewer')]: {
            permissions: [{ and_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }, { url_path: { path: { prefix: '/apis/' } } }] } }],
            principals: [principal('spiffe://cluster.local/ns/default/sa/frontend')],
          },
        },
      }],
    });
  });

  it.each([
    ['spec: {} (ALLOW, no rules) is an ALLOW with nothing in it: deny all', {}, { allow: {} }],
    ['rules: [{}] allows everything', { rules: [{}] }, { allow: { [id('p')]: { permissions: [{ any: true }], principals: [{ any: true }] } } }],
    ['DENY with rules: [{}] denies everything', { action: 'DENY', rules: [{}] }, { deny: { [id('p')]: { permissions: [{ any: true }], principals: [{ any: true }] } } }],
    ['DENY without rules denies nothing (no entry at all)', { action: 'DENY' }, undefined],
  ] as const)('%s', (_, spec, expected) => {
    const { document } = compile([policy('p', spec as AuthorizationPolicySpec)]);
    expect(document.selectors).toEqual(expected ? [expected] : []);
  });

  it('values: exact, prefix, suffix, presence; not-forms; fields ANDed, values ORed', () => {
    const { document } = compile([policy('p', {
      rules: [{
        from: [{ source: { principals: ['*', 'cluster.local/ns/a/*', '*/sa/b'], notNamespaces: ['kube-system'] } }],
        to: [{ operation: { methods: ['GET', 'HEAD'], notPaths: ['/admin*'], hosts: ['*.example.com'] } }],
      }],
    })]);
    expect(document.selectors[0]!.allow![id('p')]).toEqual({
      permissions: [{ and_rules: { rules: [
        { header: { name: ':authority', string_match: { suffix: '.example.com', ignore_case: true } } },
        { or_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }, { header: { name: ':method', string_match: { exact: 'HEAD' } } }] } },
        { not_rule: { url_path: { path: { prefix: '/admin' } } } },
      ] } }],
      principals: [{ and_ids: { ids: [
        { or_ids: { ids: [
          { authenticated: { principal_name: { safe_regex: { regex: '.+' } } } },
          { authenticated: { principal_name: { prefix: 'spiffe://cluster.local/ns/a/' } } },
          { authenticated: { principal_name: { safe_regex: { regex: 'spiffe://.*/sa/b' } } } },
        ] } },
        { not_id: { authenticated: { principal_name: { safe_regex: { regex: 'spiffe://[^/]+/ns/kube-system/.+' } } } } },
      ] } }],
    });
  });

  it('from entries ORed, to entries ORed; namespaces, serviceAccounts, ports, * method, path templates', () => {
    const { document } = compile([policy('p', {
      rules: [{
        from: [{ source: { namespaces: ['photo'] } }, { source: { serviceAccounts: ['ops/admin', 'local'] } }],
        to: [{ operation: { ports: ['8080'], methods: ['*'] } }, { operation: { notPorts: ['9090'], paths: ['/v1/{*}/items/{**}'] } }],
      }],
    })]);
    expect(document.selectors[0]!.allow![id('p')]).toEqual({
      permissions: [{ or_rules: { rules: [
        { and_rules: { rules: [{ header: { name: ':method', present_match: true } }, { destination_port: 8080 }] } },
        { and_rules: { rules: [{ url_path: { path: { safe_regex: { regex: '/v1/[^/]+/items/.*' } } } }, { not_rule: { destination_port: 9090 } }] } },
      ] } }],
      principals: [{ or_ids: { ids: [
        { authenticated: { principal_name: { safe_regex: { regex: 'spiffe://[^/]+/ns/photo/.+' } } } },
        { or_ids: { ids: [principal('spiffe://cluster.local/ns/ops/sa/admin'), principal('spiffe://cluster.local/ns/default/sa/local')] } },
      ] } }],
    });
  });

  it('cluster.local in a principal means the local trust domain', () => {
    const { document } = compile([policy('p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/a/sa/b', 'other.org/ns/a/sa/b'] } }] }] })], 'prod.example');
    expect(document.selectors[0]!.allow![id('p')]!.principals).toEqual([{ or_ids: { ids: [
      principal('spiffe://prod.example/ns/a/sa/b'), principal('spiffe://other.org/ns/a/sa/b'),
    ] } }]);
  });

  it('groups policies by selector (label order does not matter), keeps DENY and ALLOW apart, ignores other namespaces', () => {
    const { document, reports } = compile([
      policy('b', { selector: { matchLabels: { tier: 'x', app: 'api' } }, rules: [{}] }),
      policy('a', { selector: { matchLabels: { app: 'api', tier: 'x' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] }),
      policy('c', { rules: [{}] }),
      policy('elsewhere', { rules: [{}] }, { namespace: 'other' }),
    ]);
    expect(reports.map((r) => r.name)).toEqual(['a', 'b', 'c']);
    expect(document.selectors.map((s) => [s.matchLabels, Object.keys(s.allow ?? {}), Object.keys(s.deny ?? {})])).toEqual([
      [{ app: 'api', tier: 'x' }, [id('b')], [id('a')]],
      [undefined, [id('c')], []],
    ]);
  });

  it('is deterministic: the same policies in another order give the same bytes', () => {
    const ps = [policy('x', { rules: [{}] }), policy('y', { action: 'DENY', rules: [{}] }), policy('z', { selector: { matchLabels: { a: 'b' } } })];
    expect(JSON.stringify(compile(ps).document)).toBe(JSON.stringify(compile([...ps].reverse()).document));
  });
});

describe('compileNamespace: what cannot be expressed fails closed and is reported', () => {
  it('an ALLOW rule with `when` is dropped (allows less); the other rules stay', () => {
    const { document, reports } = compile([policy('p', { rules: [{ when: [{ key: 'request.headers[x]', values: ['1'] }] }, { to: [{ operation: { methods: ['GET'] } }] }] })]);
    expect(Object.keys(document.selectors[0]!.allow!)).toEqual([id('p', 1)]);
    expect(reports[0]!.problems).toEqual(['rule 0: when not supported; the rule is dropped (it allows nothing)']);
  });

  it('an ALLOW policy whose only rule is dropped still makes the workload deny everything', () => {
    const { document, reports } = compile([policy('p', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }] }] })]);
    expect(document.selectors).toEqual([{ allow: {} }]);
    expect(reports[0]!.problems[0]).toMatch(/from\.source\.ipBlocks not supported; the rule is dropped/);
  });

  it('a DENY rule ignores what it cannot express (denies more)', () => {
    const { document, reports } = compile([policy('p', { action: 'DENY', rules: [{ from: [{ source: { requestPrincipals: ['iss/sub'] } }], to: [{ operation: { paths: ['/x'] } }] }] })]);
    expect(document.selectors[0]!.deny![id('p')]).toEqual({ permissions: [{ url_path: { path: { exact: '/x' } } }], principals: [{ any: true }] });
    expect(reports[0]!.problems).toEqual(['rule 0: from.source.requestPrincipals not supported; ignored, so the rule denies more']);
  });

  it('CUSTOM is enforced as DENY of what its rules match; AUDIT and targetRefs are not applied; all reported', () => {
    const { document, reports } = compile([
      policy('custom', { action: 'CUSTOM', provider: { name: 'opa' }, rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] }),
      policy('audit', { action: 'AUDIT', rules: [{}] }),
      policy('gw', { targetRefs: [{ kind: 'Gateway', name: 'g' }], rules: [{}] }),
    ]);
    expect(document.selectors).toEqual([{ deny: { [`ns[${NS}]-policy[custom]-rule[0]`]: { permissions: [{ url_path: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } }]);
    expect(Object.fromEntries(reports.map((r) => [r.name, r.problems.length]))).toEqual({ audit: 1, custom: 1, gw: 1 });
    expect(reports.find((r) => r.name === 'custom')!.problems[0]).toMatch(/CUSTOM .*opa.* enforced as DENY/);
  });

  it('bad values: an ALLOW rule is dropped, a DENY rule denies everything', () => {
    const bad = { to: [{ operation: { ports: ['http'] } }] };
    expect(compile([policy('p', { rules: [bad] })]).document.selectors).toEqual([{ allow: {} }]);
    const deny = compile([policy('p', { action: 'DENY', rules: [bad] })]);
    expect(deny.document.selectors[0]!.deny![id('p')]).toEqual({ permissions: [{ any: true }], principals: [{ any: true }] });
    expect(deny.reports[0]!.problems[0]).toMatch(/port "http" is not a number/);
  });
});
