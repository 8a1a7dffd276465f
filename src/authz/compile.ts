/**
 * The AuthorizationPolicy compiler: a namespace's policies -> one compiled document of Envoy RBAC policies per
 * workload selector, plus, per policy, what could not be expressed. Pure: no I/O, no clock.
 *
 * Semantics are Istio's (AuthorizationPolicy header comment; istiod's authz builder): DENY before ALLOW, a
 * workload with no ALLOW policy allows, a workload with an ALLOW policy allows only what one of them matches,
 * `spec: {}` (ALLOW, no rules) denies everything, `rules: [{}]` allows everything, DENY without rules denies
 * nothing. Values: exact `v`, prefix `v*`, suffix `*v`, presence `*`; within a field ORed, fields of one
 * source/operation ANDed, `from` entries ORed, `to` entries ORed, from AND to, rules and policies ORed.
 *
 * What cannot be expressed fails closed, as istiod does: an ALLOW rule that uses it is dropped (the policy
 * allows less), a DENY rule ignores the field (the rule denies more), a CUSTOM policy is enforced as DENY of
 * what its rules match (there is no external authorizer to ask). AUDIT is not enforced by Istio either; it is
 * reported and left out. Every such case is returned as a problem, for the policy's status.
 */
import {
  AUTHZ_FORMAT_VERSION,
  type AuthorizationPolicyObject,
  type CompiledAuthz,
  type CompiledSelector,
  type Permission,
  type PolicyOperation,
  type PolicyRule,
  type PolicySource,
  type Principal,
  type RbacPolicies,
  type RbacPolicy,
  type StringMatcher,
} from './types.js';

/** The local trust domain as policies write it (Istio rewrites it to the configured one). */
const LOCAL_TRUST_DOMAIN = 'cluster.local';

export interface PolicyReport {
  readonly name: string;
  readonly generation?: number;
  /** Empty: compiled exactly. Otherwise one line per thing not expressed, saying how it failed closed. */
  readonly problems: readonly string[];
}

export interface CompileResult {
  readonly document: CompiledAuthz;
  readonly reports: readonly PolicyReport[];
}

interface Compiled {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly action: 'ALLOW' | 'DENY' | undefined;
  readonly policies: Record<string, RbacPolicy>;
}

const regexEscape = (s: string) => s.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');
const any = { any: true } as const;

/** Istio's string forms: `*` presence, `v*` prefix, `*v` suffix, else exact. */
function stringMatch(value: string, opts: { ignoreCase?: boolean } = {}): StringMatcher | 'present' {
  const ic = opts.ignoreCase ? { ignore_case: true } : {};
  if (value === '*') return 'present';
  if (value.endsWith('*')) return { prefix: value.slice(0, -1), ...ic };
  if (value.startsWith('*')) return { suffix: value.slice(1), ...ic };
  return { exact: value, ...ic };
}

function orPermissions(items: Permission[]): Permission {
  return items.length === 1 ? items[0]! : { or_rules: { rules: items } };
}
function orPrincipals(items: Principal[]): Principal {
  return items.length === 1 ? items[0]! : { or_ids: { ids: items } };
}

class RuleError extends Error {}

function principalMatcher(value: string, trustDomain: string): StringMatcher {
  if (value === '*') return { safe_regex: { regex: '.+' } };
  const local = (v: string) => (v.startsWith(`${LOCAL_TRUST_DOMAIN}/`) ? `${trustDomain}${v.slice(LOCAL_TRUST_DOMAIN.length)}` : v);
  if (value.endsWith('*')) return { prefix: `spiffe://${local(value.slice(0, -1))}` };
  if (value.startsWith('*')) return { safe_regex: { regex: `spiffe://.*${regexEscape(value.slice(1))}` } };
  return { exact: `spiffe://${local(value)}` };
}

function namespaceMatcher(value: string): StringMatcher {
  const ns = value === '*' ? '[^/]+'
    : value.endsWith('*') ? `${regexEscape(value.slice(0, -1))}[^/]*`
      : value.startsWith('*') ? `[^/]*${regexEscape(value.slice(1))}`
        : regexEscape(value);
  return { safe_regex: { regex: `spiffe://[^/]+/ns/${ns}/.+` } };
}

function serviceAccountMatcher(value: string, namespace: string, trustDomain: string): StringMatcher {
  const parts = value.split('/');
  if (parts.length > 2 || parts.some((p) => p === '' || p.includes('*'))) throw new RuleError(`serviceAccounts value "${value}" is not "<sa>" or "<ns>/<sa>"`);
  const [ns, sa] = parts.length === 2 ? [parts[0]!, parts[1]!] : [namespace, parts[0]!];
  return { exact: `spiffe://${trustDomain}/ns/${ns}/sa/${sa}` };
}

function pathMatcher(value: string): StringMatcher {
  if (value.includes('{')) {
    // Templates: {*} one segment, {**} any number of segments (only as the last part).
    const out = value.split(/(\{\*\*\}|\{\*\})/).map((part) => (part === '{*}' ? '[^/]+' : part === '{**}' ? '.*' : regexEscape(part))).join('');
    if (/[{}]/.test(value.replace(/\{\*\*?\}/g, ''))) throw new RuleError(`path template "${value}" is not supported (only {*} and {**})`);
    return { safe_regex: { regex: out } };
  }
  const m = stringMatch(value);
  return m === 'present' ? { safe_regex: { regex: '.+' } } : m;
}

/** One field's values as an ORed permission. */
function headerPermission(name: string, values: readonly string[], ignoreCase = false): Permission[] {
  return values.map((v) => {
    const m = stringMatch(v, { ignoreCase });
    return { header: m === 'present' ? { name, present_match: true } : { name, string_match: m } };
  });
}

function portPermissions(values: readonly string[]): Permission[] {
  return values.map((v) => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535) throw new RuleError(`port "${v}" is not a number between 1 and 65535`);
    return { destination_port: Number(v) };
  });
}

type FieldCompiler<T> = (values: readonly string[]) => T[];

/** ANDs the present fields of a source/operation; each field ORs its values; `not` fields negate the OR. */
function fieldsToAnd<T>(
  fields: ReadonlyArray<[readonly string[] | undefined, FieldCompiler<T>, boolean]>,
  or: (items: T[]) => T,
  not: (item: T) => T,
): T[] {
  const out: T[] = [];
  for (const [values, compile, negate] of fields) {
    if (!values || values.length === 0) continue;
    const item = or(compile(values));
    out.push(negate ? not(item) : item);
  }
  return out;
}

const UNSUPPORTED_SOURCE_FIELDS = ['requestPrincipals', 'notRequestPrincipals', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks', 'trustDomains', 'notTrustDomains'] as const;

function compileSource(src: PolicySource, ctx: RuleContext): Principal {
  for (const f of UNSUPPORTED_SOURCE_FIELDS) if (src[f]?.length) ctx.unsupported(`from.source.${f}`);
  if ((src.serviceAccounts?.length || src.notServiceAccounts?.length) && (src.principals?.length || src.namespaces?.length || src.notPrincipals?.length || src.notNamespaces?.length)) {
    throw new RuleError('serviceAccounts cannot be combined with principals or namespaces');
  }
  const auth = (m: StringMatcher): Principal => ({ authenticated: { principal_name: m } });
  const ids = fieldsToAnd<Principal>([
    [src.principals, (v) => v.map((p) => auth(principalMatcher(p, ctx.trustDomain))), false],
    [src.notPrincipals, (v) => v.map((p) => auth(principalMatcher(p, ctx.trustDomain))), true],
    [src.namespaces, (v) => v.map((n) => auth(namespaceMatcher(n))), false],
    [src.notNamespaces, (v) => v.map((n) => auth(namespaceMatcher(n))), true],
    [src.serviceAccounts, (v) => v.map((s) => auth(serviceAccountMatcher(s, ctx.namespace, ctx.trustDomain))), false],
    [src.notServiceAccounts, (v) => v.map((s) => auth(serviceAccountMatcher(s, ctx.namespace, ctx.trustDomain))), true],
  ], orPrincipals, (p) => ({ not_id: p }));
  if (ids.length === 0) return any;
  return ids.length === 1 ? ids[0]! : { and_ids: { ids } };
}

function compileOperation(op: PolicyOperation): Permission {
  const rules = fieldsToAnd<Permission>([
    [op.hosts, (v) => headerPermission(':authority', v, true), false],
    [op.notHosts, (v) => headerPermission(':authority', v, true), true],
    [op.methods, (v) => headerPermission(':method', v), false],
    [op.notMethods, (v) => headerPermission(':method', v), true],
    [op.paths, (v) => v.map((p) => ({ url_path: { path: pathMatcher(p) } })), false],
    [op.notPaths, (v) => v.map((p) => ({ url_path: { path: pathMatcher(p) } })), true],
    [op.ports, portPermissions, false],
    [op.notPorts, portPermissions, true],
  ], orPermissions, (p) => ({ not_rule: p }));
  if (rules.length === 0) return any;
  return rules.length === 1 ? rules[0]! : { and_rules: { rules } };
}

interface RuleContext {
  readonly namespace: string;
  readonly trustDomain: string;
  /** Records an unsupported field: an ALLOW rule is then dropped, a DENY rule ignores it. */
  unsupported(field: string): void;
}

/** One Istio rule -> one Envoy policy, or undefined when an ALLOW rule had to be dropped. */
function compileRule(rule: PolicyRule, index: number, action: 'ALLOW' | 'DENY', base: Omit<RuleContext, 'unsupported'>, problems: string[]): RbacPolicy | undefined {
  const unsupported = new Set<string>();
  const ctx: RuleContext = { ...base, unsupported: (f) => unsupported.add(f) };
  try {
    if (rule.when?.length) unsupported.add('when');
    const froms = (rule.from ?? []).map((f) => compileSource(f.source ?? {}, ctx));
    const tos = (rule.to ?? []).map((t) => compileOperation(t.operation ?? {}));
    if (unsupported.size > 0) {
      const fields = [...unsupported].join(', ');
      if (action === 'ALLOW') {
        problems.push(`rule ${index}: ${fields} not supported; the rule is dropped (it allows nothing)`);
        return undefined;
      }
      problems.push(`rule ${index}: ${fields} not supported; ignored, so the rule denies more`);
    }
    return {
      permissions: tos.length === 0 ? [any] : [orPermissions(tos)],
      principals: froms.length === 0 ? [any] : [orPrincipals(froms)],
    };
  } catch (err) {
    if (!(err instanceof RuleError)) throw err;
    if (action === 'ALLOW') {
      problems.push(`rule ${index}: ${err.message}; the rule is dropped (it allows nothing)`);
      return undefined;
    }
    problems.push(`rule ${index}: ${err.message}; the rule denies every request instead`);
    return { permissions: [any], principals: [any] };
  }
}

function compilePolicy(p: AuthorizationPolicyObject, namespace: string, trustDomain: string): { compiled: Compiled; report: PolicyReport } {
  const name = p.metadata?.name ?? '';
  const spec = p.spec ?? {};
  const problems: string[] = [];
  const requested = spec.action ?? 'ALLOW';
  let action: Compiled['action'];
  if (requested === 'ALLOW' || requested === 'DENY') action = requested;
  else if (requested === 'CUSTOM') {
    action = 'DENY';
    problems.push(`action CUSTOM (provider ${spec.provider?.name ?? '?'}) needs an external authorizer, which citadel does not call; enforced as DENY of every request its rules match`);
  } else if (requested === 'AUDIT') {
    problems.push('action AUDIT is not supported; the policy is not applied (AUDIT never allows or denies in Istio either)');
  } else {
    action = 'DENY';
    problems.push(`unknown action "${requested}"; enforced as DENY of every request its rules match`);
  }
  if (p.metadata?.annotations?.['istio.io/dry-run'] === 'true') {
    problems.push('istio.io/dry-run is not supported; the policy is enforced');
  }
  if (spec.targetRef !== undefined || (spec.targetRefs?.length ?? 0) > 0) {
    problems.push('targetRef(s) selects gateways and waypoints, which citadel does not configure; the policy is not applied');
    action = undefined;
  }
  const policies: Record<string, RbacPolicy> = {};
  if (action) {
    const base = { namespace, trustDomain };
    (spec.rules ?? []).forEach((rule, i) => {
      const compiled = compileRule(rule ?? {}, i, action, base, problems);
      if (compiled) policies[`ns[${namespace}]-policy[${name}]-rule[${i}]`] = compiled;
    });
  }
  const labels = spec.selector?.matchLabels;
  return {
    compiled: { ...(labels && Object.keys(labels).length > 0 ? { matchLabels: labels } : {}), action, policies },
    report: { name, ...(p.metadata?.generation !== undefined ? { generation: p.metadata.generation } : {}), problems },
  };
}

const selectorKey = (labels: Readonly<Record<string, string>> | undefined) =>
  JSON.stringify(Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/**
 * Compiles every policy of `namespace` (others are ignored). Output is deterministic: selectors and policy ids
 * sorted, so equal inputs give byte-equal documents and the ConfigMap is rewritten only on real changes.
 */
export function compileNamespace(input: { namespace: string; trustDomain: string; policies: readonly AuthorizationPolicyObject[] }): CompileResult {
  const groups = new Map<string, { matchLabels?: Readonly<Record<string, string>>; allow?: Record<string, RbacPolicy>; deny?: Record<string, RbacPolicy> }>();
  const reports: PolicyReport[] = [];
  const mine = input.policies.filter((p) => p.metadata?.namespace === input.namespace && p.metadata.name);
  mine.sort((a, b) => (a.metadata!.name! < b.metadata!.name! ? -1 : 1));
  for (const p of mine) {
    const { compiled, report } = compilePolicy(p, input.namespace, input.trustDomain);
    reports.push(report);
    if (!compiled.action) continue;
    // DENY without rules denies nothing: it adds no selector entry (an ALLOW without rules does: it denies all).
    if (compiled.action === 'DENY' && Object.keys(compiled.policies).length === 0) continue;
    const key = selectorKey(compiled.matchLabels);
    let group = groups.get(key);
    if (!group) groups.set(key, (group = compiled.matchLabels ? { matchLabels: compiled.matchLabels } : {}));
    const slot = compiled.action === 'ALLOW' ? 'allow' : 'deny';
    group[slot] = { ...(group[slot] ?? {}), ...compiled.policies };
  }
  const sortPolicies = (p: Record<string, RbacPolicy> | undefined): RbacPolicies | undefined =>
    p && Object.fromEntries(Object.entries(p).sort(([a], [b]) => (a < b ? -1 : 1)));
  const selectors: CompiledSelector[] = [...groups.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, g]) => ({
      ...(g.matchLabels ? { matchLabels: Object.fromEntries(Object.entries(g.matchLabels).sort(([a], [b]) => (a < b ? -1 : 1))) } : {}),
      ...(g.allow ? { allow: sortPolicies(g.allow) } : {}),
      ...(g.deny ? { deny: sortPolicies(g.deny) } : {}),
    }));
  return { document: { version: AUTHZ_FORMAT_VERSION, namespace: input.namespace, selectors }, reports };
}
