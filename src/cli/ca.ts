/**
 * `citadel ca`: the composition root of the certificate authority. In order:
 *   monitoring (/healthz answers while the rest starts; /readyz waits for key material) ->
 *   Kubernetes client + SelfSubjectAccessReview (may we create TokenReviews?) ->
 *   key material (plugged-in `cacerts` Secret or --cacerts-dir files; else self-signed `istio-ca-secret`) ->
 *   serving certificate issued by the CA itself -> gRPC Istio CSR API -> controllers (leader-elected).
 * SIGTERM/SIGINT: stop accepting calls, let in-flight calls finish (up to --shutdown-grace), stop the rest, exit 0.
 */
import { hostname } from 'node:os';
import { Registry } from '../prom.js';
import { createAuthenticator, createTokenAuthenticator } from '../ca/authn.js';
import { createCsrService } from '../ca/csr-service.js';
import { Keyring } from '../ca/keyring.js';
import { createCaMetrics } from '../ca/metrics.js';
import { cacertsFromSecret, hasPluggedFiles, readCacertsDir, startDirectorySource, startSecretSource } from '../ca/plugged.js';
import { createKeyedRateLimiter } from '../rate-limit.js';
import { REVOCATIONS_KEY, REVOCATIONS_SECRET_NAME } from '../ca/revocation-list.js';
import { createRevocationMetrics, Revocations } from '../ca/revocation.js';
import { createSigningPool } from '../ca/signing-pool.js';
import { CA_SECRET_NAME, startSelfSigned } from '../ca/self-signed.js';
import { startBundleEndpoint } from '../ca/bundle-endpoint.js';
import { createJwtKeySet, createSpiffeBundleSource, mintJwtSvid } from '../ca/jwt-svid.js';
import { createCallTracker, createCertificateHandler, createJwtSvidHandler } from '../ca/server.js';
import { createServingCertManager, serviceDnsNames } from '../ca/serving-cert.js';
import { systemClock } from '../clock.js';
import { flag, formatAddress, parse, parseDuration, type ConfigOf } from '../config/flags.js';
import { parseLabelSelector, SA_SECRETS_MODES, startControllers, validateSignerName, type Controllers, type SaSecretsMode } from '../controllers/index.js';
import { CitadelError } from '../errors.js';
import { caServiceBinding } from '../grpc/ca-service.js';
import { jwtSvidServiceBinding } from '../grpc/jwt-svid-service.js';
import { ReloadableServerCredentials, startGrpcServer } from '../grpc/server.js';
import { apiStatus, connectKube, isForbidden, servedCertificatesV1beta1, type KubeClients } from '../kube/client.js';
import { canI, createNamespaceSecrets, watchSecret, type SecretWatch } from '../kube/secrets.js';
import { createTokenReviewer } from '../kube/tokenreview.js';
import { createLogger, type Logger } from '../log.js';
import { KEY_TYPES, validateTrustDomain, workloadSpiffeId, type KeyType } from '../pki/index.js';
import { startStatusServer } from '../status-server.js';
import { defineCommand, RUNTIME, untilAborted } from './command.js';

/** A duration that may be 0 (meaning "off"). */
const durationOrZero = (raw: string): number => {
  const ms = parseDuration(raw);
  if (ms < 0) throw new Error('must not be negative');
  return ms;
};

export const CACERTS_SECRET_NAME = 'cacerts';

export const caFlags = {
  namespace: flag({ name: 'namespace', env: 'POD_NAMESPACE', default: 'citadel-system', help: 'Namespace of the CA: where cacerts, istio-ca-secret and the leader Lease live.', parse: parse.string }),
  kubeconfig: flag({ name: 'kubeconfig', env: 'KUBECONFIG', help: 'Kubeconfig file. Default: the in-cluster ServiceAccount config.', parse: parse.string }),
  trustDomain: flag({ name: 'trust-domain', env: 'TRUST_DOMAIN', default: 'cluster.local', help: 'Trust domain of the identities issued.', parse: (raw: string) => validateTrustDomain(raw) }),
  grpcAddress: flag({ name: 'grpc-address', env: 'CITADEL_GRPC_ADDRESS', default: ':15012', help: 'Istio CSR API (gRPC over TLS) listen address.', parse: parse.address }),
  monitoringAddress: flag({ name: 'monitoring-address', env: 'CITADEL_MONITORING_ADDRESS', default: ':15014', help: 'HTTP /metrics, /healthz, /readyz listen address.', parse: parse.address }),
  cacertsDir: flag({ name: 'cacerts-dir', env: 'ROOT_CA_DIR', default: '/etc/cacerts', help: 'Plugged-in CA files (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem, or tls.crt, tls.key, ca.crt); used when the cacerts Secret does not exist.', parse: parse.string }),
  pluggedRootPublishDelay: flag({ name: 'plugged-root-publish-delay', env: 'CITADEL_PLUGGED_ROOT_PUBLISH_DELAY', default: '2m', help: 'When new plugged-in material signs under a root the trust bundle lacks, how long that root is published (root ConfigMaps) before the material signs; pods see ConfigMap changes when kubelet syncs their volumes (about a minute). 0 switches at once.', parse: durationOrZero }),
  cacertsPollInterval: flag({ name: 'cacerts-poll-interval', env: 'CITADEL_CACERTS_POLL_INTERVAL', default: '10s', help: 'How often --cacerts-dir is re-read (file events trigger a reload sooner).', parse: parse.duration }),
  tokenAudiences: flag({ name: 'token-audiences', env: 'TOKEN_AUDIENCES', default: 'istio-ca', help: 'Audiences a bearer token must be valid for (comma-separated).', parse: (raw: string) => {
    const list = parse.list(raw);
    if (list.length === 0) throw new Error('needs at least one audience');
    return list;
  } }),
  tokenReviewCacheTtl: flag({ name: 'token-review-cache-ttl', env: 'CITADEL_TOKEN_REVIEW_CACHE_TTL', default: '10s', help: 'How long a successful TokenReview is reused (never beyond the token expiry); 0 disables.', parse: durationOrZero }),
  workloadCertTtl: flag({ name: 'workload-cert-ttl', env: 'DEFAULT_WORKLOAD_CERT_TTL', default: '24h', help: 'Certificate lifetime when the request asks for none.', parse: parse.duration }),
  maxWorkloadCertTtl: flag({ name: 'max-workload-cert-ttl', env: 'MAX_WORKLOAD_CERT_TTL', default: '2160h', help: 'Longest certificate lifetime a request may ask for (longer: INVALID_ARGUMENT).', parse: parse.duration }),
  selfSignedKeyType: flag({ name: 'self-signed-key-type', env: 'CITADEL_SELF_SIGNED_KEY_TYPE', default: 'ecdsa-p256', help: `Key type of a new self-signed root (${KEY_TYPES.join(', ')}); Istio uses rsa-2048.`, parse: parse.oneOf<KeyType>(...KEY_TYPES) }),
  selfSignedCaCertTtl: flag({ name: 'self-signed-ca-cert-ttl', env: 'CITADEL_SELF_SIGNED_CA_CERT_TTL', default: '87600h', help: 'Lifetime of a new self-signed root (10 years, as Istio).', parse: parse.duration }),
  selfSignedRootCheckInterval: flag({ name: 'self-signed-root-check-interval', env: 'CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL', default: '1h', help: 'How often the leader checks whether the self-signed root needs rotating; 0 disables rotation.', parse: durationOrZero }),
  selfSignedRootGracePercent: flag({ name: 'self-signed-root-grace-percent', env: 'CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE', default: '20', help: 'Rotate the self-signed root when less than this percentage of its life remains.', parse: parse.int(1, 99) }),
  selfSignedRootPublishDelay: flag({ name: 'self-signed-root-publish-delay', env: 'CITADEL_SELF_SIGNED_ROOT_PUBLISH_DELAY', default: '10m', help: 'How long a rotated self-signed root is published in the trust bundle before it signs (it then signs from the next check); 0 switches at once.', parse: durationOrZero }),
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

function configError(flagName: string, message: string): CitadelError {
  return new CitadelError('CONFIG_INVALID', `invalid configuration: --${flagName}: ${message}`);
}

/** Cross-flag checks that a single flag's parser cannot make. @throws CitadelError CONFIG_INVALID naming the flag. */
export function checkCaConfig(c: CaConfig): void {
  if (c.workloadCertTtl > c.maxWorkloadCertTtl) throw configError('workload-cert-ttl', 'must not exceed --max-workload-cert-ttl');
  if (c.jwtSvidTtl > c.maxJwtSvidTtl) throw configError('jwt-svid-ttl', 'must not exceed --max-jwt-svid-ttl');
  if (c.maxJwtSvidTtl > c.jwtKeyRotation) throw configError('max-jwt-svid-ttl', 'must not exceed --jwt-key-rotation (a key stays published one period after it stops signing)');
  if (c.bundleRefreshHint < 1000) throw configError('bundle-refresh-hint', 'must be at least 1s');
  if (!(c.leaseRetryPeriod < c.leaseRenewDeadline && c.leaseRenewDeadline < c.leaseDuration)) {
    throw configError('lease-renew-deadline', 'needs --lease-retry-period < --lease-renew-deadline < --lease-duration');
  }
}

function describeKubeError(err: unknown): string {
  const status = apiStatus(err);
  const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  return status ? `HTTP ${status}` : message;
}

/** At start: may this identity create TokenReviews? Without that no token can ever be verified. */
async function checkTokenReviewPermission(kube: KubeClients): Promise<void> {
  let verdict;
  try {
    verdict = await canI(kube, { verb: 'create', group: 'authentication.k8s.io', resource: 'tokenreviews' });
  } catch (err) {
    throw new CitadelError('UPSTREAM_UNAVAILABLE', `cannot reach the Kubernetes API to check permissions (${describeKubeError(err)})`);
  }
  if (!verdict.allowed) {
    throw new CitadelError(
      'CONFIG_INVALID',
      'this ServiceAccount may not create tokenreviews.authentication.k8s.io, so no workload token could be verified; ' +
        'bind it to the citadel ClusterRole (deploy/base) or a role granting "create" on "tokenreviews"',
      verdict.reason,
    );
  }
}

/**
 * Which parts of kubelet-native delivery can run: those asked for whose API the apiserver serves. Both APIs are beta
 * and off by default in 1.35/1.36, so a part whose API is missing is switched off (`unserved` names its flag)
 * instead of failing the CA.
 */
export function podCertificateParts(
  wanted: { readonly podCertificates: boolean; readonly clusterTrustBundle: boolean },
  served: ReadonlySet<string>,
): { sign: boolean; trustBundle: boolean; unserved: Array<{ flag: string; resource: string }> } {
  const unserved: Array<{ flag: string; resource: string }> = [];
  const part = (asked: boolean, resource: string, flagName: string) => {
    if (asked && !served.has(resource)) unserved.push({ flag: flagName, resource });
    return asked && served.has(resource);
  };
  const sign = part(wanted.podCertificates, 'podcertificaterequests', 'pod-certificates');
  const trustBundle = part(wanted.clusterTrustBundle, 'clustertrustbundles', 'cluster-trust-bundle');
  return { sign, trustBundle, unserved };
}

async function podCertificateOptions(config: CaConfig, kube: KubeClients, log: Logger) {
  if (!config.podCertificates && !config.clusterTrustBundle) return undefined;
  let served: Set<string>;
  try {
    served = await servedCertificatesV1beta1(kube);
  } catch (err) {
    throw new CitadelError('UPSTREAM_UNAVAILABLE', `cannot ask the Kubernetes API which certificates.k8s.io/v1beta1 resources it serves (${describeKubeError(err)})`);
  }
  const { sign, trustBundle, unserved } = podCertificateParts(config, served);
  for (const { flag: flagName, resource } of unserved) {
    log.warn({ resource: `certificates.k8s.io/v1beta1/${resource}` }, `the apiserver does not serve ${resource}; --${flagName} has no effect (enable the beta API and feature gate, see docs/pod-certificates.md)`);
  }
  return { signerName: config.podCertificateSigner, sign, trustBundle, maxTtlMs: config.maxWorkloadCertTtl };
}

interface MaterialHandle {
  readonly description: string;
  stop(): Promise<void>;
}

/** Picks the key material source and installs the first material. @throws CitadelError CA_MATERIAL_INVALID. */
async function startKeyMaterial(opts: {
  config: CaConfig;
  kube: KubeClients;
  keyring: Keyring;
  log: Logger;
  metrics: ReturnType<typeof createCaMetrics>;
  canWrite: () => boolean;
  revocations: Revocations;
}): Promise<MaterialHandle> {
  const { config, kube, keyring, metrics } = opts;
  const onCrl = (text: string | undefined, source: string) => void opts.revocations.setOperatorCrl(text, source);
  const clock = systemClock;
  const log = opts.log.child({ component: 'keyring' });
  const secrets = createNamespaceSecrets(kube, config.namespace);
  const readSecret = async (name: string) => {
    try {
      return await secrets.read(name);
    } catch (err) {
      if (isForbidden(err)) {
        throw new CitadelError('CONFIG_INVALID', `may not read Secret ${config.namespace}/${name}; the CA needs get/list/watch on Secrets in its namespace (deploy/base Role)`);
      }
      throw new CitadelError('UPSTREAM_UNAVAILABLE', `cannot read Secret ${config.namespace}/${name} (${describeKubeError(err)})`);
    }
  };
  const watch = (name: string, onChange: Parameters<typeof watchSecret>[0]['onChange']): SecretWatch =>
    watchSecret({ kube, namespace: config.namespace, name, clock, log, onChange });

  const cacerts = await readSecret(CACERTS_SECRET_NAME);
  if (cacerts && hasPluggedFiles(cacertsFromSecret(cacerts))) {
    const src = startSecretSource({ keyring, clock, log, metrics, publishDelayMs: config.pluggedRootPublishDelay, initial: cacerts, onCrl });
    const w = watch(CACERTS_SECRET_NAME, src.onSecret);
    await w.start();
    const current = w.current();
    if (current) src.onSecret(current);
    return src.attach(w);
  }
  const files = readCacertsDir(config.cacertsDir);
  if (hasPluggedFiles(files)) {
    return startDirectorySource({ keyring, clock, log, metrics, onCrl, publishDelayMs: config.pluggedRootPublishDelay, dir: config.cacertsDir, pollIntervalMs: config.cacertsPollInterval });
  }
  let source;
  try {
    source = await startSelfSigned({
      keyring,
      secrets,
      clock,
      log,
      metrics,
      canWrite: opts.canWrite,
      namespace: config.namespace,
      options: {
        trustDomain: config.trustDomain,
        keyType: config.selfSignedKeyType,
        rootTtlMs: config.selfSignedCaCertTtl,
        checkIntervalMs: config.selfSignedRootCheckInterval,
        gracePercent: config.selfSignedRootGracePercent,
        publishDelayMs: config.selfSignedRootPublishDelay,
      },
    });
  } catch (err) {
    if (err instanceof CitadelError) throw err;
    if (isForbidden(err)) throw new CitadelError('CONFIG_INVALID', `may not read or create Secret ${config.namespace}/${CA_SECRET_NAME} (deploy/base Role)`);
    throw new CitadelError('UPSTREAM_UNAVAILABLE', `cannot load or create Secret ${config.namespace}/${CA_SECRET_NAME} (${describeKubeError(err)})`);
  }
  const w = watch(CA_SECRET_NAME, (s) => source.onSecret(s));
  await w.start();
  const seen = w.current();
  if (seen) source.onSecret(seen);
  return {
    description: source.description,
    async stop() {
      await source.stop();
      await w.stop();
    },
  };
}

export const caCommand = defineCommand({
  name: 'ca',
  usage: 'citadel ca [flags]',
  summary: 'Certificate authority: Istio CSR API over gRPC+TLS (:15012), root ConfigMaps and ServiceAccount Secrets (leader-elected), metrics on :15014.',
  flags: caFlags,
  async run(config, io) {
    checkCaConfig(config);
    const clock = systemClock;
    const log = createLogger({ level: config.logLevel as 'info', name: 'citadel-ca' });
    const registry = new Registry();
    const metrics = createCaMetrics(registry);
    metrics.ready.set(0);
    // CreateCertificate calls in progress: a call alone is signed inline; shutdown waits for calls only.
    const csrCalls = createCallTracker({ quietMs: 1_000, now: () => clock.now() });
    const signingPool = config.signingWorkers > 0
      ? createSigningPool({ size: config.signingWorkers, log: log.child({ component: 'signing' }), signInlineWhen: csrCalls.alone })
      : undefined;
    const keyring = new Keyring({ clock, log: log.child({ component: 'keyring' }), maxWorkloadTtlMs: config.maxWorkloadCertTtl, metrics, csrSigner: signingPool });
    // Cleanups run in reverse: the pool stops last, after the gRPC server has let in-flight calls finish.
    const cleanups: Array<() => Promise<void> | void> = [() => signingPool?.close(), () => keyring.close()];
    // Ready once key material is loaded and the CSR API listens; not ready again from the moment shutdown begins.
    let accepting = false;
    const cleanup = async () => {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch (err) {
          log.warn({ err }, 'error while stopping');
        }
      }
    };

    try {
      let monitoring;
      try {
        monitoring = await startStatusServer({
          address: config.monitoringAddress,
          registry,
          notReadyReason: () => (!keyring.isReady() ? 'CA key material not loaded' : accepting ? undefined : 'the CSR API is not serving (starting or shutting down)'),
          log: log.child({ component: 'monitoring' }),
        });
      } catch (err) {
        throw new CitadelError('CONFIG_INVALID', `invalid configuration: --monitoring-address: cannot listen on ${formatAddress(config.monitoringAddress)}`, (err as Error).message);
      }
      cleanups.push(() => monitoring.close());

      let kube: KubeClients;
      try {
        kube = connectKube(config.kubeconfig);
      } catch (err) {
        throw new CitadelError('CONFIG_INVALID', `invalid configuration: --kubeconfig (KUBECONFIG): cannot load ${config.kubeconfig ?? 'the in-cluster config'}`, (err as Error).message);
      }
      await checkTokenReviewPermission(kube);

      // Revocation: refusals at issuance (every replica) and the CRLs the leader publishes.
      const revocations = new Revocations({ keyring, clock, log: log.child({ component: 'revocation' }), metrics: createRevocationMetrics(registry), validityMs: config.crlValidity });
      keyring.setIssuanceGuard(revocations.guard);
      cleanups.push(() => revocations.close());

      let controllers: Controllers | undefined;
      const material = await startKeyMaterial({ config, kube, keyring, log, metrics, revocations, canWrite: () => !config.controllers || (controllers?.isLeader() ?? false) });
      cleanups.push(() => material.stop());

      const revocationList = watchSecret({
        kube,
        namespace: config.namespace,
        name: REVOCATIONS_SECRET_NAME,
        clock,
        log,
        onChange: (s) => void revocations.setRevocationList(s?.data[REVOCATIONS_KEY], `secret ${config.namespace}/${REVOCATIONS_SECRET_NAME}`),
      });
      await revocationList.start();
      const listNow = revocationList.current();
      if (listNow) revocations.setRevocationList(listNow.data[REVOCATIONS_KEY], `secret ${config.namespace}/${REVOCATIONS_SECRET_NAME}`);
      cleanups.push(() => revocationList.stop());

      // JWT-SVID keys and the SPIFFE bundle (root ConfigMaps and the bundle endpoint publish it).
      const jwtKeys = createJwtKeySet({ keyring, trustDomain: config.trustDomain, rotationMs: config.jwtKeyRotation, retainMs: config.maxJwtSvidTtl, clock });
      const spiffeBundle = createSpiffeBundleSource({ keyring, keys: jwtKeys, refreshHintSeconds: Math.round(config.bundleRefreshHint / 1000), clock, log: log.child({ component: 'spiffe-bundle' }) });
      cleanups.push(() => spiffeBundle.stop());

      // The serving certificate, swapped into the TLS credentials (and the bundle endpoint) on every re-issue.
      const tls: { credentials?: ReloadableServerCredentials; bundleEndpoint?: { updateCertificate(m: typeof first): void } } = {};
      const serving = createServingCertManager({
        keyring,
        dnsNames: serviceDnsNames(config.namespace, config.extraDnsNames),
        spiffeId: workloadSpiffeId(config.trustDomain, config.namespace, 'citadel'),
        ttlMs: Math.min(config.servingCertTtl, config.maxWorkloadCertTtl),
        clock,
        log: log.child({ component: 'serving-cert' }),
        onUpdate: (m) => {
          tls.credentials?.update(m);
          tls.bundleEndpoint?.updateCertificate(m);
        },
      });
      cleanups.push(() => serving.stop());
      const first = await serving.issue();
      const credentials = new ReloadableServerCredentials(first);
      tls.credentials = credentials;

      const trustDomain = () => config.trustDomain;
      const tokenAuthn = createTokenAuthenticator({
        reviewer: createTokenReviewer(kube),
        audiences: config.tokenAudiences,
        trustDomain,
        clock,
        cacheTtlMs: config.tokenReviewCacheTtl,
        metrics,
      });
      const authenticator = createAuthenticator({
        token: tokenAuthn,
        verificationMaterial: () => keyring.verificationMaterial(),
        serialRevoked: (serial) => revocations.serialRevoked(serial),
        trustDomain,
        clock,
        log: log.child({ component: 'authn' }),
        metrics,
      });
      const csrService = createCsrService({
        ca: keyring,
        policy: { defaultTtlMs: config.workloadCertTtl, maxTtlMs: config.maxWorkloadCertTtl, maxCsrBytes: config.maxRequestBytes },
        log: log.child({ component: 'csr' }),
        rateLimiter: createKeyedRateLimiter({ qps: config.csrRateLimitQps, burst: config.csrRateLimitBurst, clock }),
        metrics,
      });
      const grpcLog = log.child({ component: 'grpc' });
      // JWT-SVIDs: the same per-identity limit as certificates, counted separately.
      const jwtMinting = {
        keys: jwtKeys,
        policy: { defaultTtlMs: config.jwtSvidTtl, maxTtlMs: config.maxJwtSvidTtl, maxAudiences: 16 },
        clock,
        log: log.child({ component: 'jwt-svid' }),
        rateLimiter: createKeyedRateLimiter({ qps: config.csrRateLimitQps, burst: config.csrRateLimitBurst, clock }),
      };
      const server = await startGrpcServer({
        address: formatAddress(config.grpcAddress),
        credentials,
        services: [
          caServiceBinding({ createCertificate: createCertificateHandler({ authenticator, csrService, metrics, log: grpcLog, calls: csrCalls }), log: grpcLog }),
          jwtSvidServiceBinding({
            createJwtSvid: createJwtSvidHandler({
              authenticator,
              mint: (caller, req) => mintJwtSvid(jwtMinting, caller, req),
              metrics,
              log: grpcLog,
            }),
            log: grpcLog,
          }),
        ],
        maxReceiveMessageBytes: config.maxRequestBytes,
      });
      cleanups.push(async () => {
        await server.stop(config.shutdownGrace, csrCalls.inProgress);
      });
      accepting = true;

      let bundleEndpointPort: number | undefined;
      if (config.bundleEndpointAddress) {
        let endpoint;
        try {
          endpoint = await startBundleEndpoint({ address: config.bundleEndpointAddress, bundle: spiffeBundle, certificate: serving.current() ?? first, log: log.child({ component: 'bundle-endpoint' }) });
        } catch (err) {
          throw new CitadelError('CONFIG_INVALID', `invalid configuration: --bundle-endpoint-address: cannot listen on ${formatAddress(config.bundleEndpointAddress)}`, (err as Error).message);
        }
        tls.bundleEndpoint = endpoint;
        bundleEndpointPort = endpoint.port;
        cleanups.push(() => endpoint.close());
      }

      if (config.controllers) {
        const podCertificates = await podCertificateOptions(config, kube, log);
        controllers = startControllers({
          kube,
          ca: keyring,
          crl: revocations,
          spiffeBundle,
          clock,
          log,
          registry,
          namespace: config.namespace,
          trustDomain: config.trustDomain,
          identity: `${config.podName ?? hostname()}-${process.pid}`,
          saSecrets: config.saSecrets,
          authorizationPolicies: config.authorizationPolicies,
          namespaceSelector: config.namespaceSelector,
          excludedNamespaces: config.excludedNamespaces,
          leaseDurationMs: config.leaseDuration,
          renewDeadlineMs: config.leaseRenewDeadline,
          retryPeriodMs: config.leaseRetryPeriod,
          workloadCertTtlMs: config.workloadCertTtl,
          rootConfigMaps: config.rootConfigMaps,
          podCertificates,
        });
        const c = controllers;
        cleanups.push(() => c.stop());
      }

      log.info(
        {
          grpcPort: server.port,
          monitoringPort: monitoring.port,
          bundleEndpointPort,
          keyMaterial: material.description,
          trustDomain: config.trustDomain,
          namespace: config.namespace,
          controllers: config.controllers,
          runtime: RUNTIME,
        },
        'citadel ca serving',
      );

      const reason = await untilAborted(io.signal);
      accepting = false;
      log.info({ reason }, 'shutting down: no new calls, finishing in-flight ones');
      // Stop accepting first (and wait for in-flight calls), then everything else.
      if (!(await server.stop(config.shutdownGrace, csrCalls.inProgress))) {
        log.warn({ shutdownGraceMs: config.shutdownGrace }, 'calls still running after --shutdown-grace were given up');
      }
      await cleanup();
      log.info('stopped');
      return 0;
    } catch (err) {
      await cleanup();
      if (err instanceof CitadelError) log.error({ code: err.code, reason: err.message, detail: err.detail }, 'citadel ca cannot start');
      throw err;
    }
  },
});
