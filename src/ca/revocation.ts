/**
 * Revocation: turns the operator's inputs into the CRL set published as `istio-ca-crl` and into refusals at
 * issuance.
 *
 * Inputs, each validated on its own so that a bad one never blocks key-material rotation or CA start (unlike
 * istiod, istio/istio#61075): it is refused, logged and counted, and the previous value stays in use.
 * - `ca-crl.pem` from cacerts (plugged-in CAs): CRLs signed by the CAs of the chain. Every CA other than the
 *   signing one needs one (we cannot sign for them); the signing CA's own list is optional (its entries are kept).
 *   Removing the file removes these CRLs (istio/istio#61073).
 * - The revocation list (src/ca/revocation-list.ts): serials and SPIFFE IDs, in any key-material mode.
 *
 * Output: one CRL signed here by the signing CA (the operator's entries for it, every listed serial, and the
 * serials this replica issued to revoked SPIFFE IDs), the same for earlier signing CAs the keyring still trusts after
 * a plugged-in switch, followed by the operator's CRLs for the other CAs (the chain's, and those of CAs the bundle
 * still trusts from earlier material), so every CA of the chain has exactly one CRL (Envoy's CRL_CHECK_ALL refuses every handshake through a CA without one). When
 * nothing is revoked and there is no ca-crl.pem the output is empty: Envoy then checks no CRL at all, so a CA
 * outage can never turn into expired CRLs failing every handshake. Our CRL carries a CRL Number (seconds since the
 * epoch at signing, bumped if needed, so it grows across replicas and restarts) and the Authority Key Identifier,
 * and is re-signed at half its validity, driven by the Clock.
 */
import { Gauge, Counter, type Registry } from '../prom.js';
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { BACKDATE_MS, checkCrlSet, crlSignProblem, isCrlSignedBy, issueCrl, parseCrls, type CrlEntry, type ParsedCertificate, type ParsedCrl, type Signer } from '../pki/index.js';
import type { Keyring } from './keyring.js';
import type { CaMaterial } from './material.js';
import { CA_CRL_FILE } from './plugged.js';
import { parseRevocationList, REVOCATIONS_SECRET_NAME, type Revocation } from './revocation-list.js';

const CRL_KEY = CA_CRL_FILE;

/**
 * Unexpired serials remembered per SPIFFE ID, newest kept. A published CRL holds about a thousand entries (64 KiB
 * input limit, docs/revocation.md), so revoking an identity with more could not be published anyway; the bound keeps
 * a CA under sustained issuance from growing without limit (~100 bytes per serial).
 */
export const MAX_TRACKED_PER_IDENTITY = 1024;

export interface RevocationMetrics {
  /** Revoked certificates listed in the published CRLs. */
  readonly entries: Gauge;
  /** Unix seconds of the published CRLs' oldest thisUpdate and earliest nextUpdate (0 when none). */
  readonly thisUpdate: Gauge;
  readonly nextUpdate: Gauge;
  /** Inputs refused (the previous one stays), by source: ca-crl.pem, revocation-list, signing. */
  readonly refused: Counter<'source'>;
  /** Certificate requests refused because the identity or the client certificate is revoked. */
  readonly issuanceRefusals: Counter;
  /** Issued serials remembered (by SPIFFE ID, until they expire) so that revoking an identity can list them. */
  readonly trackedSerials: Gauge;
  /** Serials forgotten before they expired because their identity had more than MAX_TRACKED_PER_IDENTITY. */
  readonly untrackedSerials: Counter;
}

export function createRevocationMetrics(registry: Registry): RevocationMetrics {
  const registers = [registry];
  return {
    entries: new Gauge({ name: 'citadel_server_crl_entries', help: 'Revoked certificates listed in the published CRLs.', registers }),
    thisUpdate: new Gauge({ name: 'citadel_server_crl_this_update_timestamp', help: 'Unix time in seconds of the oldest thisUpdate of the published CRLs (0: none published).', registers }),
    nextUpdate: new Gauge({ name: 'citadel_server_crl_next_update_timestamp', help: 'Unix time in seconds of the earliest nextUpdate of the published CRLs (0: none published).', registers }),
    refused: new Counter({ name: 'citadel_server_crl_refused_count', help: 'CRL inputs refused (the previous one stays in use), by source.', labelNames: ['source'], registers }),
    issuanceRefusals: new Counter({ name: 'citadel_server_revoked_refusal_count', help: 'Certificate requests refused because the identity or client certificate is revoked.', registers }),
    trackedSerials: new Gauge({ name: 'citadel_server_revocation_tracked_serials', help: 'Unexpired certificates this replica issued, remembered so that revoking their SPIFFE ID lists them.', registers }),
    untrackedSerials: new Counter({ name: 'citadel_server_revocation_untracked_serials_count', help: 'Issued certificates forgotten before they expired because their SPIFFE ID had more unexpired certificates than a CRL can list.', registers }),
  };
}

export interface RevocationDeps {
  readonly keyring: Keyring;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: RevocationMetrics;
  /** nextUpdate - thisUpdate of the CRL we sign; re-signed at half of it. Default 24 h. */
  readonly validityMs?: number;
}

/** The operator's ca-crl.pem, validated against the chain it was checked with. */
interface OperatorCrls {
  readonly text: string;
  readonly source: string;
  readonly forSigner: readonly ParsedCrl[];
  readonly others: readonly ParsedCrl[];
}

/** The CAs a leaf's path goes through, signing CA first, root last. */
export function chainCas(m: CaMaterial): ParsedCertificate[] {
  return m.intermediates.length > 0 ? [...m.intermediates, m.anchor] : [m.anchor];
}

export class Revocations {
  private operator: OperatorCrls | undefined;
  /** The material the published set was last computed for. */
  private material: CaMaterial | undefined;
  /**
   * Signing CAs of earlier material whose certificates are still trusted (retained by the keyring): their CRLs keep
   * being signed so that chains through them still pass Envoy's CRL check after a plugged-in switch.
   */
  private previousSigners: Signer[] = [];
  private list: readonly Revocation[] = [];
  /** When this process first saw each list entry (its revocationDate when the line gives none). */
  private firstSeen = new Map<string, number>();
  /** Serials this replica issued, by SPIFFE ID, in issue order, until they expire (at most MAX_TRACKED_PER_IDENTITY). */
  private issued = new Map<string, Map<string, number>>();
  private tracked = 0;
  private published: string | undefined;
  private lastNumber = 0;
  private timer: Timer | undefined;
  private listeners = new Set<() => void>();
  private readonly validityMs: number;
  private readonly unsubscribe: () => void;

  constructor(private readonly deps: RevocationDeps) {
    this.validityMs = deps.validityMs ?? 24 * 3600_000;
    this.unsubscribe = deps.keyring.onChange(() => this.onMaterialChange());
  }

  /** The published CRL set (PEM, possibly empty: no CRL), or undefined before key material is loaded. */
  crlPem(): string | undefined {
    if (this.published === undefined && this.deps.keyring.isReady()) this.refresh('start');
    return this.published;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Sets `ca-crl.pem` (undefined or empty: none). A file that does not parse, has a CRL no CA of the chain signed,
   * lacks a CRL for a CA other than the signing one, or holds an expired list is refused: logged, counted, and the
   * previous one stays. Returns whether it was accepted.
   */
  setOperatorCrl(text: string | undefined, source: string): boolean {
    const t = text?.trim() ? text : undefined;
    if (t === this.operator?.text || (t === undefined && this.operator === undefined)) return true;
    if (t === undefined) {
      this.operator = undefined;
      this.deps.log.info({ source }, `${CRL_KEY} removed; its CRLs are no longer published`);
      this.refresh(`${CRL_KEY} removed`);
      return true;
    }
    try {
      this.operator = this.validateOperator(t, source);
    } catch (err) {
      this.deps.metrics?.refused.inc({ source: CRL_KEY });
      this.deps.log.error({ source, reason: (err as Error).message }, `${CRL_KEY} refused; the previous CRLs stay published (key material is not affected)`);
      return false;
    }
    this.deps.log.info({ source, crls: this.operator.forSigner.length + this.operator.others.length }, `${CRL_KEY} accepted`);
    this.refresh(`${CRL_KEY} changed`);
    return true;
  }

  /** Sets the revocation list text (undefined: none). A list that does not parse is refused; the previous one stays. */
  setRevocationList(text: string | undefined, source = REVOCATIONS_SECRET_NAME): boolean {
    let list: Revocation[];
    try {
      list = text === undefined ? [] : parseRevocationList(text);
    } catch (err) {
      this.deps.metrics?.refused.inc({ source: 'revocation-list' });
      this.deps.log.error({ source, reason: (err as Error).message }, 'revocation list refused; the previous one stays in force');
      return false;
    }
    const now = this.deps.clock.now();
    const keys = new Set(list.map(keyOf));
    for (const k of keys) if (!this.firstSeen.has(k)) this.firstSeen.set(k, now);
    for (const k of [...this.firstSeen.keys()]) if (!keys.has(k)) this.firstSeen.delete(k);
    this.list = list;
    this.deps.log.info({ source, entries: list.length }, 'revocation list loaded');
    this.refresh('revocation list changed');
    return true;
  }

  /** Why `spiffeId` may not get certificates, or undefined. */
  identityRevoked(spiffeId: string): string | undefined {
    const r = this.list.find((e) => e.target.kind === 'spiffe-id' && e.target.id === spiffeId);
    return r && `${spiffeId} is revoked (${REVOCATIONS_SECRET_NAME} line ${r.line}${r.reason ? `, ${r.reason}` : ''}); remove it from the list to issue again`;
  }

  /** Why a certificate with this serial may not be used to authenticate, or undefined. */
  serialRevoked(serialHex: string): string | undefined {
    const r = this.list.find((e) => e.target.kind === 'serial' && e.target.serialHex === serialHex);
    return r && `certificate ${serialHex} is revoked (${REVOCATIONS_SECRET_NAME} line ${r.line})`;
  }

  /**
   * The issuance guard for the keyring: refuses a revoked identity, and remembers what was issued so that revoking a
   * SPIFFE ID later also lists the certificates this replica issued to it.
   */
  guard = {
    check: (spiffeId: string): void => {
      const why = this.identityRevoked(spiffeId);
      if (why) {
        this.deps.metrics?.issuanceRefusals.inc();
        throw new CitadelError('PERMISSION_DENIED', why);
      }
    },
    recordIssued: (spiffeId: string, serialHex: string, notAfter: number): void => {
      let serials = this.issued.get(spiffeId);
      if (!serials) this.issued.set(spiffeId, (serials = new Map()));
      serials.set(serialHex, notAfter);
      this.tracked++;
      // Oldest first: drop what has expired, then what is over the bound. The timer's prune catches the rest.
      const now = this.deps.clock.now();
      for (const [serial, until] of serials) {
        if (until > now && serials.size <= MAX_TRACKED_PER_IDENTITY) break;
        serials.delete(serial);
        this.tracked--;
        if (until > now) this.deps.metrics?.untrackedSerials.inc();
      }
      this.deps.metrics?.trackedSerials.set(this.tracked);
    },
  };

  close(): void {
    this.timer?.cancel();
    this.unsubscribe();
    this.listeners.clear();
  }

  private validateOperator(text: string, source: string): OperatorCrls {
    const material = this.deps.keyring.current();
    if (!material) throw new CitadelError('CA_NOT_READY', 'no key material to check the CRLs against');
    const crls = parseCrls(text);
    if (crls.length === 0) throw new CitadelError('PEM_INVALID', 'no "X509 CRL" block');
    const signer = material.signer.cert;
    const forSigner = crls.filter((c) => isCrlSignedBy(c, signer));
    const others = crls.filter((c) => !forSigner.includes(c));
    const now = this.deps.clock.now();
    if (forSigner.length) checkCrlSet(forSigner, [signer], now);
    const chain = chainCas(material);
    const otherCas = chain.filter((c) => !c.der.equals(signer.der));
    const forChain = others.filter((c) => otherCas.some((ca) => isCrlSignedBy(c, ca)));
    checkCrlSet(forChain, otherCas, now);
    // CRLs of CAs the bundle still trusts from earlier material (a root or intermediate being rotated out).
    const { roots, intermediates } = this.deps.keyring.verificationMaterial();
    const earlier = [...roots, ...intermediates].filter((c) => !chain.some((x) => x.der.equals(c.der)));
    for (const crl of others.filter((c) => !forChain.includes(c))) {
      const ca = earlier.find((c) => isCrlSignedBy(crl, c));
      if (!ca) throw new CitadelError('CERT_INVALID', `invalid CRL: the CRL issued by "${crl.issuer}" is not signed by any CA of the chain or the trust bundle`);
      checkCrlSet([crl], [ca], now);
    }
    return { text, source, forSigner, others };
  }

  private onMaterialChange(): void {
    const prev = this.material?.signer;
    const next = this.deps.keyring.current()?.signer;
    // A self-signed rotation keeps subject and key: the new root's CRL covers the old root's certificates as well.
    if (prev && next && !prev.cert.der.equals(next.cert.der) && !(prev.cert.subjectDer.equals(next.cert.subjectDer) && prev.cert.spki.equals(next.cert.spki))) {
      this.previousSigners.push(prev);
    }
    if (this.operator) {
      try {
        this.operator = this.validateOperator(this.operator.text, this.operator.source);
      } catch (err) {
        this.deps.metrics?.refused.inc({ source: CRL_KEY });
        this.deps.log.error({ reason: (err as Error).message }, `${CRL_KEY} does not fit the new key material; its CRLs are no longer published until a fitting one arrives`);
        this.operator = undefined;
      }
    }
    this.refresh('key material changed');
  }

  /** Entries of the signing CA's CRL. */
  private signerEntries(material: CaMaterial, now: number): CrlEntry[] {
    const out: CrlEntry[] = [];
    for (const crl of this.operator?.forSigner ?? []) out.push(...crl.entries);
    const caSerials = new Set(chainCas(material).map((c) => c.serialHex));
    for (const r of this.list) {
      const revokedAt = r.revokedAt ?? this.firstSeen.get(keyOf(r)) ?? now;
      const extra = r.reason ? { reason: r.reason } : {};
      if (r.target.kind === 'serial') {
        if (caSerials.has(r.target.serialHex)) {
          this.deps.log.warn({ serial: r.target.serialHex, line: r.line }, 'this serial is a CA of the chain: revoke it in its issuer\'s CRL (citadel pki revoke with that key); the signing CA cannot list it');
          continue;
        }
        out.push({ serialHex: r.target.serialHex, revokedAt, ...extra });
      } else {
        for (const [serialHex, notAfter] of this.issued.get(r.target.id) ?? []) {
          if (notAfter > now) out.push({ serialHex, revokedAt, ...extra });
        }
      }
    }
    return out;
  }

  /** Recomputes and re-signs the published set; notifies listeners when it changed. */
  private refresh(why: string): void {
    const material = this.deps.keyring.current();
    if (!material) return;
    this.material = material;
    this.timer?.cancel();
    this.timer = undefined;
    const now = this.deps.clock.now();
    this.pruneIssued(now);
    const entries = this.signerEntries(material, now);
    let crls: ParsedCrl[] = [];
    let pem = '';
    if (entries.length > 0 || this.operator) {
      try {
        const ours = this.signOwn(material, entries, now);
        crls = [ours, ...this.signPrevious(entries, now), ...(this.operator?.others ?? [])];
        pem = crls.map((c) => c.pem).join('');
        this.timer = this.deps.clock.setTimer(() => this.refresh('re-signing before nextUpdate'), this.validityMs / 2);
      } catch (err) {
        this.deps.metrics?.refused.inc({ source: 'signing' });
        this.deps.log.error({ reason: (err as Error).message }, 'cannot publish CRLs for this chain; revoked certificates are refused new certificates but not yet refused by Envoy');
        if (this.operator && this.operator.forSigner.length) {
          // The operator's own complete set (Istio's behaviour) is better than nothing.
          crls = [...this.operator.forSigner, ...this.operator.others];
          pem = crls.map((c) => c.pem).join('');
        }
      }
    }
    const m = this.deps.metrics;
    m?.entries.set(crls.reduce((n, c) => n + c.entries.length, 0));
    m?.thisUpdate.set(crls.length ? Math.floor(Math.min(...crls.map((c) => c.thisUpdate)) / 1000) : 0);
    m?.nextUpdate.set(crls.length ? Math.floor(Math.min(...crls.map((c) => c.nextUpdate ?? 0)) / 1000) : 0);
    if (pem === this.published) return;
    this.published = pem;
    this.deps.log.info({ why, crls: crls.length, entries: crls.reduce((n, c) => n + c.entries.length, 0) }, pem ? 'CRLs updated' : 'no CRL to publish (nothing revoked)');
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch (err) {
        this.deps.log.error({ err }, 'CRL change listener failed');
      }
    }
  }

  private signOwn(material: CaMaterial, entries: CrlEntry[], now: number): ParsedCrl {
    const signer = material.signer;
    const problem = crlSignProblem(signer.cert);
    if (problem) throw new CitadelError('NOT_A_CA', `the signing CA "${signer.cert.subject}" cannot sign CRLs: ${problem}; reissue it with keyUsage cRLSign (citadel pki create-ca does)`);
    const otherCas = chainCas(material).filter((c) => !c.der.equals(signer.cert.der));
    if (otherCas.length > 0 && !this.operator) {
      throw new CitadelError('CONFIG_INVALID', `no ${CRL_KEY} with CRLs from ${otherCas.map((c) => `"${c.subject}"`).join(', ')}: Envoy would refuse every certificate without them (write one with citadel pki revoke)`);
    }
    const number = Math.max(this.lastNumber + 1, Math.floor(now / 1000));
    this.lastNumber = number;
    const issued = issueCrl({ signer, number, thisUpdate: now - BACKDATE_MS, nextUpdate: now + this.validityMs, entries });
    return parseCrls(issued.pem)[0]!;
  }

  /** CRLs of earlier signing CAs the keyring still trusts (same entries: a serial of another CA matches nothing). */
  private signPrevious(entries: CrlEntry[], now: number): ParsedCrl[] {
    const { intermediates, roots } = this.deps.keyring.verificationMaterial();
    const trusted = [...intermediates, ...roots];
    this.previousSigners = this.previousSigners.filter((s) => s.cert.notAfter > now && trusted.some((c) => c.der.equals(s.cert.der)) && !crlSignProblem(s.cert));
    return this.previousSigners.map((signer) => parseCrls(issueCrl({ signer, number: this.lastNumber, thisUpdate: now - BACKDATE_MS, nextUpdate: now + this.validityMs, entries }).pem)[0]!);
  }

  private pruneIssued(now: number): void {
    for (const [id, serials] of this.issued) {
      for (const [s, notAfter] of serials) {
        if (notAfter > now) continue;
        serials.delete(s);
        this.tracked--;
      }
      if (serials.size === 0) this.issued.delete(id);
    }
    this.deps.metrics?.trackedSerials.set(this.tracked);
  }
}

const keyOf = (r: Revocation) => (r.target.kind === 'serial' ? `serial:${r.target.serialHex}` : `id:${r.target.id}`);
