/**
 * One attempt at getting a workload certificate from the CA: a fresh key in memory, a CSR for the workload's
 * SPIFFE ID, CreateCertificate with the token read from its file right now, and a check of the answer before
 * anyone sees it. Retrying and timing belong to the secret cache. After any failure the connection is dropped,
 * so the next attempt builds a new one and re-reads the root file (the CA's serving chain may have moved on).
 */
import fs from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { Clock } from '../clock.js';
import { CitadelError, toCitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { checkWorkloadSvid, createCsr, generateKeyPair, parseCertificate, parseCertificates, verifyChain, type KeyType, type ParsedCertificate } from '../pki/index.js';
import { resolveIdentity, type WorkloadIdentity } from './identity.js';
import { NOT_BEFORE_TOLERANCE_MS, validateCertificateMaterial, type CertificateMaterial } from './material.js';
import type { AgentMetrics } from './metrics.js';

/** The CA client as the agent uses it (src/grpc/client.ts `CaClient` fits). */
export interface CsrClient {
  createCertificate(req: { csr: string; validityDurationSeconds: number; bearerToken?: string; signal?: AbortSignal }): Promise<string[]>;
  /** citadel's JWT-SVID RPC (absent on clients that only speak Istio's API). */
  createJwtSvid?(req: { audience: readonly string[]; validityDurationSeconds: number; bearerToken?: string; signal?: AbortSignal }): Promise<string>;
  close(): void;
}

export interface CsrClientCredentials {
  /** PEM the CA's serving certificate must chain to (the root file as read for this connection). */
  rootCaPem: string;
  /** mTLS with the current workload certificate (renewal without a token). */
  clientCertChainPem?: string;
  clientKeyPem?: string;
}

/** Builds a connection to the CA (address and server name are fixed by the caller). May throw CONFIG_INVALID. */
export type CsrClientFactory = (creds: CsrClientCredentials) => CsrClient;

export interface IssuedWorkloadCertificate {
  readonly certificate: CertificateMaterial;
  /** The last element of the response chain (Istio's root bundle), when the chain had more than the leaf. */
  readonly responseRootsPem?: string;
  /** When the answer arrived (ms); renewal is timed from here, as Istio does. */
  readonly receivedAt: number;
  readonly identity: WorkloadIdentity;
}

export interface CaIssuerDeps {
  clientFactory: CsrClientFactory;
  rootCertPath: string;
  tokenPath: string;
  trustDomain: string;
  /** Explicit identity (flags/env); otherwise taken from the token's claims. */
  namespace?: string;
  serviceAccount?: string;
  certTtlMs: number;
  keyType: KeyType;
  clock: Clock;
  log: Logger;
  metrics?: AgentMetrics;
  /** The certificate currently served, for mTLS renewal when no token is available. */
  currentCertificate(): CertificateMaterial | undefined;
}

export interface CaIssuer {
  /**
   * Gets a new certificate. `onSent` is called once the request is on its way (the key and CSR are made).
   * @throws CitadelError UNAUTHENTICATED (no token and no valid certificate, or the CA refused), PERMISSION_DENIED,
   *   CONFIG_INVALID (no usable root file or identity), UPSTREAM_UNAVAILABLE, CHAIN_INVALID / CERT_INVALID /
   *   KEY_MISMATCH / CERT_EXPIRED (the CA's answer does not hold together).
   */
  issue(signal?: AbortSignal, onSent?: () => void): Promise<IssuedWorkloadCertificate>;
  /**
   * Asks the CA for a JWT-SVID for `audience`, authenticated as issue() is (token, else mTLS). Returns the
   * token as sent; the caller checks it. @throws as issue(), and INTERNAL when the client has no JWT RPC.
   */
  mintJwtSvid(audience: readonly string[], ttlMs: number, signal?: AbortSignal): Promise<string>;
  /** Drops the current connection; the next call builds a new one (and re-reads the root file). */
  resetConnection(): void;
  close(): void;
}

const REQUEST_TYPE = 'csr';
const JWT_REQUEST_TYPE = 'jwt-svid';

async function readOptional(path: string): Promise<string | undefined> {
  try {
    const text = (await fs.promises.readFile(path, 'utf8')).trim();
    return text === '' ? undefined : text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Creates the issuer. Nothing is read or dialled until the first issue(). */
export function createCaIssuer(deps: CaIssuerDeps): CaIssuer {
  const log = deps.log;
  let client: { client: CsrClient; key: string } | undefined;
  let lastIdentity: WorkloadIdentity | undefined;

  const connect = (creds: CsrClientCredentials, key: string): CsrClient => {
    if (client && client.key === key) return client.client;
    client?.client.close();
    client = { client: deps.clientFactory(creds), key };
    return client.client;
  };

  const resetConnection = () => {
    client?.client.close();
    client = undefined;
  };

  // Set once the request is on its way: failures before that (no root file, no token) are not outgoing failures.
  let sent = false;

  /** Reads the root file and token now and picks the credentials (token, else mTLS with the current certificate). */
  const prepare = async () => {
    let rootFile: string | undefined;
    try {
      rootFile = await readOptional(deps.rootCertPath);
    } catch (err) {
      throw new CitadelError('CONFIG_INVALID', `cannot read the CA root file ${deps.rootCertPath}`, (err as Error).message);
    }
    if (!rootFile) throw new CitadelError('CONFIG_INVALID', `the CA root file ${deps.rootCertPath} is missing or empty`);
    let rootFileCerts: ParsedCertificate[];
    try {
      rootFileCerts = parseCertificates(rootFile);
    } catch (err) {
      throw new CitadelError('CONFIG_INVALID', `the CA root file ${deps.rootCertPath} holds no usable certificate`, (err as Error).message);
    }

    let token: string | undefined;
    try {
      token = await readOptional(deps.tokenPath);
    } catch (err) {
      log.warn({ path: deps.tokenPath, err }, 'cannot read the token file');
    }

    let identity: WorkloadIdentity;
    if (token || !lastIdentity) {
      const { conflicts, ...resolved } = resolveIdentity({ trustDomain: deps.trustDomain, namespace: deps.namespace, serviceAccount: deps.serviceAccount, token });
      if (conflicts.length) log.warn({ conflicts }, 'configured identity differs from the token; the CA decides');
      identity = resolved;
    } else {
      identity = lastIdentity;
    }

    let creds: CsrClientCredentials = { rootCaPem: rootFile };
    let connKey = `token|${rootFile}`;
    if (!token) {
      // VM mode: a bootstrap token was used once; renew over mTLS with the certificate we still hold.
      const current = deps.currentCertificate();
      if (!current || current.notAfter <= deps.clock.now()) {
        throw new CitadelError('UNAUTHENTICATED', `no token at ${deps.tokenPath} and no valid certificate to renew with`);
      }
      creds = { rootCaPem: rootFile, clientCertChainPem: current.certificateChainPem, clientKeyPem: current.privateKeyPem };
      connKey = `mtls|${current.serialHex}|${rootFile}`;
    }
    return { rootFileCerts, token, identity, client: connect(creds, connKey) };
  };

  const issueOnce = async (signal?: AbortSignal, onSent?: () => void): Promise<IssuedWorkloadCertificate> => {
    const { rootFileCerts, token, identity, client: cl } = await prepare();
    const { privateKey } = await generateKeyPair(deps.keyType);
    const csr = createCsr({ key: privateKey, spiffeId: identity.spiffeId });

    deps.metrics?.outgoingRequests.inc({ request_type: REQUEST_TYPE });
    sent = true;
    const started = deps.clock.now();
    let chain: string[];
    try {
      const answer = cl.createCertificate({
        csr,
        validityDurationSeconds: Math.max(1, Math.round(deps.certTtlMs / 1000)),
        ...(token ? { bearerToken: token } : {}),
        ...(signal ? { signal } : {}),
      });
      onSent?.();
      chain = await answer;
    } finally {
      const ms = deps.clock.now() - started;
      deps.metrics?.outgoingLatency.inc({ request_type: REQUEST_TYPE }, ms);
      deps.metrics?.outgoingLatencySeconds.observe({ request_type: REQUEST_TYPE }, ms / 1000);
    }
    const receivedAt = deps.clock.now();
    const checked = checkResponse({ chain, key: privateKey, spiffeId: identity.spiffeId, rootFileCerts, now: receivedAt });
    lastIdentity = identity;
    log.info({ spiffeId: identity.spiffeId, serial: checked.certificate.serialHex, notAfter: new Date(checked.certificate.notAfter).toISOString(), mode: token ? 'token' : 'mtls' }, 'certificate issued by the CA');
    return { ...checked, receivedAt, identity: lastIdentity };
  };

  return {
    async issue(signal, onSent) {
      sent = false;
      try {
        return await issueOnce(signal, onSent);
      } catch (err) {
        const e = toCitadelError(err);
        if (sent) deps.metrics?.failedOutgoingRequests.inc({ request_type: REQUEST_TYPE, error: e.metricLabel });
        resetConnection();
        throw e;
      }
    },
    async mintJwtSvid(audience, ttlMs, signal) {
      try {
        const { token, client: cl } = await prepare();
        if (!cl.createJwtSvid) throw new CitadelError('INTERNAL', 'this CA client cannot ask for JWT-SVIDs');
        deps.metrics?.outgoingRequests.inc({ request_type: JWT_REQUEST_TYPE });
        return await cl.createJwtSvid({ audience, validityDurationSeconds: Math.max(1, Math.round(ttlMs / 1000)), ...(token ? { bearerToken: token } : {}), ...(signal ? { signal } : {}) });
      } catch (err) {
        const e = toCitadelError(err);
        deps.metrics?.failedOutgoingRequests.inc({ request_type: JWT_REQUEST_TYPE, error: e.metricLabel });
        resetConnection();
        throw e;
      }
    },
    resetConnection,
    close: resetConnection,
  };
}

/**
 * Checks the CA's answer: the leaf is for our key and our SPIFFE ID, is valid now, and chains (through the
 * intermediates) to a root from the response's last element or the root file.
 */
function checkResponse(opts: { chain: string[]; key: KeyObject; spiffeId: string; rootFileCerts: ParsedCertificate[]; now: number }): { certificate: CertificateMaterial; responseRootsPem?: string } {
  const { chain } = opts;
  if (chain.length === 0) throw new CitadelError('CERT_INVALID', 'the CA returned an empty chain');
  const leaf = parseCertificate(chain[0]!);
  const responseRootsPem = chain.length > 1 ? chain[chain.length - 1]! : undefined;
  const intermediates = chain.slice(1, chain.length > 1 ? -1 : undefined).flatMap((p) => parseCertificates(p));
  const responseRoots = responseRootsPem ? parseCertificates(responseRootsPem) : [];
  // An X509-SVID carries exactly one URI SAN (checkWorkloadSvid); it must be the identity we asked for.
  let issuedId: string;
  try {
    issuedId = checkWorkloadSvid(leaf);
  } catch (err) {
    throw new CitadelError('CERT_INVALID', 'the CA returned a certificate that is not a workload SVID', err instanceof Error ? err.message : String(err), { cause: err });
  }
  if (issuedId !== opts.spiffeId) {
    throw new CitadelError('CERT_INVALID', 'the CA issued a certificate for a different identity', `asked ${opts.spiffeId}, got ${issuedId}`);
  }
  // The same notBefore tolerance as the material check that follows: a CA whose clock runs ahead is not refused.
  verifyChain({ leaf, intermediates, roots: [...responseRoots, ...opts.rootFileCerts], now: opts.now, notBeforeToleranceMs: NOT_BEFORE_TOLERANCE_MS });
  const certificate = validateCertificateMaterial({ chain: [leaf, ...intermediates], key: opts.key, now: opts.now });
  return { certificate, ...(responseRootsPem ? { responseRootsPem } : {}) };
}
