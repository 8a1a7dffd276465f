/**
 * SPIFFE IDs exactly as the SPIFFE-ID spec (section 2) defines them: `spiffe://<trust-domain><path>`, with a
 * lowercase trust domain of [a-z0-9._-] (so no port, userinfo or percent-encoding), path segments of
 * [a-zA-Z0-9._-] that are neither empty nor "." / "..", no trailing slash, no query or fragment,
 * at most 2048 bytes in all and 255 for the trust domain.
 */
import { CitadelError } from '../errors.js';

export const MAX_SPIFFE_ID_BYTES = 2048;
export const MAX_TRUST_DOMAIN_BYTES = 255;
const SCHEME = 'spiffe://';
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

export interface SpiffeId {
  trustDomain: string;
  /** "" for the trust domain itself, else "/seg/seg...". */
  path: string;
}

function invalid(reason: string, id: string): CitadelError {
  const shown = id.length > 100 ? `${id.slice(0, 100)}...` : id;
  return new CitadelError('SPIFFE_ID_INVALID', `invalid SPIFFE ID: ${reason}`, shown);
}

function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'trust domain is empty';
  if (td.length > MAX_TRUST_DOMAIN_BYTES) return `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`;
  if (TRUST_DOMAIN_CHARS.test(td)) return undefined;
  if (td.includes(':')) return 'trust domain must not have a port';
  if (td.includes('@')) return 'trust domain must not have userinfo';
  if (td.includes('%')) return 'trust domain must not be percent-encoded';
  if (/[A-Z]/.test(td)) return 'trust domain must be lowercase';
  return 'trust domain may only contain a-z, 0-9, ".", "-" and "_"';
}

function segmentProblem(seg: string): string | undefined {
  if (seg.length === 0) return 'path has an empty segment (or a trailing slash)';
  if (seg === '.' || seg === '..') return 'path has a "." or ".." segment';
  if (SEGMENT_CHARS.test(seg)) return undefined;
  if (seg.includes('%')) return 'path must not be percent-encoded';
  return 'path segments may only contain a-z, A-Z, 0-9, ".", "-" and "_"';
}

/** Splits and validates a SPIFFE ID. Throws SPIFFE_ID_INVALID naming the broken rule. */
export function parseSpiffeId(id: string): SpiffeId {
  if (typeof id !== 'string' || id.length === 0) throw invalid('empty', String(id));
  if (Buffer.byteLength(id, 'utf8') > MAX_SPIFFE_ID_BYTES) throw invalid(`longer than ${MAX_SPIFFE_ID_BYTES} bytes`, id);
  if (!id.startsWith(SCHEME)) throw invalid('scheme must be "spiffe://"', id);
  const rest = id.slice(SCHEME.length);
  if (rest.includes('?')) throw invalid('must not have a query', id);
  if (rest.includes('#')) throw invalid('must not have a fragment', id);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) throw invalid(tdProblem, id);
  if (path !== '') {
    for (const seg of path.slice(1).split('/')) {
      const problem = segmentProblem(seg);
      if (problem) throw invalid(problem, id);
    }
  }
  return { trustDomain, path };
}

/** True when `id` is a valid SPIFFE ID. */
export function isSpiffeId(id: string): boolean {
  try {
    parseSpiffeId(id);
    return true;
  } catch {
    return false;
  }
}

/** Returns `td` if it is a valid trust domain name; throws SPIFFE_ID_INVALID otherwise. */
export function validateTrustDomain(td: string): string {
  const problem = trustDomainProblem(td);
  if (problem) throw invalid(problem, td);
  return td;
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>`, validated. Throws SPIFFE_ID_INVALID. */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  validateTrustDomain(trustDomain);
  for (const [name, seg] of [['namespace', namespace], ['service account', serviceAccount]] as const) {
    const problem = segmentProblem(seg);
    if (problem) throw invalid(`${name} "${seg}": ${problem}`, seg);
  }
  const id = `${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  parseSpiffeId(id);
  return id;
}

/** The parts of an Istio-style workload ID, or undefined when `id` is not one (or not a valid SPIFFE ID). */
export function parseWorkloadSpiffeId(id: string): { trustDomain: string; namespace: string; serviceAccount: string } | undefined {
  let parsed: SpiffeId;
  try {
    parsed = parseSpiffeId(id);
  } catch {
    return undefined;
  }
  const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(parsed.path);
  return m ? { trustDomain: parsed.trustDomain, namespace: m[1]!, serviceAccount: m[2]! } : undefined;
}

/** `spiffe://<td>`: the ID of the trust domain itself (used as the URI SAN of CA certificates). */
export function trustDomainId(trustDomain: string): string {
  return SCHEME + validateTrustDomain(trustDomain);
}
