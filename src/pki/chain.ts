/**
 * Chains: RFC 5280 path building and validation at a given time, the SPIFFE checks on a leaf SVID, and the
 * `cert_chain` layout of Istio's CreateCertificate response.
 */
import { CitadelError } from '../errors.js';
import { isSignedBy, type ParsedCertificate } from './certificate.js';
import { OID } from './oids.js';
import { splitPem } from './pem.js';
import { parseSpiffeId } from './spiffe.js';

/** Longest path we try (leaf + intermediates + root). */
export const MAX_CHAIN_LENGTH = 10;

export interface VerifyChainOptions {
  leaf: ParsedCertificate;
  intermediates: readonly ParsedCertificate[];
  /** Trust anchors (a root bundle). */
  roots: readonly ParsedCertificate[];
  /** Validation time, ms since the epoch. */
  now: number;
  /**
   * How far in the future a notBefore may be and still count as valid (ms, default 0): tolerance for an issuer
   * whose clock runs ahead of ours. Expiry gets no tolerance.
   */
  notBeforeToleranceMs?: number;
}

const chainError = (message: string, detail?: string) => new CitadelError('CHAIN_INVALID', `certificate chain does not verify: ${message}`, detail);

function checkTime(cert: ParsedCertificate, now: number, role: string, notBeforeToleranceMs: number): void {
  if (now > cert.notAfter) throw new CitadelError('CERT_EXPIRED', `${role} certificate has expired`, `${cert.subject || cert.uris[0] || cert.serialHex}: notAfter ${new Date(cert.notAfter).toISOString()}`);
  if (now + notBeforeToleranceMs < cert.notBefore) throw chainError(`${role} certificate is not valid yet`, `notBefore ${new Date(cert.notBefore).toISOString()}`);
}

function canIssue(candidate: ParsedCertificate, child: ParsedCertificate): boolean {
  if (!candidate.subjectDer.equals(child.issuerDer)) return false;
  if (child.authorityKeyId && candidate.subjectKeyId && !child.authorityKeyId.equals(candidate.subjectKeyId)) return false;
  return isSignedBy(child, candidate);
}

/** Why `ca` may not act as an issuing CA in a path with `below` intermediate CAs under it, if it may not. */
function caProblem(ca: ParsedCertificate, below: number, anchor: boolean): string | undefined {
  // A v1 trust anchor predates basicConstraints; RFC 5280 lets anchors be trusted as configured.
  if (!ca.isCa && !(anchor && ca.version === 1)) return 'issuer is not a CA';
  if (ca.keyUsage && !ca.keyUsage.has('keyCertSign')) return 'issuer keyUsage lacks keyCertSign';
  if (ca.pathLen !== undefined && below > ca.pathLen) return `issuer pathLen ${ca.pathLen} exceeded`;
  if (!anchor && ca.extensions.unhandledCritical.length) return `unsupported critical extension ${ca.extensions.unhandledCritical.join(', ')}`;
  return undefined;
}

/**
 * Finds and validates a path leaf -> intermediates -> one of `roots` at `now`: names chain, AKI/SKI agree,
 * each signature verifies with its issuer's key, issuers are CAs with keyCertSign and within pathLen, no
 * unknown critical extensions, every certificate (the root too) is within its validity period (notBefore up to
 * `notBeforeToleranceMs` ahead).
 * Returns the path [leaf, ..., root]. Throws CHAIN_INVALID, CERT_EXPIRED.
 */
export function verifyChain(opts: VerifyChainOptions): ParsedCertificate[] {
  const { leaf, intermediates, roots, now } = opts;
  const tolerance = opts.notBeforeToleranceMs ?? 0;
  if (roots.length === 0) throw chainError('no trusted roots');
  if (leaf.extensions.unhandledCritical.length) throw chainError(`unsupported critical extension ${leaf.extensions.unhandledCritical.join(', ')}`);
  checkTime(leaf, now, 'leaf', tolerance);
  // The leaf may itself be a trusted root (e.g. checking a bundle entry).
  if (roots.some((r) => r.der.equals(leaf.der))) return [leaf];

  let firstProblem: CitadelError | undefined;
  const remember = (err: CitadelError) => {
    firstProblem ??= err;
  };

  const extend = (path: ParsedCertificate[], below: number): ParsedCertificate[] | undefined => {
    const child = path[path.length - 1]!;
    for (const root of roots) {
      if (!canIssue(root, child)) continue;
      const problem = caProblem(root, below, true);
      if (problem) {
        remember(chainError(problem, root.subject));
        continue;
      }
      try {
        checkTime(root, now, 'root', tolerance);
      } catch (err) {
        remember(err as CitadelError);
        continue;
      }
      return [...path, root];
    }
    if (path.length + 1 >= MAX_CHAIN_LENGTH) return undefined;
    for (const inter of intermediates) {
      if (path.some((p) => p.der.equals(inter.der)) || !canIssue(inter, child)) continue;
      const problem = caProblem(inter, below, false);
      if (problem) {
        remember(chainError(problem, inter.subject));
        continue;
      }
      try {
        checkTime(inter, now, 'intermediate', tolerance);
      } catch (err) {
        remember(err as CitadelError);
        continue;
      }
      // Self-issued intermediates do not count towards pathLen (RFC 5280 6.1.4).
      const selfIssued = inter.subjectDer.equals(inter.issuerDer);
      const found = extend([...path, inter], selfIssued ? below : below + 1);
      if (found) return found;
    }
    return undefined;
  };

  const path = extend([leaf], 0);
  if (path) return path;
  throw firstProblem ?? chainError('no path to a trusted root', leaf.issuer);
}

/**
 * SPIFFE X509-SVID section 5 checks on a leaf (after path validation): cA false, no keyCertSign/cRLSign,
 * exactly one URI SAN that is a SPIFFE ID with a non-root path, EKU (if present) has serverAuth and
 * clientAuth. Returns the SPIFFE ID. Throws CERT_INVALID.
 */
export function checkWorkloadSvid(cert: ParsedCertificate): string {
  const bad = (reason: string) => new CitadelError('CERT_INVALID', `not a valid X.509-SVID: ${reason}`);
  if (cert.isCa) throw bad('leaf is a CA');
  if (!cert.keyUsage) throw bad('keyUsage is missing');
  if (!cert.extensions.keyUsage?.critical) throw bad('keyUsage is not critical');
  if (!cert.keyUsage.has('digitalSignature')) throw bad('keyUsage lacks digitalSignature');
  if (cert.keyUsage.has('keyCertSign') || cert.keyUsage.has('cRLSign')) throw bad('keyUsage has keyCertSign or cRLSign');
  if (cert.extKeyUsage && !(cert.extKeyUsage.includes(OID.serverAuth) && cert.extKeyUsage.includes(OID.clientAuth))) throw bad('extKeyUsage lacks serverAuth or clientAuth');
  if (cert.uris.length !== 1) throw bad(`expected exactly one URI SAN, found ${cert.uris.length}`);
  const id = cert.uris[0]!;
  let path: string;
  try {
    path = parseSpiffeId(id).path;
  } catch (err) {
    throw bad((err as Error).message);
  }
  if (path === '') throw bad('the SPIFFE ID has no path');
  if (cert.subject === '' && !cert.extensions.subjectAltName?.critical) throw bad('subject is empty but subjectAltName is not critical');
  return id;
}

/**
 * Istio's `cert_chain` response layout: [leaf, each intermediate certificate as its own element, the whole
 * root bundle as one final element]. Non-root elements are normalised PEM ending in "\n" (input already in
 * that form is passed through without decoding); an element of `intermediatePems` holding several
 * certificates (a cert-chain.pem) is split. The root bundle is passed through as given.
 * Throws PEM_INVALID (leaf not exactly one certificate, or no root).
 */
export function buildResponseChain(leafPem: string, intermediatePems: readonly string[], rootBundlePem: string): string[] {
  const chain = [normalisedCertificate(leafPem)];
  for (const p of intermediatePems) {
    if (looksNormal(p, true)) chain.push(p);
    else chain.push(...splitPem(p, 'CERTIFICATE'));
  }
  if (!looksNormal(rootBundlePem, false) && splitPem(rootBundlePem, 'CERTIFICATE').length === 0) {
    throw new CitadelError('PEM_INVALID', 'the root bundle holds no certificate');
  }
  chain.push(rootBundlePem);
  return chain;
}

const BEGIN = '-----BEGIN CERTIFICATE-----\n';
const END = '\n-----END CERTIFICATE-----\n';

/**
 * Certificates we wrote ourselves (issuance, parsed material) are already in normal form. Recognising that
 * by their frame costs well under a microsecond, where decoding and re-encoding costs ~10 us per certificate
 * on every issuance; anything else takes the full path through splitPem.
 */
function looksNormal(pem: string, single: boolean): boolean {
  return pem.startsWith(BEGIN) && pem.endsWith(END) && !pem.includes('\r') && (!single || pem.indexOf('-----BEGIN', 1) === -1);
}

function normalisedCertificate(pem: string): string {
  if (looksNormal(pem, true)) return pem;
  const blocks = splitPem(pem, 'CERTIFICATE');
  if (blocks.length !== 1) throw new CitadelError('PEM_INVALID', `the leaf must be exactly one certificate, found ${blocks.length}`);
  return blocks[0]!;
}
