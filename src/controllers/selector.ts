/**
 * Kubernetes label selectors in their string form (`env=prod,tier in (web,api),!legacy`), parsed once from a
 * flag and matched against namespace labels. Same operators and meaning as the apiserver's: `=`/`==`, `!=`,
 * `in`, `notin`, `key` (exists) and `!key` (does not exist); `!=` and `notin` also match when the label is absent.
 */
import { CitadelError } from '../errors.js';

export type SelectorOperator = 'exists' | 'notexists' | 'in' | 'notin';

export interface SelectorRequirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  readonly values: readonly string[];
}

export interface LabelSelector {
  readonly requirements: readonly SelectorRequirement[];
  /** True when every requirement holds (the empty selector matches everything). */
  matches(labels: Readonly<Record<string, string>> | undefined): boolean;
  /** Canonical string form. */
  toString(): string;
}

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function checkKey(key: string): string {
  const slash = key.indexOf('/');
  const prefix = slash === -1 ? undefined : key.slice(0, slash);
  const name = slash === -1 ? key : key.slice(slash + 1);
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) {
    throw invalid(`label key "${key}" has an invalid prefix`);
  }
  if (!NAME.test(name)) throw invalid(`"${key}" is not a valid label key`);
  return key;
}

function checkValue(value: string): string {
  if (value !== '' && !NAME.test(value)) throw invalid(`"${value}" is not a valid label value`);
  return value;
}

function invalid(reason: string): CitadelError {
  return new CitadelError('CONFIG_INVALID', `label selector: ${reason}`);
}

/** Splits on commas that are not inside parentheses. */
function splitTerms(raw: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    if (depth < 0) throw invalid('unbalanced ")"');
    if (c === ',' && depth === 0) {
      terms.push(raw.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw invalid('unbalanced "("');
  terms.push(raw.slice(start));
  return terms.map((t) => t.trim());
}

function parseTerm(term: string): SelectorRequirement {
  if (term === '') throw invalid('empty requirement');
  let m = /^!\s*([^\s=!(),]+)$/.exec(term);
  if (m) return { key: checkKey(m[1]!), operator: 'notexists', values: [] };
  m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(term);
  if (m) {
    const values = m[3]!.split(',').map((v) => checkValue(v.trim()));
    return { key: checkKey(m[1]!), operator: m[2] as 'in' | 'notin', values: [...new Set(values)].sort() };
  }
  m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(term);
  if (m) {
    const operator = m[2] === '!=' ? 'notin' : 'in';
    return { key: checkKey(m[1]!), operator, values: [checkValue(m[3]!)] };
  }
  m = /^([^\s=!(),]+)$/.exec(term);
  if (m) return { key: checkKey(m[1]!), operator: 'exists', values: [] };
  throw invalid(`cannot parse "${term}" (use key=value, key!=value, key in (a,b), key notin (a,b), key or !key)`);
}

function holds(req: SelectorRequirement, labels: Readonly<Record<string, string>>): boolean {
  const present = Object.prototype.hasOwnProperty.call(labels, req.key);
  switch (req.operator) {
    case 'exists':
      return present;
    case 'notexists':
      return !present;
    case 'in':
      return present && req.values.includes(labels[req.key]!);
    case 'notin':
      return !present || !req.values.includes(labels[req.key]!);
  }
}

function format(req: SelectorRequirement): string {
  switch (req.operator) {
    case 'exists':
      return req.key;
    case 'notexists':
      return `!${req.key}`;
    case 'in':
      return req.values.length === 1 ? `${req.key}=${req.values[0]}` : `${req.key} in (${req.values.join(',')})`;
    case 'notin':
      return req.values.length === 1 ? `${req.key}!=${req.values[0]}` : `${req.key} notin (${req.values.join(',')})`;
  }
}

/**
 * Parses a selector string; the empty string (or only spaces) selects everything.
 * @throws CitadelError CONFIG_INVALID naming the part that does not parse.
 */
export function parseLabelSelector(raw: string): LabelSelector {
  const requirements = raw.trim() === '' ? [] : splitTerms(raw).map(parseTerm);
  return {
    requirements,
    matches: (labels) => requirements.every((r) => holds(r, labels ?? {})),
    toString: () => requirements.map(format).join(','),
  };
}

/** The selector that matches every label set. */
export const everything: LabelSelector = parseLabelSelector('');
