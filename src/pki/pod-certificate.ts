/**
 * The public key of a Kubernetes PodCertificateRequest (KEP-4317), with its proof of possession checked. Two
 * forms exist while kubelets of both generations run: 1.36+ kubelets send `stubPKCS10Request` (a DER PKCS#10
 * CSR with no subject and no extensions, signed with the key), 1.34/1.35 kubelets send `pkixPublicKey` (DER
 * SubjectPublicKeyInfo) plus `proofOfPossession`, a signature over the pod UID. The apiserver checks both before
 * it stores a request; the signer checks again because it must never sign a key nobody proved to hold.
 * The key policy is the CSR API's (keys.ts describeKey): ECDSA P-256/P-384, RSA 2048/3072/4096.
 */
import { constants, verify, type KeyObject } from 'node:crypto';
import { CitadelError } from '../errors.js';
import { parseCsr } from './csr.js';
import { publicKeyFromSpki, type KeyInfo } from './keys.js';
import { encodePem } from './pem.js';

/** Largest key or proof a request may carry (the apiserver's own limit, 10 KiB). */
export const MAX_POD_CERTIFICATE_KEY_BYTES = 10 * 1024;

export interface PodCertificateKeyInput {
  /** DER PKCS#10 (1.36+ kubelets). */
  readonly stubPKCS10Request?: Uint8Array;
  /** DER SubjectPublicKeyInfo (1.34/1.35 kubelets). */
  readonly pkixPublicKey?: Uint8Array;
  readonly proofOfPossession?: Uint8Array;
  /** The pod UID whose ASCII bytes the proof signs. */
  readonly podUid: string;
}

const nonEmpty = (b: Uint8Array | undefined): b is Uint8Array => b !== undefined && b.length > 0;

/**
 * The requested public key, after its proof of possession verified.
 * @throws CitadelError CSR_INVALID (no key, both forms, too large), DER_INVALID, KEY_UNSUPPORTED, KEY_TOO_WEAK,
 *   SIGNATURE_INVALID (the proof or the CSR signature does not verify with the key).
 */
export function podCertificatePublicKey(input: PodCertificateKeyInput): { publicKey: KeyObject; key: KeyInfo } {
  const { stubPKCS10Request: csr, pkixPublicKey: pkix, proofOfPossession: proof } = input;
  for (const [name, value] of [['stubPKCS10Request', csr], ['pkixPublicKey', pkix], ['proofOfPossession', proof]] as const) {
    if (nonEmpty(value) && value.length > MAX_POD_CERTIFICATE_KEY_BYTES) throw new CitadelError('CSR_INVALID', `${name} is larger than ${MAX_POD_CERTIFICATE_KEY_BYTES} bytes`);
  }
  if (nonEmpty(csr)) {
    if (nonEmpty(pkix) || nonEmpty(proof)) throw new CitadelError('CSR_INVALID', 'the request carries both stubPKCS10Request and pkixPublicKey/proofOfPossession');
    // parseCsr checks the signature with the CSR's own key: that is the proof of possession. Names are ignored.
    const parsed = parseCsr(encodePem('CERTIFICATE REQUEST', csr));
    return { publicKey: parsed.publicKey, key: parsed.key };
  }
  if (!nonEmpty(pkix)) throw new CitadelError('CSR_INVALID', 'the request carries no public key (neither stubPKCS10Request nor pkixPublicKey)');
  if (!nonEmpty(proof)) throw new CitadelError('SIGNATURE_INVALID', 'the request carries pkixPublicKey without proofOfPossession');
  const { publicKey, key } = publicKeyFromSpki(Buffer.from(pkix));
  if (!verifyProofOfPossession(publicKey, key, input.podUid, proof)) {
    throw new CitadelError('SIGNATURE_INVALID', 'proofOfPossession does not verify with pkixPublicKey over the pod UID');
  }
  return { publicKey, key };
}

/** Kubelet's proof: ECDSA (ASN.1) over SHA-256(podUID), RSA-PSS with SHA-256 (salt length as signed). */
function verifyProofOfPossession(publicKey: KeyObject, key: KeyInfo, podUid: string, proof: Uint8Array): boolean {
  const data = Buffer.from(podUid, 'utf8');
  try {
    if (key.algorithm === 'ecdsa') return verify('sha256', data, publicKey, proof);
    return verify('sha256', data, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, proof);
  } catch {
    return false;
  }
}
