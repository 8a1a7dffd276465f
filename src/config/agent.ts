/**
 * The flags of `citadel agent` (name, env var, default, parser, help) and the checks across them; src/cli/agent.ts
 * wires what they configure.
 */
import { KEY_TYPES, type KeyType } from '../pki/keys.js';
import { flag, flagError, parse, type ConfigOf } from './flags.js';

/** Istio's file-mounted layout (cert-chain.pem, key.pem, root-cert.pem); also where an istio.<sa> Secret is mounted. */
export const DEFAULT_FILE_CERTS_DIR = './etc/certs';

/** Where the example's clusterTrustBundle projection puts the roots, beside the credential bundle. */
export const DEFAULT_POD_TRUST_BUNDLE = 'trust-bundle.pem';

export const agentFlags = {
  caAddress: flag({ name: 'ca-address', env: 'CA_ADDR', default: 'citadel.citadel-system.svc:15012', help: 'CA gRPC address (host:port), TLS.', parse: parse.string }),
  caServerName: flag({ name: 'ca-server-name', env: 'ISTIOD_SAN', help: 'Name the CA serving certificate must carry (and SNI). Default: the host of --ca-address.', parse: parse.string }),
  rootCert: flag({ name: 'root-cert', default: './var/run/secrets/istio/root-cert.pem', help: 'Root bundle that the CA connection trusts; watched, and merged into ROOTCA.', parse: parse.string }),
  crlFile: flag({ name: 'crl-file', default: './var/run/secrets/istio/crl/ca-crl.pem', help: 'CRLs (the istio-ca-crl ConfigMap) served as ROOTCA\'s crl; watched. Empty or missing: no CRL checks.', parse: parse.string }),
  tokenFile: flag({ name: 'token-file', default: './var/run/secrets/tokens/istio-token', help: 'ServiceAccount token sent to the CA; re-read on every call.', parse: parse.string }),
  sdsSocket: flag({ name: 'sds-socket', default: './var/run/secrets/workload-spiffe-uds/socket', help: 'Unix socket for Envoy SDS (at most 107 bytes).', parse: parse.string }),
  trustDomain: flag({ name: 'trust-domain', env: 'TRUST_DOMAIN', default: 'cluster.local', help: 'Trust domain of the SPIFFE ID in the CSR.', parse: parse.string }),
  namespace: flag({ name: 'namespace', env: 'POD_NAMESPACE', help: 'Workload namespace. Default: from the token.', parse: parse.string }),
  serviceAccount: flag({ name: 'service-account', env: 'SERVICE_ACCOUNT', help: 'Workload ServiceAccount. Default: from the token.', parse: parse.string }),
  certTtl: flag({ name: 'cert-ttl', env: 'SECRET_TTL', default: '24h', help: 'Requested certificate lifetime (validity_duration).', parse: parse.duration }),
  graceRatio: flag({
    name: 'grace-ratio', env: 'SECRET_GRACE_PERIOD_RATIO', default: '0.5', help: 'Renew when this fraction of the lifetime is left (±0.01 jitter).',
    parse: (raw: string) => {
      const n = parse.number(0, 1)(raw);
      if (n <= 0 || n >= 1) throw new Error('must be between 0 and 1 (exclusive)');
      return n;
    },
  }),
  keyType: flag({ name: 'key-type', default: 'ecdsa-p256', help: `Workload key type (${KEY_TYPES.join(', ')}); a new key per renewal, never on disk.`, parse: parse.oneOf<KeyType>(...KEY_TYPES) }),
  statusAddress: flag({ name: 'status-address', default: ':15020', help: 'Status server: /healthz, /readyz, /metrics (also /stats/prometheus).', parse: parse.address }),
  fileCerts: flag({
    name: 'file-certs', env: 'FILE_MOUNTED_CERTS_DIR',
    help: `Serve cert-chain.pem, key.pem and root-cert.pem from this directory instead of using the CA. Default: ${DEFAULT_FILE_CERTS_DIR} when all three exist there.`,
    parse: parse.string,
  }),
  workloadApi: flag({ name: 'workload-api', env: 'CITADEL_WORKLOAD_API', default: 'true', help: 'Serve the SPIFFE Workload API on the SDS socket (applications set SPIFFE_ENDPOINT_SOCKET=unix://<socket>).', parse: parse.bool }),
  spiffeBundle: flag({ name: 'spiffe-bundle', default: './var/run/secrets/istio/spiffe-bundle.json', help: 'SPIFFE bundle the CA publishes in istio-ca-root-cert (its JWT-SVID keys validate tokens); watched.', parse: parse.string }),
  jwtSvidTtl: flag({ name: 'jwt-svid-ttl', env: 'CITADEL_JWT_SVID_TTL', default: '5m', help: 'Lifetime asked for JWT-SVIDs (the CA caps it); a cached token is reused for half of it.', parse: parse.duration }),
  podCertificateBundle: flag({
    name: 'pod-certificate-bundle', env: 'POD_CERTIFICATE_BUNDLE',
    help: 'Serve the kubelet-projected credential bundle at this path (podCertificate credentialBundlePath: key, then chain) instead of using the CA.',
    parse: parse.string,
  }),
  podTrustBundle: flag({
    name: 'pod-trust-bundle', env: 'POD_TRUST_BUNDLE',
    help: 'With --pod-certificate-bundle: the projected clusterTrustBundle file served as ROOTCA. Default: trust-bundle.pem beside the credential bundle.',
    parse: parse.string,
  }),
  authzPolicyFile: flag({
    name: 'authz-policy-file', env: 'CITADEL_AUTHZ_POLICY_FILE', default: './var/run/secrets/citadel/authz/authz.json',
    help: 'Compiled AuthorizationPolicies of the namespace (ConfigMap citadel-authz, key authz.json), watched; served to Envoy as RBAC filters over ECDS on the SDS socket.',
    parse: parse.string,
  }),
  podLabelsFile: flag({
    name: 'pod-labels-file', env: 'CITADEL_POD_LABELS_FILE', default: './etc/istio/pod/labels',
    help: "The pod's labels (downward API file, Istio's path), watched: they pick the policies that apply to this workload.",
    parse: parse.string,
  }),
  clusterId: flag({ name: 'cluster-id', env: 'ISTIO_META_CLUSTER_ID', help: 'Sent to the CA as the ClusterID header.', parse: parse.string }),
  logLevel: flag({ name: 'log-level', env: 'LOG_LEVEL', default: 'info', help: 'Log level.', parse: parse.oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent') }),
};

export type AgentConfig = ConfigOf<typeof agentFlags>;

/** Cross-flag checks that a single flag's parser cannot make. @throws CitadelError CONFIG_INVALID naming the flag. */
export function checkAgentConfig(c: AgentConfig): void {
  if (c.podCertificateBundle && c.fileCerts) throw flagError('pod-certificate-bundle', 'cannot be combined with --file-certs');
  if (c.podTrustBundle && !c.podCertificateBundle) throw flagError('pod-trust-bundle', 'needs --pod-certificate-bundle');
}
