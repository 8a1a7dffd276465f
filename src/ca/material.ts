/**
 * CA key material as the keyring holds it, and the checks that decide whether a set of files may be used.
 * Pure apart from hashing: callers read the files/Secret and pass `now`.
 *
 * Two sources (reference/istio.md section 3):
 * - plugged-in (`cacerts`): ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem, or the kubernetes.io/tls
 *   layout tls.crt (signing cert, optionally followed by its chain), tls.key, ca.crt (roots);
 * - self-signed (`istio-ca-secret`): ca-cert.pem is the root and signs, ca-key.pem its key; root-cert.pem may hold
 *   older roots still trusted after a rotation.
 */
import { createHash } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { keyMatchesCertificate, parseCertificates, parsePrivateKeyPem, verifyChain, type ParsedCertificate, type Signer } from '../pki/index.js';

export type MaterialMode = 'plugged' | 'self-signed';

/** A validated set of key material. */
export interface CaMaterial {
  readonly mode: MaterialMode;
  /** Where it came from, for logs: `secret ns/cacerts`, `directory /etc/cacerts`, `secret ns/istio-ca-secret`. */
  readonly source: string;
  readonly signer: Signer;
  /** Certificates between a leaf and a root, signing certificate first (empty when the signer is a root). */
  readonly intermediates: readonly ParsedCertificate[];
  /** The roots this material declares (root-cert.pem / ca.crt, or the self-signed root and its predecessors). */
  readonly roots: readonly ParsedCertificate[];
  /** The root the signing certificate chains to. */
  readonly anchor: ParsedCertificate;
  /** Changes whenever the signing certificate, key or roots change. */
  readonly fingerprint: string;
}

/** The file names of the plugged-in layouts. */
export const ISTIO_LAYOUT = ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem'] as const;
export const TLS_LAYOUT = ['tls.crt', 'tls.key', 'ca.crt'] as const;
export const CACERTS_FILES: readonly string[] = [...ISTIO_LAYOUT, ...TLS_LAYOUT];

/** Contents of the plugged-in files that exist (name -> text). */
export type MaterialFiles = Readonly<Record<string, string>>;

export type LayoutDetection =
  | { kind: 'none' }
  | { kind: 'istio' | 'tls'; missing: readonly string[] };

/**
 * Which layout the files are in and what is missing. Istio's rule: tls.crt present selects the TLS layout;
 * otherwise the four Istio files; nothing at all means "no plugged-in material" (self-signed).
 */
export function detectLayout(files: MaterialFiles): LayoutDetection {
  const has = (n: string) => files[n] !== undefined;
  if (has('tls.crt') || has('tls.key') || has('ca.crt')) {
    // Mixed layouts are not a thing; report the TLS layout's gaps, which is what the operator most likely meant.
    if (has('tls.crt') || !ISTIO_LAYOUT.some(has)) return { kind: 'tls', missing: TLS_LAYOUT.filter((n) => !has(n)) };
  }
  if (!ISTIO_LAYOUT.some(has)) return { kind: 'none' };
  return { kind: 'istio', missing: ISTIO_LAYOUT.filter((n) => !has(n)) };
}

function invalid(source: string, file: string, reason: string, cause?: unknown): CitadelError {
  return new CitadelError('CA_MATERIAL_INVALID', `${source}: ${file}: ${reason}`, undefined, cause === undefined ? undefined : { cause });
}

const reasonOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

function parseCerts(source: string, file: string, text: string, allowEmpty = false): ParsedCertificate[] {
  if (text.trim() === '') {
    if (allowEmpty) return [];
    throw invalid(source, file, 'is empty');
  }
  try {
    return parseCertificates(text);
  } catch (err) {
    throw invalid(source, file, reasonOf(err), err);
  }
}

/** sha256 over the parts that make material different. */
export function materialFingerprint(signer: Signer, roots: readonly ParsedCertificate[], intermediates: readonly ParsedCertificate[]): string {
  const h = createHash('sha256');
  h.update(signer.cert.der);
  h.update(signer.key.export({ type: 'pkcs8', format: 'der' }));
  for (const c of intermediates) h.update(c.der);
  h.update('|');
  for (const r of roots) h.update(r.der);
  return h.digest('hex');
}

/**
 * Validates plugged-in material: all files of the layout present, the key parses and matches the signing
 * certificate, which is a CA with keyCertSign, chains through the chain file to a root of the root file, and
 * nothing on that path is expired or not yet valid.
 * @throws CitadelError CA_MATERIAL_INVALID `<source>: <file>: <reason>`; the caller must not fall back to self-signed.
 */
export function loadPluggedMaterial(files: MaterialFiles, source: string, now: number): CaMaterial {
  const layout = detectLayout(files);
  if (layout.kind === 'none') throw invalid(source, ISTIO_LAYOUT.join(', '), 'no CA files found');
  if (layout.missing.length > 0) {
    const present = CACERTS_FILES.filter((n) => files[n] !== undefined);
    throw invalid(source, layout.missing.join(', '), `missing (found only ${present.join(', ')}); all of ${(layout.kind === 'tls' ? TLS_LAYOUT : ISTIO_LAYOUT).join(', ')} are required`);
  }
  const names = layout.kind === 'tls'
    ? { cert: 'tls.crt', key: 'tls.key', chain: 'tls.crt', roots: 'ca.crt' }
    : { cert: 'ca-cert.pem', key: 'ca-key.pem', chain: 'cert-chain.pem', roots: 'root-cert.pem' };

  const certs = parseCerts(source, names.cert, files[names.cert]!);
  const cert = certs[0]!;
  if (layout.kind === 'istio' && certs.length > 1) throw invalid(source, names.cert, `holds ${certs.length} certificates; it must hold only the signing certificate`);
  let key;
  try {
    key = parsePrivateKeyPem(files[names.key]!);
  } catch (err) {
    throw invalid(source, names.key, reasonOf(err), err);
  }
  if (!cert.isCa) throw invalid(source, names.cert, 'is not a CA certificate (basicConstraints CA:TRUE is missing)');
  if (cert.keyUsage && !cert.keyUsage.has('keyCertSign')) throw invalid(source, names.cert, 'keyUsage lacks keyCertSign');
  if (!keyMatchesCertificate(key, cert)) throw invalid(source, names.key, `does not match the public key of ${names.cert}`);
  if (now > cert.notAfter) throw invalid(source, names.cert, `expired at ${new Date(cert.notAfter).toISOString()}`);
  if (now < cert.notBefore) throw invalid(source, names.cert, `not valid before ${new Date(cert.notBefore).toISOString()}`);

  const chain = layout.kind === 'tls' ? certs.slice(1) : parseCerts(source, names.chain, files[names.chain]!, true);
  const roots = parseCerts(source, names.roots, files[names.roots]!);
  for (const r of roots) {
    if (now > r.notAfter) throw invalid(source, names.roots, `root "${r.subject}" expired at ${new Date(r.notAfter).toISOString()}`);
  }
  let path: ParsedCertificate[];
  try {
    path = verifyChain({ leaf: cert, intermediates: chain, roots, now });
  } catch (err) {
    throw invalid(source, names.chain, `${names.cert} does not chain to ${names.roots}: ${reasonOf(err)}`, err);
  }
  const anchor = path[path.length - 1]!;
  const intermediates = path.length > 1 ? path.slice(0, -1) : [];
  const signer = { cert, key };
  return { mode: 'plugged', source, signer, intermediates, roots, anchor, fingerprint: materialFingerprint(signer, roots, intermediates) };
}

/**
 * Validates self-signed material from `istio-ca-secret`: ca-cert.pem a self-signed CA root, ca-key.pem its key,
 * root-cert.pem (optional) older roots to keep trusting; expired extra roots are dropped.
 * @throws CitadelError CA_MATERIAL_INVALID naming the key and the reason.
 */
export function loadSelfSignedMaterial(data: MaterialFiles, source: string, now: number): CaMaterial {
  for (const n of ['ca-cert.pem', 'ca-key.pem']) {
    if (!data[n]?.trim()) throw invalid(source, n, 'missing or empty');
  }
  const certs = parseCerts(source, 'ca-cert.pem', data['ca-cert.pem']!);
  if (certs.length !== 1) throw invalid(source, 'ca-cert.pem', `holds ${certs.length} certificates; expected the root alone`);
  const cert = certs[0]!;
  let key;
  try {
    key = parsePrivateKeyPem(data['ca-key.pem']!);
  } catch (err) {
    throw invalid(source, 'ca-key.pem', reasonOf(err), err);
  }
  if (!cert.isCa) throw invalid(source, 'ca-cert.pem', 'is not a CA certificate');
  if (!cert.selfSigned) throw invalid(source, 'ca-cert.pem', 'is not self-signed');
  if (!keyMatchesCertificate(key, cert)) throw invalid(source, 'ca-key.pem', 'does not match the public key of ca-cert.pem');
  if (now > cert.notAfter) throw invalid(source, 'ca-cert.pem', `expired at ${new Date(cert.notAfter).toISOString()}`);
  const extra = data['root-cert.pem']?.trim() ? parseCerts(source, 'root-cert.pem', data['root-cert.pem']) : [];
  const roots = [cert, ...extra.filter((r) => !r.der.equals(cert.der) && r.notAfter > now)];
  const signer = { cert, key };
  return { mode: 'self-signed', source, signer, intermediates: [], roots, anchor: cert, fingerprint: materialFingerprint(signer, roots, []) };
}
