/**
 * `citadel agent`: the composition root of the workload agent. Builds the secret sources (CA rotation, or
 * file-mounted certificates), the SDS server Envoy talks to over a Unix socket, and the status server, then runs
 * until SIGTERM/SIGINT and shuts down in order: SDS streams end cleanly first (Envoy keeps its secrets and
 * reconnects to the next agent), then rotation and the status port.
 *
 * Relative paths (Istio's `./var/run/secrets/...` defaults) resolve against the working directory, so several
 * agents can run side by side, each in its own pod root.
 */
import path from 'node:path';
import { createCaIssuer, type CsrClientFactory } from '../agent/ca-issuer.js';
import { watchCrlFile } from '../agent/crl-file.js';
import { createFileCertSource, hasMountedCerts } from '../agent/file-certs.js';
import { watchAuthzFiles } from '../agent/authz/config-source.js';
import { createEcdsService } from '../agent/authz/ecds-service.js';
import { createAgentMetrics } from '../agent/metrics.js';
import { watchJwtBundle } from '../agent/workload-api/jwt-bundle.js';
import { createJwtSvidCache, type JwtSvidMinter } from '../agent/workload-api/jwt-cache.js';
import { createWorkloadApi } from '../agent/workload-api/service.js';
import { fileSecretResolver } from '../agent/sds/file-resolver.js';
import { SecretStore } from '../agent/secret-store.js';
import { createSecretCache } from '../agent/secret-cache.js';
import { startStatusServer } from '../status-server.js';
import { systemClock } from '../clock.js';
import { flag, formatDuration, parse, type ConfigOf } from '../config/flags.js';
import { createCaClient, hostOfAddress } from '../grpc/client.js';
import { prometheusWorkloadApiMetrics } from '../grpc/workload-api-metrics.js';
import { workloadApiServiceBinding, type WorkloadApiBinding } from '../grpc/workload-api-server.js';
import { CitadelError } from '../errors.js';
import { createLogger } from '../log.js';
import { KEY_TYPES, type KeyType } from '../pki/index.js';
import { startAgentSocket } from './agent-socket.js';
import { defineCommand, RUNTIME, untilAborted } from './command.js';

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

export const agentCommand = defineCommand({
  name: 'agent',
  usage: 'citadel agent [flags]',
  summary: 'Workload agent: key + CSR to the CA, Envoy SDS (default, ROOTCA, file-cert:, file-root:) and ECDS (RBAC from AuthorizationPolicies) over a Unix socket, rotation.',
  flags: agentFlags,
  async run(config, io) {
    const log = createLogger({ level: config.logLevel, name: 'citadel-agent' });
    const clock = systemClock;
    const cwd = process.cwd();
    const abs = (p: string) => path.resolve(cwd, p);
    const metrics = createAgentMetrics({ clock });
    // One store: the sources publish default and ROOTCA into it, resolvers fill file-cert:/file-root:, SDS serves it.
    const secrets = new SecretStore({
      clock,
      log: log.child({ component: 'secrets' }),
      metrics,
      resolvers: [fileSecretResolver({ clock, log: log.child({ component: 'sds-files' }) })],
    });

    if (config.podCertificateBundle && config.fileCerts) throw new CitadelError('CONFIG_INVALID', 'invalid configuration: --pod-certificate-bundle: cannot be combined with --file-certs');
    if (config.podTrustBundle && !config.podCertificateBundle) throw new CitadelError('CONFIG_INVALID', 'invalid configuration: --pod-trust-bundle: needs --pod-certificate-bundle');
    const credentialBundle = config.podCertificateBundle
      ? { credentialBundle: abs(config.podCertificateBundle), trustBundle: abs(config.podTrustBundle ?? path.join(path.dirname(config.podCertificateBundle), DEFAULT_POD_TRUST_BUNDLE)) }
      : undefined;
    const fileDir = credentialBundle ? undefined : config.fileCerts ?? (hasMountedCerts(abs(DEFAULT_FILE_CERTS_DIR)) ? DEFAULT_FILE_CERTS_DIR : undefined);
    const crlWatcher = await watchCrlFile({ path: abs(config.crlFile), secrets, clock, log: log.child({ component: 'crl' }), metrics });
    let stopSource: () => void;
    let minter: JwtSvidMinter = {
      mintJwtSvid: () => Promise.reject(new CitadelError('UPSTREAM_UNAVAILABLE', 'JWT-SVIDs come from the CA; this agent serves mounted certificates')),
    };
    if (fileDir || credentialBundle) {
      const source = createFileCertSource({ ...(credentialBundle ? { credentialBundle } : { dir: abs(fileDir!) }), secrets, clock, log: log.child({ component: 'file-certs' }), metrics });
      await source.start();
      stopSource = () => {
        source.stop();
        crlWatcher.close();
      };
    } else {
      const serverName = config.caServerName ?? hostOfAddress(config.caAddress);
      const clientFactory: CsrClientFactory = (creds) =>
        createCaClient({
          address: config.caAddress,
          serverName,
          rootCaPem: creds.rootCaPem,
          ...(creds.clientCertChainPem ? { clientCertChainPem: creds.clientCertChainPem, clientKeyPem: creds.clientKeyPem } : {}),
          ...(config.clusterId ? { headers: { ClusterID: config.clusterId } } : {}),
        });
      const issuer = createCaIssuer({
        clientFactory,
        rootCertPath: abs(config.rootCert),
        tokenPath: abs(config.tokenFile),
        trustDomain: config.trustDomain,
        namespace: config.namespace,
        serviceAccount: config.serviceAccount,
        certTtlMs: config.certTtl,
        keyType: config.keyType,
        clock,
        log: log.child({ component: 'ca-client' }),
        metrics,
        currentCertificate: () => secrets.certificate(),
      });
      minter = issuer;
      const cache = createSecretCache({ issuer, secrets, rootCertPath: abs(config.rootCert), tokenPath: abs(config.tokenFile), graceRatio: config.graceRatio, clock, log: log.child({ component: 'rotation' }), metrics });
      log.info(
        { caAddress: config.caAddress, serverName, trustDomain: config.trustDomain, certTtl: formatDuration(config.certTtl), graceRatio: config.graceRatio, keyType: config.keyType },
        'requesting workload certificates from the CA',
      );
      await cache.start();
      stopSource = () => {
        cache.stop();
        crlWatcher.close();
      };
    }

    const authz = watchAuthzFiles({ policyFile: abs(config.authzPolicyFile), labelsFile: abs(config.podLabelsFile), clock, log: log.child({ component: 'authz' }) });
    await authz.start();
    const ecds = createEcdsService({ source: authz, log: log.child({ component: 'ecds' }) });
    let sds;
    let status;
    let workloadApi: WorkloadApiBinding | undefined;
    let jwtBundle;
    try {
      if (config.workloadApi) {
        jwtBundle = await watchJwtBundle({ path: abs(config.spiffeBundle), clock, log: log.child({ component: 'jwt-bundle' }) });
        const api = createWorkloadApi({
          secrets,
          jwtSvids: createJwtSvidCache({ minter, ttlMs: config.jwtSvidTtl, clock, log: log.child({ component: 'jwt-svids' }) }),
          jwtBundle,
          trustDomain: config.trustDomain,
          clock,
        });
        workloadApi = workloadApiServiceBinding({ api, log: log.child({ component: 'workload-api' }), metrics: prometheusWorkloadApiMetrics(metrics.registry) });
      }
      sds = await startAgentSocket({
        socketPath: config.sdsSocket, store: secrets, log, clock, registry: metrics.registry,
        ...(workloadApi ? { workloadApi } : {}), ecds: { service: ecds, log: log.child({ component: 'ecds' }) },
      });
      status = await startStatusServer({
        address: config.statusAddress,
        registry: metrics.registry,
        metricsPaths: ['/metrics', '/stats/prometheus'],
        log: log.child({ component: 'status' }),
        notReadyReason: () => {
          const cert = secrets.certificate();
          if (!cert) return 'no workload certificate (default) yet';
          if (!secrets.trustBundle()) return 'no trust bundle (ROOTCA) yet';
          if (cert.notAfter <= clock.now()) return 'the workload certificate has expired';
          return undefined;
        },
      });
    } catch (err) {
      stopSource();
      workloadApi?.close();
      jwtBundle?.close();
      ecds.close();
      authz.stop();
      await sds?.stop();
      secrets.close();
      throw err;
    }
    log.info({ sdsSocket: sds.socketPath, ...(workloadApi ? { spiffeEndpointSocket: `unix://${path.resolve(sds.socketPath)}` } : {}), statusPort: status.port, mode: credentialBundle ? 'pod-certificate' : fileDir ? 'file-mounted' : 'ca', runtime: RUNTIME }, 'agent running');

    log.info({ reason: await untilAborted(io.signal) }, 'shutting down');
    workloadApi?.close();
    jwtBundle?.close();
    ecds.close();
    authz.stop();
    await sds.stop();
    stopSource();
    secrets.close();
    await status.close();
    log.info('agent stopped');
    return 0;
  },
});
