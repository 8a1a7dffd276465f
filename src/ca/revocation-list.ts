/**
 * The operator's revocation list: what to revoke, one entry per line, kept in the Secret `citadel-revocations`
 * (key `revoked`) in the CA's namespace. Pure parsing; src/ca/revocation.ts turns it into CRLs and refusals.
 *
 *     # target                                            reason          revoked at (optional)
 *     3946ed047d5498ceb93282dac6f128a8                     keyCompromise   2026-12-02T03:00:00Z
 *     spiffe://cluster.local/ns/photo/sa/photo-frontend    keyCompromise
 *
 * A target is a certificate serial number (hex, colons allowed) or a workload SPIFFE ID. The reason is one of
 * RFC 5280's CRLReason names (default unspecified); the time, when given, becomes the CRL entry's revocationDate.
 */
import { CitadelError } from '../errors.js';
import { CRL_REASONS, normaliseSerial, parseWorkloadSpiffeId, type CrlReason } from '../pki/index.js';

/** Where the list lives (Istio has no equivalent). */
export const REVOCATIONS_SECRET_NAME = 'citadel-revocations';
export const REVOCATIONS_KEY = 'revoked';

export type RevocationTarget = { readonly kind: 'serial'; readonly serialHex: string } | { readonly kind: 'spiffe-id'; readonly id: string };

export interface Revocation {
  readonly target: RevocationTarget;
  readonly reason?: CrlReason;
  /** Milliseconds since the epoch, when the line gives it. */
  readonly revokedAt?: number;
  /** 1-based line number in the list, for messages. */
  readonly line: number;
}

const isReason = (s: string): s is CrlReason => Object.hasOwn(CRL_REASONS, s);

/** Parses the list. @throws CitadelError CONFIG_INVALID naming the line and what is wrong with it. */
export function parseRevocationList(text: string): Revocation[] {
  const out: Revocation[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = i + 1;
    const fields = raw.replace(/#.*/, '').trim().split(/\s+/).filter(Boolean);
    if (fields.length === 0) return;
    const bad = (why: string) => new CitadelError('CONFIG_INVALID', `${REVOCATIONS_KEY} line ${line}: ${why}`);
    if (fields.length > 3) throw bad('expected "<serial or SPIFFE ID> [reason] [RFC 3339 time]"');
    const [what, ...rest] = fields as [string, ...string[]];
    let target: RevocationTarget;
    if (what.startsWith('spiffe://')) {
      if (!parseWorkloadSpiffeId(what)) throw bad(`${what} is not a workload SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>)`);
      target = { kind: 'spiffe-id', id: what };
    } else {
      try {
        target = { kind: 'serial', serialHex: normaliseSerial(what) };
      } catch (err) {
        throw bad((err as Error).message);
      }
    }
    let reason: CrlReason | undefined;
    let revokedAt: number | undefined;
    for (const f of rest) {
      if (isReason(f) && reason === undefined) reason = f;
      else if (/^\d{4}-\d\d-\d\dT/.test(f) && revokedAt === undefined && Number.isFinite(Date.parse(f))) revokedAt = Date.parse(f);
      else throw bad(`"${f}" is neither a reason (${Object.keys(CRL_REASONS).join(', ')}) nor an RFC 3339 time`);
    }
    out.push({ target, line, ...(reason ? { reason } : {}), ...(revokedAt !== undefined ? { revokedAt } : {}) });
  });
  return out;
}
