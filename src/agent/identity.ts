/**
 * Who the agent asks a certificate for. The namespace and ServiceAccount come from explicit configuration
 * (flags / POD_NAMESPACE / SERVICE_ACCOUNT, as Istio's agent reads them) or from the claims of the mounted
 * ServiceAccount token. The token is only decoded here, never verified: the CA verifies it (TokenReview) and
 * refuses a CSR for any other identity, so a wrong guess fails closed at the CA.
 */
import { CitadelError } from '../errors.js';
import { validateTrustDomain, workloadSpiffeId } from '../pki/index.js';

export interface WorkloadIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** spiffe://<td>/ns/<ns>/sa/<sa> */
  readonly spiffeId: string;
}

export interface TokenIdentityClaims {
  readonly namespace?: string;
  readonly serviceAccount?: string;
}

/**
 * Reads namespace and ServiceAccount from a Kubernetes ServiceAccount JWT without verifying it. Understands
 * bound tokens (`kubernetes.io.namespace`, `kubernetes.io.serviceaccount.name`), legacy secret tokens
 * (`kubernetes.io/serviceaccount/namespace`, `.../service-account.name`) and, as a last resort, the subject
 * `system:serviceaccount:<ns>:<sa>`.
 * @throws CitadelError UNAUTHENTICATED when the token is not a decodable JWT.
 */
export function decodeTokenClaims(token: string): TokenIdentityClaims {
  const parts = token.trim().split('.');
  if (parts.length !== 3 || !parts[1]) throw new CitadelError('UNAUTHENTICATED', 'the token is not a JWT');
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    throw new CitadelError('UNAUTHENTICATED', 'the token payload is not JSON');
  }
  if (typeof payload !== 'object' || payload === null) throw new CitadelError('UNAUTHENTICATED', 'the token payload is not an object');
  const p = payload as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);

  const k8s = p['kubernetes.io'];
  if (typeof k8s === 'object' && k8s !== null) {
    const k = k8s as Record<string, unknown>;
    const sa = k.serviceaccount as Record<string, unknown> | undefined;
    const namespace = str(k.namespace);
    const serviceAccount = str(sa?.name);
    if (namespace || serviceAccount) return { namespace, serviceAccount };
  }
  const legacyNs = str(p['kubernetes.io/serviceaccount/namespace']);
  const legacySa = str(p['kubernetes.io/serviceaccount/service-account.name']);
  if (legacyNs || legacySa) return { namespace: legacyNs, serviceAccount: legacySa };
  const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(str(p.sub) ?? '');
  if (m) return { namespace: m[1], serviceAccount: m[2] };
  return {};
}

export interface ResolveIdentityInput {
  readonly trustDomain: string;
  /** Explicit configuration; wins over the token's claims. */
  readonly namespace?: string;
  readonly serviceAccount?: string;
  /** The current token, when one is mounted. */
  readonly token?: string;
}

/**
 * Combines configuration and token claims into the identity for the CSR. Explicit values win (the CA will
 * refuse a CSR that does not match the token, so a conflict surfaces as PERMISSION_DENIED there); `conflicts`
 * lists the disagreements so the caller can log them.
 * @throws CitadelError CONFIG_INVALID when namespace or ServiceAccount is known from neither source,
 *   SPIFFE_ID_INVALID for an unusable trust domain or name.
 */
export function resolveIdentity(input: ResolveIdentityInput): WorkloadIdentity & { conflicts: string[] } {
  const claims = input.token ? decodeTokenClaimsLenient(input.token) : {};
  const namespace = input.namespace || claims.namespace;
  const serviceAccount = input.serviceAccount || claims.serviceAccount;
  if (!namespace || !serviceAccount) {
    throw new CitadelError(
      'CONFIG_INVALID',
      'cannot tell the workload identity: set --namespace/POD_NAMESPACE and --service-account/SERVICE_ACCOUNT, or mount a ServiceAccount token',
    );
  }
  const conflicts: string[] = [];
  if (input.namespace && claims.namespace && input.namespace !== claims.namespace) conflicts.push(`namespace: configured ${input.namespace}, token ${claims.namespace}`);
  if (input.serviceAccount && claims.serviceAccount && input.serviceAccount !== claims.serviceAccount) conflicts.push(`service account: configured ${input.serviceAccount}, token ${claims.serviceAccount}`);
  const trustDomain = validateTrustDomain(input.trustDomain);
  return { trustDomain, namespace, serviceAccount, spiffeId: workloadSpiffeId(trustDomain, namespace, serviceAccount), conflicts };
}

function decodeTokenClaimsLenient(token: string): TokenIdentityClaims {
  try {
    return decodeTokenClaims(token);
  } catch {
    // An opaque token (not a JWT) is still sent to the CA; the identity must then come from configuration.
    return {};
  }
}
