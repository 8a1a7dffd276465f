/**
 * The agent's half of authorization, pure: from the namespace's compiled document and the pod's labels, the
 * Envoy RBAC filter config for one ECDS resource name. Envoy's bootstrap names two HTTP filters,
 * `citadel-authz-deny` and `citadel-authz-allow` (DENY runs first), optionally suffixed with the workload port
 * the listener fronts (`citadel-authz-allow-8080`): policies' `ports` name container ports, while Envoy only
 * sees its own listener port, so the agent decides port conditions per filter name.
 */
import {
  AUTHZ_FORMAT_VERSION,
  type CompiledAuthz,
  type CompiledSelector,
  type Permission,
  type RbacPolicies,
  type RbacPolicy,
} from './types.js';

export const HTTP_RBAC_TYPE_URL = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
export const AUTHZ_RESOURCE_PREFIX = 'citadel-authz-';

export interface AuthzResourceName {
  readonly action: 'allow' | 'deny';
  /** The workload port the listener fronts, when the name says so. */
  readonly port?: number;
}

/** Parses `citadel-authz-allow`, `citadel-authz-deny-8080`...; undefined for any other name. */
export function parseAuthzResourceName(name: string): AuthzResourceName | undefined {
  const m = /^citadel-authz-(allow|deny)(?:-(\d{1,5}))?$/.exec(name);
  if (!m) return undefined;
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  return { action: m[1] as 'allow' | 'deny', ...(port !== undefined ? { port } : {}) };
}

/**
 * Parses a downward-API labels file (`key="value"` per line, values Go-quoted).
 * @throws Error naming the line when it is malformed.
 */
export function parsePodLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`labels line ${i + 1} is not key="value"`);
    const value = line.slice(eq + 1);
    try {
      labels[line.slice(0, eq)] = value.startsWith('"') ? JSON.parse(value) as string : value;
    } catch {
      throw new Error(`labels line ${i + 1}: value is not a quoted string`);
    }
  }
  return labels;
}

/**
 * Parses and checks the ConfigMap's document (shape only; Envoy validates the rest and NACKs what it rejects).
 * @throws Error saying what is wrong.
 */
export function parseCompiledAuthz(text: string): CompiledAuthz {
  const doc = JSON.parse(text) as Partial<CompiledAuthz>;
  if (!doc || typeof doc !== 'object') throw new Error('not a JSON object');
  if (doc.version !== AUTHZ_FORMAT_VERSION) throw new Error(`format version ${String(doc.version)}, this agent reads ${AUTHZ_FORMAT_VERSION}`);
  if (!Array.isArray(doc.selectors)) throw new Error('selectors is not a list');
  return doc as CompiledAuthz;
}

const matches = (s: CompiledSelector, labels: Readonly<Record<string, string>>) =>
  Object.entries(s.matchLabels ?? {}).every(([k, v]) => labels[k] === v);

/** A permission with every `destination_port` decided for `port` (true -> any, false -> never). */
function resolvePorts(p: Permission, port: number): Permission {
  if ('destination_port' in p) return p.destination_port === port ? { any: true } : { not_rule: { any: true } };
  if ('and_rules' in p) return { and_rules: { rules: p.and_rules.rules.map((r) => resolvePorts(r, port)) } };
  if ('or_rules' in p) return { or_rules: { rules: p.or_rules.rules.map((r) => resolvePorts(r, port)) } };
  if ('not_rule' in p) return { not_rule: resolvePorts(p.not_rule, port) };
  return p;
}

/** The RBAC filter config (proto-loader object, `@type` set) for `name`, or undefined when `name` is not ours. */
export function rbacFilterConfig(doc: CompiledAuthz, labels: Readonly<Record<string, string>>, name: string): Record<string, unknown> | undefined {
  const parsed = parseAuthzResourceName(name);
  if (!parsed) return undefined;
  const selected = doc.selectors.filter((s) => matches(s, labels));
  const slot = parsed.action;
  const applies = selected.some((s) => s[slot] !== undefined);
  const base = { '@type': HTTP_RBAC_TYPE_URL, rules_stat_prefix: `${slot}_` };
  // No policy of this action for the workload: a filter without rules enforces nothing (Istio: no ALLOW
  // policy means allow; no DENY policy means nothing is denied).
  if (!applies) return base;
  const merged: Record<string, RbacPolicy> = {};
  for (const s of selected) Object.assign(merged, s[slot] as RbacPolicies | undefined);
  const policies = Object.fromEntries(Object.entries(merged).sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, p]) => [
    id,
    parsed.port === undefined ? p : { ...p, permissions: p.permissions.map((perm) => resolvePorts(perm, parsed.port!)) },
  ]));
  // An ALLOW filter with an empty map denies everything, as Istio's `spec: {}` does; a DENY with an empty map
  // cannot happen (the compiler adds no DENY entry without rules), but would deny nothing.
  return { ...base, rules: { action: slot === 'allow' ? 'ALLOW' : 'DENY', policies } };
}

/** What Envoy's bootstrap should use as default_config for each filter: deny everything (fail closed). */
export function denyAllFilterConfig(action: 'allow' | 'deny'): Record<string, unknown> {
  return action === 'allow'
    ? { '@type': HTTP_RBAC_TYPE_URL, rules_stat_prefix: 'allow_', rules: { action: 'ALLOW', policies: {} } }
    : { '@type': HTTP_RBAC_TYPE_URL, rules_stat_prefix: 'deny_', rules: { action: 'DENY', policies: { 'deny-all': { permissions: [{ any: true }], principals: [{ any: true }] } } } };
}
