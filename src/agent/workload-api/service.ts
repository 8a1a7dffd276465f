/**
 * The SPIFFE Workload API's policy, free of gRPC (src/grpc/workload-api-server.ts is the transport): what each
 * RPC answers, from the same secrets SDS serves (src/agent/secret-store.ts: the cached SVID and ROOTCA)
 * plus JWT-SVIDs from the CA (cached per audience) and the JWT keys of the published SPIFFE bundle.
 *
 * The agent runs per pod, so every caller on its socket is the pod's workload and gets the pod's one identity;
 * the socket's file permissions and the pod's volume are the boundary. "No identity" (before the first
 * certificate, or after it expired) is NO_IDENTITY = PermissionDenied, which clients retry, never an empty list.
 */
import { createPrivateKey } from 'node:crypto';
import { CitadelError } from '../../errors.js';
import type { Clock } from '../../clock.js';
import { decodeJwtSvid, parseCertificates, parseSpiffeId, validateJwtSvid } from '../../pki/index.js';
import { ROOT_CA_RESOURCE, WORKLOAD_CERT_RESOURCE } from '../material.js';
import type { WorkloadSecrets } from '../secret-store.js';
import type { SecretListener } from '../sds/secret-source.js';
import type { JwtBundle } from './jwt-bundle.js';
import type { JwtSvidCache } from './jwt-cache.js';

/** X509SVIDResponse as proto-loader takes it. */
export interface X509SvidMessage {
  svids: { spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer; hint: string }[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface WorkloadApi {
  /** The full X.509 state. @throws CitadelError NO_IDENTITY */
  x509Svid(): X509SvidMessage;
  /** Own trust domain's X.509 bundle. @throws CitadelError NO_IDENTITY */
  x509Bundles(): { crl: Buffer[]; bundles: Record<string, Buffer> };
  /** @throws CitadelError REQUEST_INVALID (no audience), NO_IDENTITY (none, or another SPIFFE ID asked), CA errors */
  jwtSvid(audience: readonly string[], spiffeId: string): Promise<{ svids: { spiffe_id: string; svid: string; hint: string }[] }>;
  /** Own trust domain's JWT keys (a JWKS, possibly empty before the bundle file exists). */
  jwtBundles(): { bundles: Record<string, Buffer> };
  /** @throws CitadelError REQUEST_INVALID (no audience or token), JWT_INVALID (anything that does not validate) */
  validateJwtSvid(audience: string, token: string): { spiffe_id: string; claims: Record<string, unknown> };
  /** Called after anything streamed changed: the certificate, the X.509 roots, or the JWT keys. */
  onChange(listener: (what: WorkloadApiChange) => void): () => void;
}

export interface WorkloadApiDeps {
  readonly secrets: WorkloadSecrets & { subscribe(listener: SecretListener): () => void };
  readonly jwtSvids: JwtSvidCache;
  readonly jwtBundle: JwtBundle;
  readonly trustDomain: string;
  readonly clock: Clock;
}

export type WorkloadApiChange = 'x509-svid' | 'x509-bundle' | 'jwt-bundle';

const derOf = (pem: string) => Buffer.concat(parseCertificates(pem).map((c) => c.der));

export function createWorkloadApi(deps: WorkloadApiDeps): WorkloadApi {
  const trustDomainId = `spiffe://${deps.trustDomain}`;
  const identity = () => {
    const cert = deps.secrets.certificate();
    const bundle = deps.secrets.trustBundle();
    if (!cert || !bundle || cert.notAfter <= deps.clock.now() || !cert.uris[0]) throw new CitadelError('NO_IDENTITY', 'no identity issued');
    return { cert, bundle, spiffeId: cert.uris[0] };
  };
  return {
    x509Svid() {
      const { cert, bundle, spiffeId } = identity();
      const key = createPrivateKey(cert.privateKeyPem).export({ format: 'der', type: 'pkcs8' });
      return {
        svids: [{ spiffe_id: spiffeId, x509_svid: derOf(cert.certificateChainPem), x509_svid_key: key, bundle: derOf(bundle.trustedCaPem), hint: '' }],
        crl: [],
        federated_bundles: {},
      };
    },
    x509Bundles() {
      const { bundle } = identity();
      return { crl: [], bundles: { [trustDomainId]: derOf(bundle.trustedCaPem) } };
    },
    async jwtSvid(audience, spiffeId) {
      if (audience.filter((a) => a !== '').length === 0) throw new CitadelError('REQUEST_INVALID', 'audience must be specified');
      const own = identity().spiffeId;
      if (spiffeId !== '' && spiffeId !== own) throw new CitadelError('NO_IDENTITY', 'no identity issued for the requested SPIFFE ID');
      const token = await deps.jwtSvids.get(audience.filter((a) => a !== ''), own);
      return { svids: [{ spiffe_id: own, svid: token, hint: '' }] };
    },
    jwtBundles() {
      return { bundles: { [trustDomainId]: Buffer.from(deps.jwtBundle.jwksJson()) } };
    },
    validateJwtSvid(audience, token) {
      if (audience === '') throw new CitadelError('REQUEST_INVALID', 'audience must be specified');
      if (token === '') throw new CitadelError('REQUEST_INVALID', 'svid must be specified');
      const { claims } = decodeJwtSvid(token);
      let subjectDomain: string;
      try {
        subjectDomain = parseSpiffeId(String(claims.sub)).trustDomain;
      } catch {
        throw new CitadelError('JWT_INVALID', 'the token subject is not a SPIFFE ID');
      }
      // Bundles are trust-domain scoped: a token is checked only with the bundle of its own subject's domain.
      if (subjectDomain !== deps.trustDomain) throw new CitadelError('JWT_INVALID', `no JWT bundle for trust domain ${JSON.stringify(subjectDomain.slice(0, 255))}`);
      const valid = validateJwtSvid({ token, audience, keys: deps.jwtBundle.keys(), now: deps.clock.now() });
      return { spiffe_id: valid.sub, claims: valid };
    },
    onChange(listener) {
      // The store also announces the names file resolvers fill for SDS; only the workload's own two matter here.
      const offSecrets = deps.secrets.subscribe((name) => {
        if (name === ROOT_CA_RESOURCE) listener('x509-bundle');
        else if (name === WORKLOAD_CERT_RESOURCE) listener('x509-svid');
      });
      const offBundle = deps.jwtBundle.onChange(() => listener('jwt-bundle'));
      return () => {
        offSecrets();
        offBundle();
      };
    },
  };
}
