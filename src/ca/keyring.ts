/**
 * The keyring: the CA's current key material, the trust bundle, and signing. It implements CertificateAuthority
 * for the CSR service, the controllers and the serving certificate.
 *
 * Material arrives through `install()` (from the plugged-in or self-signed sources, already validated). A switch
 * is atomic: the next signature uses the new signer and the bundle already holds the new roots. Roots that the new
 * material no longer lists are kept in the bundle ("retained") until every leaf issued under them has expired:
 * we track the latest notAfter we issued under each root, and because other replicas (or this process before a
 * restart) may have issued too, a retained root is kept at least `maxWorkloadTtlMs` from the switch (no leaf can
 * outlive that), and never beyond its own expiry. Intermediates dropped by a switch are retained the same way so
 * workloads holding certificates under them can still renew with their client certificate. A new root can also be
 * published ahead of the material that will sign under it (`publishAhead`), held in the bundle the same way.
 */
import { createHash } from 'node:crypto';
import type { Clock, Timer } from '../clock.js';
import { CitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { buildResponseChain, type ParsedCertificate } from '../pki/index.js';
import type { CertificateAuthority, CsrAuthority, CsrCertRequest, IssuedFromCsr, IssuedWorkloadCert, WorkloadCertRequest } from './authority.js';
import type { CaMaterial } from './material.js';
import type { CaMetrics } from './metrics.js';
import { issueLeaf, type SignedLeaf } from './signing-policy.js';
import { inlineCsrSigner, type CsrSigner } from './signing-pool.js';

interface Retained {
  readonly cert: ParsedCertificate;
  readonly keepUntil: number;
}

export interface KeyringDeps {
  readonly clock: Clock;
  readonly log: Logger;
  /** The longest workload certificate the CA issues; bounds how long a dropped root stays trusted. */
  readonly maxWorkloadTtlMs: number;
  readonly metrics?: CaMetrics;
  /** Where issueFromCsr checks and signs CSRs; default inline on the calling thread. */
  readonly csrSigner?: CsrSigner;
}

/** Consulted on every issuance (src/ca/revocation.ts): refuses revoked identities, learns what was issued. */
export interface IssuanceGuard {
  /** @throws CitadelError PERMISSION_DENIED naming the revocation. */
  check(spiffeId: string): void;
  recordIssued(spiffeId: string, serialHex: string, notAfter: number): void;
}

/** What the client-certificate authenticator verifies against. */
export interface VerificationMaterial {
  readonly roots: readonly ParsedCertificate[];
  readonly intermediates: readonly ParsedCertificate[];
}

const derKeys = new WeakMap<ParsedCertificate, string>();
/** Identity of a certificate by its DER; remembered per parsed certificate because every issuance asks for its anchor's. */
function derKey(c: ParsedCertificate): string {
  let k = derKeys.get(c);
  if (k === undefined) {
    k = createHash('sha256').update(c.der).digest('hex');
    derKeys.set(c, k);
  }
  return k;
}

/** Current material + retained roots/intermediates; not ready (issueWorkload throws CA_NOT_READY) until the first install(). */
export class Keyring implements CertificateAuthority, CsrAuthority {
  private material: CaMaterial | undefined;
  private retainedRoots = new Map<string, Retained>();
  private retainedIntermediates = new Map<string, Retained>();
  /** Latest notAfter issued under each root (by DER hash). */
  private latestIssued = new Map<string, number>();
  private listeners = new Set<() => void>();
  private bundleCache: { pem: string; roots: ParsedCertificate[] } | undefined;
  private pruneTimer: Timer | undefined;
  private guard: IssuanceGuard | undefined;
  private readonly log: Logger;

  constructor(private readonly deps: KeyringDeps) {
    this.log = deps.log;
  }

  /** True once material is installed. */
  isReady(): boolean {
    return this.material !== undefined;
  }

  /** The installed material, if any. */
  current(): CaMaterial | undefined {
    return this.material;
  }

  /**
   * Switches to `next` (already validated by its source). Returns false when it is the material in use.
   * Listeners run after the switch.
   */
  install(next: CaMaterial): boolean {
    const prev = this.material;
    if (prev?.fingerprint === next.fingerprint) return false;
    const now = this.deps.clock.now();
    if (prev) {
      const keepNew = new Set(next.roots.map(derKey));
      const floor = now + this.deps.maxWorkloadTtlMs;
      for (const root of this.bundleRoots()) {
        const k = derKey(root);
        if (keepNew.has(k) || this.retainedRoots.has(k)) continue;
        const keepUntil = Math.min(root.notAfter, Math.max(floor, this.latestIssued.get(k) ?? 0));
        if (keepUntil > now) this.retainedRoots.set(k, { cert: root, keepUntil });
      }
      const nextInter = new Set(next.intermediates.map(derKey));
      for (const inter of prev.intermediates) {
        const k = derKey(inter);
        if (!nextInter.has(k) && inter.notAfter > now) this.retainedIntermediates.set(k, { cert: inter, keepUntil: Math.min(inter.notAfter, floor) });
      }
    }
    // A root that comes back in the new material is no longer merely retained.
    for (const r of next.roots) this.retainedRoots.delete(derKey(r));
    for (const i of next.intermediates) this.retainedIntermediates.delete(derKey(i));
    this.material = next;
    this.bundleCache = undefined;
    this.schedulePrune();
    this.updateGauges();
    if (prev) this.deps.metrics?.keyMaterialReloads.inc();
    this.log.info(
      {
        mode: next.mode,
        source: next.source,
        signer: next.signer.cert.subject,
        signerSerial: next.signer.cert.serialHex,
        signerNotAfter: new Date(next.signer.cert.notAfter).toISOString(),
        roots: next.roots.length,
        retainedRoots: this.retainedRoots.size,
      },
      prev ? 'CA key material switched' : 'CA key material loaded',
    );
    this.emit();
    return true;
  }

  /**
   * Publishes `roots` in the trust bundle before any material signs under them (the publish-then-sign step of a
   * plugged-in root change): listeners run, so the root ConfigMaps and the serving certificate's client CAs get
   * them, while the current material keeps signing. They stay until installed material lists them, or else until
   * `keepUntil` (nothing was signed under a root whose material never came).
   */
  publishAhead(roots: readonly ParsedCertificate[], keepUntil: number): void {
    const inBundle = new Set(this.bundleRoots().map(derKey));
    const fresh = roots.filter((r) => !inBundle.has(derKey(r)));
    if (fresh.length === 0) return;
    for (const r of fresh) this.retainedRoots.set(derKey(r), { cert: r, keepUntil: Math.min(r.notAfter, keepUntil) });
    this.bundleCache = undefined;
    this.schedulePrune();
    this.log.info({ roots: fresh.map((r) => ({ subject: r.subject, serial: r.serialHex })) }, 'roots published in the trust bundle ahead of signing');
    this.emit();
  }

  /** True when `root` is in the trust bundle (current, retained or published ahead). */
  trusts(root: ParsedCertificate): boolean {
    const k = derKey(root);
    return this.bundleRoots().some((r) => derKey(r) === k);
  }

  trustBundlePem(): string {
    return this.bundle().pem;
  }

  /** The roots of the trust bundle, parsed. */
  bundleRoots(): readonly ParsedCertificate[] {
    return this.bundle().roots;
  }

  /** Roots and intermediates a client certificate may chain through (current and retained). */
  verificationMaterial(): VerificationMaterial {
    const intermediates = [...(this.material?.intermediates ?? []), ...[...this.retainedIntermediates.values()].map((r) => r.cert)];
    return { roots: this.bundleRoots(), intermediates };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Installs the guard every later issuance goes through. */
  setIssuanceGuard(guard: IssuanceGuard | undefined): void {
    this.guard = guard;
  }

  issueWorkload(req: WorkloadCertRequest): IssuedWorkloadCert {
    const material = this.ready();
    this.guard?.check(req.spiffeId);
    return this.recordIssued(material, req.spiffeId, issueLeaf(material.signer, req, this.deps.clock.now()));
  }

  async issueFromCsr(req: CsrCertRequest): Promise<IssuedFromCsr> {
    const material = this.ready();
    this.guard?.check(req.identity);
    const signer = this.deps.csrSigner ?? inlineCsrSigner;
    const leaf = await signer.sign(material.signer, { csrPem: req.csrPem, identity: req.identity, ttlMs: req.ttlMs, now: this.deps.clock.now() }, req.deadline);
    return { ...this.recordIssued(material, req.identity, leaf), keyType: leaf.keyType };
  }

  private ready(): CaMaterial {
    if (!this.material) throw new CitadelError('CA_NOT_READY', 'CA key material is not loaded yet');
    return this.material;
  }

  /**
   * Bookkeeping for a leaf signed by `material` (which may have been replaced while a worker signed): the latest
   * notAfter under its root, and the response chain through its intermediates to the current bundle (which still
   * holds a replaced root: it is retained at least the longest workload TTL from the switch, and this leaf's `now`
   * was read before the switch).
   */
  private recordIssued(material: CaMaterial, spiffeId: string, leaf: SignedLeaf): IssuedWorkloadCert {
    this.guard?.recordIssued(spiffeId, leaf.serialHex, leaf.notAfter);
    const anchor = derKey(material.anchor);
    if (leaf.notAfter > (this.latestIssued.get(anchor) ?? 0)) this.latestIssued.set(anchor, leaf.notAfter);
    const chain = buildResponseChain(leaf.pem, material.intermediates.map((c) => c.pem), this.trustBundlePem());
    return { chain, serialHex: leaf.serialHex, notBefore: leaf.notBefore, notAfter: leaf.notAfter };
  }

  /** Stops timers. */
  close(): void {
    this.pruneTimer?.cancel();
    this.pruneTimer = undefined;
    this.listeners.clear();
  }

  private bundle(): { pem: string; roots: ParsedCertificate[] } {
    if (this.bundleCache) return this.bundleCache;
    const roots: ParsedCertificate[] = [];
    const seen = new Set<string>();
    const add = (c: ParsedCertificate) => {
      const k = derKey(c);
      if (seen.has(k)) return;
      seen.add(k);
      roots.push(c);
    };
    for (const r of this.material?.roots ?? []) add(r);
    for (const r of this.retainedRoots.values()) add(r.cert);
    this.bundleCache = { pem: roots.map((r) => r.pem).join(''), roots };
    return this.bundleCache;
  }

  private schedulePrune(): void {
    this.pruneTimer?.cancel();
    this.pruneTimer = undefined;
    const all = [...this.retainedRoots.values(), ...this.retainedIntermediates.values()];
    if (all.length === 0) return;
    const next = Math.min(...all.map((r) => r.keepUntil));
    this.pruneTimer = this.deps.clock.setTimer(() => this.prune(), Math.max(0, next - this.deps.clock.now()) + 1);
  }

  private prune(): void {
    const now = this.deps.clock.now();
    let rootsChanged = false;
    for (const [k, r] of this.retainedRoots) {
      if (r.keepUntil <= now) {
        this.retainedRoots.delete(k);
        rootsChanged = true;
        this.log.info({ root: r.cert.subject, serial: r.cert.serialHex }, 'retained root dropped from the trust bundle: no certificate issued under it is still valid');
      }
    }
    for (const [k, r] of this.retainedIntermediates) if (r.keepUntil <= now) this.retainedIntermediates.delete(k);
    this.schedulePrune();
    if (rootsChanged) {
      this.bundleCache = undefined;
      this.updateGauges();
      this.emit();
    }
  }

  private updateGauges(): void {
    const m = this.deps.metrics;
    const material = this.material;
    if (!m || !material) return;
    m.ready.set(1);
    m.rootCertExpiryTimestamp.set(Math.floor(material.anchor.notAfter / 1000));
    const chain = [material.signer.cert, ...material.intermediates];
    m.certChainExpiryTimestamp.set(Math.floor(Math.min(...chain.map((c) => c.notAfter)) / 1000));
  }

  private emit(): void {
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch (err) {
        this.log.error({ err }, 'CA change listener failed');
      }
    }
  }
}
