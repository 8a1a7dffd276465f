/**
 * The flags of `citadel ca` (name, env var, default, parser, help) and the checks across them; src/cli/ca.ts wires
 * what they configure.
 */
import { parseLabelSelector, SA_SECRETS_MODES, validateSignerName, type SaSecretsMode } from '../controllers/index.js';
import { KEY_TYPES, validateTrustDomain, type KeyType } from '../pki/index.js';
import { flag, flagError, parse, type ConfigOf } from './flags.js';

export const caFlags = {
  namespace: flag({ name: 'namespace', env: 'POD_NAMESPACE', default: 'citadel-system', help: 'Namespace of the CA: where cacerts, istio-ca-secret and the leader Lease live.', parse: parse.string }),
  kubeconfig: flag({ name: 'kubeconfig', env: 'KUBECONFIG', help: 'Kubeconfig file. Default: the in-cluster ServiceAccount config.', parse: parse.string }),
  trustDomain: flag({ name: 'trust-domain', env: 'TRUST_DOMAIN', default: 'cluster.local', help: 'Trust domain of the identities issued.', parse: (raw: string) => validateTrustDomain(raw) }),
  grpcAddress: flag({ name: 'grpc-address', env: 'CITADEL_GRPC_ADDRESS', default: ':15012', help: 'Istio CSR API (gRPC over TLS) listen address.', parse: parse.address }),
  monitoringAddress: flag({ name: 'monitoring-address', env: 'CITADEL_MONITORING_ADDRESS', default: ':15014', help: 'HTTP /metrics, /healthz, /readyz listen address.', parse: parse.address }),
  cacertsDir: flag({ name: 'cacerts-dir', env: 'ROOT_CA_DIR', default: '/etc/cacerts', help: 'Plugged-in CA files (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem, or tls.crt, tls.key, ca.crt); used when the cacerts Secret does not exist.', parse: parse.string }),
  pluggedRootPublishDelay: flag({ name: 'plugged-root-publish-delay', env: 'CITADEL_PLUGGED_ROOT_PUBLISH_DELAY', default: '2m', help: 'When new plugged-in material signs under a root the trust bundle lacks, how long that root is published (root ConfigMaps) before the material signs; pods see ConfigMap changes when kubelet syncs their volumes (about a minute). 0 switches at once.', parse: parse.durationOrZero }),
  cacertsPollInterval: flag({ name: 'cacerts-poll-interval', env: 'CITADEL_CACERTS_POLL_INTERVAL', default: '10s', help: 'How often --cacerts-dir is re-read (file events trigger a reload sooner).', parse: parse.duration }),
  tokenAudiences: flag({ name: 'token-audiences', env: 'TOKEN_AUDIENCES', default: 'istio-ca', help: 'Audiences a bearer token must be valid for (comma-separated).', parse: (raw: string) => {
    const list = parse.list(raw);
    if (list.length === 0) throw new Error('needs at least one audience');
    return list;
  } }),
  tokenReviewCacheTtl: flag({ name: 'token-review-cache-ttl', env: 'CITADEL_TOKEN_REVIEW_CACHE_TTL', default: '10s', help: 'How long a successful TokenReview is reused (never beyond the token expiry); 0 disables.', parse: parse.durationOrZero }),
  workloadCertTtl: flag({ name: 'workload-cert-ttl', env: 'DEFAULT_WORKLOAD_CERT_TTL', default: '24h', help: 'Certificate lifetime when the request asks for none.', parse: parse.duration }),
  maxWorkloadCertTtl: flag({ name: 'max-workload-cert-ttl', env: 'MAX_WORKLOAD_CERT_TTL', default: '2160h', help: 'Longest certificate lifetime a request may ask for (longer: INVALID_ARGUMENT).', parse: parse.duration }),
  selfSignedKeyType: flag({ name: 'self-signed-key-type', env: 'CITADEL_SELF_SIGNED_KEY_TYPE', default: 'ecdsa-p256', help: `Key type of a new self-signed root (${KEY_TYPES.join(', ')}); Istio uses rsa-2048.`, parse: parse.oneOf<KeyType>(...KEY_TYPES) }),
  selfSignedCaCertTtl: flag({ name: 'self-signed-ca-cert-ttl', env: 'CITADEL_SELF_SIGNED_CA_CERT_TTL', default: '87600h', help: 'Lifetime of a new self-signed root (10 years, as Istio).', parse: parse.duration }),
  selfSignedRootCheckInterval: flag({ name: 'self-signed-root-check-interval', env: 'CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL', default: '1h', help: 'How often the leader checks whether the self-signed root needs rotating; 0 disables rotation.', parse: parse.durationOrZero }),
  selfSignedRootGracePercent: flag({ name: 'self-signed-root-grace-percent', env: 'CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE', default: '20', help: 'Rotate the self-signed root when less than this percentage of its life remains.', parse: parse.int(1, 99) }),
  selfSignedRootPublishDelay: flag({ name: 'self-signed-root-publish-delay', env: 'CITADEL_SELF_SIGNED_ROOT_PUBLISH_DELAY', default: '10m', help: 'How long a rotated self-signed root is published in the trust bundle before it signs (it then signs from the next check); 0 switches at once.', parse: parse.durationOrZero }),
  extraDnsNames: flag({ name: 'extra-dns-names', env: 'ISTIOD_CUSTOM_HOST', default: '', help: 'Extra DNS names for the serving certificate (comma-separated), besides citadel.<ns>.svc[.cluster.local].', parse: parse.list }),
  servingCertTtl: flag({ name: 'serving-cert-ttl', env: 'CITADEL_SERVING_CERT_TTL', default: '24h', help: 'Lifetime of the CA serving certificate (re-issued at half-life and on key material changes).', parse: parse.duration }),
  csrRateLimitQps: flag({ name: 'csr-rate-limit-qps', env: 'CITADEL_CSR_RATE_LIMIT_QPS', default: '20', help: 'Certificates per second per identity, sustained (over it: RESOURCE_EXHAUSTED).', parse: parse.number(0.001, 1e6) }),
  csrRateLimitBurst: flag({ name: 'csr-rate-limit-burst', env: 'CITADEL_CSR_RATE_LIMIT_BURST', default: '200', help: 'Certificates per identity allowed in a burst (a Deployment rolling out).', parse: parse.int(1, 1e7) }),
  signingWorkers: flag({ name: 'signing-workers', env: 'CITADEL_SIGNING_WORKERS', default: '1', help: 'Worker threads that parse, verify and sign CSRs beside the gRPC thread, for more certificates/s under concurrent load (a call alone is signed on the main thread, which is cheaper); 0 signs every call on the main thread.', parse: parse.int(0, 64) }),
  maxRequestBytes: flag({ name: 'max-request-bytes', env: 'CITADEL_MAX_REQUEST_BYTES', default: '65536', help: 'Largest gRPC request (and CSR) accepted, in bytes.', parse: parse.int(4096, 4 << 20) }),
  saSecrets: flag({ name: 'sa-secrets', env: 'CITADEL_SA_SECRETS', default: 'labeled', help: 'ServiceAccount Secrets istio.<sa>: off, labeled (namespaces labelled citadel.io/sa-secrets=enabled) or all.', parse: parse.oneOf<SaSecretsMode>(...SA_SECRETS_MODES) }),
  namespaceSelector: flag({ name: 'namespace-selector', env: 'CITADEL_NAMESPACE_SELECTOR', default: '', help: 'Label selector of the namespaces citadel writes to: istio-ca-root-cert ConfigMaps and ServiceAccount Secrets (empty: all).', parse: parseLabelSelector }),
  excludedNamespaces: flag({ name: 'excluded-namespaces', env: 'CITADEL_EXCLUDED_NAMESPACES', default: 'kube-public,kube-node-lease', help: 'Namespaces never given the root ConfigMap (comma-separated).', parse: parse.list }),
  rootConfigMaps: flag({ name: 'root-configmaps', env: 'CITADEL_ROOT_CONFIGMAPS', default: 'true', help: 'Write the trust bundle into the istio-ca-root-cert ConfigMap of every namespace (leader).', parse: parse.bool }),
  podCertificateSigner: flag({ name: 'pod-certificate-signer', env: 'CITADEL_POD_CERTIFICATE_SIGNER', default: 'citadel.io/workload', help: 'Signer name for kubelet-native delivery: PodCertificateRequests signed and the ClusterTrustBundle published under it (<domain>/<name>).', parse: (raw: string) => validateSignerName(raw) }),
  podCertificates: flag({ name: 'pod-certificates', env: 'CITADEL_POD_CERTIFICATES', default: 'true', help: 'Sign PodCertificateRequests for --pod-certificate-signer (leader; needs the PodCertificateRequest API, Kubernetes 1.35+ with the beta enabled).', parse: parse.bool }),
  clusterTrustBundle: flag({ name: 'cluster-trust-bundle', env: 'CITADEL_CLUSTER_TRUST_BUNDLE', default: 'true', help: 'Publish the trust bundle as the ClusterTrustBundle linked to --pod-certificate-signer (leader; needs the ClusterTrustBundle API).', parse: parse.bool }),
  authorizationPolicies: flag({
    name: 'authorization-policies', env: 'CITADEL_AUTHORIZATION_POLICIES', default: 'true',
    help: 'Compile AuthorizationPolicies (security.istio.io) into a citadel-authz ConfigMap per namespace and write each policy\'s status; needs the CRD (deploy/crds).',
    parse: parse.bool,
  }),
  controllers: flag({ name: 'controllers', env: 'CITADEL_CONTROLLERS', default: 'true', help: 'Run the leader-elected controllers (root ConfigMaps, ServiceAccount Secrets, self-signed root rotation).', parse: parse.bool }),
  podName: flag({ name: 'pod-name', env: 'POD_NAME', help: 'This replica\'s name in the leader Lease. Default: the host name.', parse: parse.string }),
  leaseDuration: flag({ name: 'lease-duration', env: 'CITADEL_LEASE_DURATION', default: '15s', help: 'Leader Lease duration (a dead leader is replaced after about this long).', parse: parse.duration }),
  leaseRenewDeadline: flag({ name: 'lease-renew-deadline', env: 'CITADEL_LEASE_RENEW_DEADLINE', default: '10s', help: 'A leader that cannot renew for this long stops writing.', parse: parse.duration }),
  leaseRetryPeriod: flag({ name: 'lease-retry-period', env: 'CITADEL_LEASE_RETRY_PERIOD', default: '2s', help: 'How often candidates try and the leader renews.', parse: parse.duration }),
  crlValidity: flag({ name: 'crl-validity', env: 'CITADEL_CRL_VALIDITY', default: '24h', help: 'nextUpdate - thisUpdate of the CRLs the CA signs; they are re-signed at half of it. Envoy refuses every handshake once a CRL has expired.', parse: parse.duration }),
  jwtSvidTtl: flag({ name: 'jwt-svid-ttl', env: 'CITADEL_JWT_SVID_TTL', default: '5m', help: 'JWT-SVID lifetime when the request asks for none.', parse: parse.duration }),
  maxJwtSvidTtl: flag({ name: 'max-jwt-svid-ttl', env: 'CITADEL_MAX_JWT_SVID_TTL', default: '1h', help: 'Longest JWT-SVID lifetime a request may ask for (longer: INVALID_ARGUMENT).', parse: parse.duration }),
  jwtKeyRotation: flag({ name: 'jwt-key-rotation', env: 'CITADEL_JWT_KEY_ROTATION', default: '24h', help: 'JWT-SVID signing key period: each key is published one period before it signs and one period after (at least --max-jwt-svid-ttl).', parse: parse.duration }),
  bundleEndpointAddress: flag({ name: 'bundle-endpoint-address', env: 'CITADEL_BUNDLE_ENDPOINT_ADDRESS', help: 'SPIFFE bundle endpoint (https_spiffe, serving certificate of the CA) listen address, e.g. :8443. Default: off.', parse: parse.address }),
  bundleRefreshHint: flag({ name: 'bundle-refresh-hint', env: 'CITADEL_BUNDLE_REFRESH_HINT', default: '5m', help: 'spiffe_refresh_hint of the published SPIFFE bundle.', parse: parse.duration }),
  shutdownGrace: flag({ name: 'shutdown-grace', env: 'CITADEL_SHUTDOWN_GRACE', default: '10s', help: 'On SIGTERM, how long in-flight calls may take to finish.', parse: parse.duration }),
  logLevel: flag({ name: 'log-level', env: 'LOG_LEVEL', default: 'info', help: 'Log level.', parse: parse.oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent') }),
};

export type CaConfig = ConfigOf<typeof caFlags>;

/** Cross-flag checks that a single flag's parser cannot make. @throws CitadelError CONFIG_INVALID naming the flag. */
export function checkCaConfig(c: CaConfig): void {
  if (c.workloadCertTtl > c.maxWorkloadCertTtl) throw flagError('workload-cert-ttl', 'must not exceed --max-workload-cert-ttl');
  if (c.jwtSvidTtl > c.maxJwtSvidTtl) throw flagError('jwt-svid-ttl', 'must not exceed --max-jwt-svid-ttl');
  if (c.maxJwtSvidTtl > c.jwtKeyRotation) throw flagError('max-jwt-svid-ttl', 'must not exceed --jwt-key-rotation (a key stays published one period after it stops signing)');
  if (c.bundleRefreshHint < 1000) throw flagError('bundle-refresh-hint', 'must be at least 1s');
  if (!(c.leaseRetryPeriod < c.leaseRenewDeadline && c.leaseRenewDeadline < c.leaseDuration)) {
    throw flagError('lease-renew-deadline', 'needs --lease-retry-period < --lease-renew-deadline < --lease-duration');
  }
}
