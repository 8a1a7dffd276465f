/**
 * The PKI core: pure functions over keys, SPIFFE IDs, CSRs, certificates and chains. No I/O, no clock
 * (callers pass `now`), no logging. Errors are CitadelErrors with stable codes (../errors.ts).
 */
export { KEY_TYPES, describeKey, generateKeyPair, parsePrivateKeyPem, privateKeyToPem, publicKeyToPem, samePublicKey, spkiOf } from './keys.js';
export type { KeyInfo, KeyType } from './keys.js';
export { MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES, isSpiffeId, parseSpiffeId, parseWorkloadSpiffeId, trustDomainId, validateTrustDomain, workloadSpiffeId } from './spiffe.js';
export type { SpiffeId } from './spiffe.js';
export { MAX_INPUT_BYTES, encodePem, splitPem } from './pem.js';
export { createCsr, parseCsr } from './csr.js';
export type { CreateCsrOptions, ParsedCsr } from './csr.js';
export { isSignedBy, keyMatchesCertificate, parseCertificate, parseCertificates } from './certificate.js';
export type { ParsedCertificate } from './certificate.js';
export { BACKDATE_MS, issueCaCertificate, issueWorkloadCertificate, keyIdentifier } from './issue.js';
export type { IssueCaOptions, IssueWorkloadOptions, IssuedCertificate, Signer } from './issue.js';
export { MAX_CHAIN_LENGTH, buildResponseChain, checkWorkloadSvid, verifyChain } from './chain.js';
export type { VerifyChainOptions } from './chain.js';
export { CRL_REASONS, checkCrlSet, crlSignProblem, isCrlSignedBy, issueCrl, normaliseSerial, parseCrls } from './crl.js';
export type { CrlEntry, CrlReason, IssueCrlOptions, IssuedCrl, ParsedCrl } from './crl.js';
export { decodeJwtSvid, deriveJwtSigningKey, importJwks, jwkThumbprint, jwtBundleJson, parseSpiffeBundle, signJwtSvid, spiffeBundleJson, validateJwtSvid } from './jwt.js';
export type { JwtSigningKey, JwtSvidClaims, SpiffeBundle } from './jwt.js';
export { MAX_POD_CERTIFICATE_KEY_BYTES, podCertificatePublicKey } from './pod-certificate.js';
export type { PodCertificateKeyInput } from './pod-certificate.js';
