/**
 * The body of `citadel agent` (agent.ts listens on the SDS socket before this module and its dependencies load):
 * builds the secret sources (CA rotation, or file-mounted certificates), the agent's socket (SDS, ECDS, Workload API)
 * on the already listening SDS socket, and the status server, then runs until SIGTERM/SIGINT and shuts down in order:
 * SDS streams end cleanly first (Envoy keeps its secrets and reconnects to the next agent), then rotation and the
 * status port.
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
import { DEFAULT_FILE_CERTS_DIR, DEFAULT_POD_TRUST_BUNDLE, type AgentConfig } from '../config/agent.js';
import { formatDuration } from '../config/flags.js';
import { createCaClient, hostOfAddress } from '../grpc/client.js';
import { prometheusWorkloadApiMetrics } from '../grpc/workload-api-metrics.js';
import { workloadApiServiceBinding, type WorkloadApiBinding } from '../grpc/workload-api-server.js';
import { CitadelError } from '../errors.js';
import { createLogger } from '../log.js';
import { startAgentSocket } from './agent-socket.js';
import type { UnixListener } from '../grpc/unix-listener.js';
import { RUNTIME, untilAborted, type CommandIO } from './command.js';

/** Runs the agent until `io.signal` aborts, serving the agent's socket on `sdsListener`; resolves with the exit code. */
export async function runAgent(config: AgentConfig, io: CommandIO, sdsListener: UnixListener): Promise<number> {
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
    // The CA signs while the rest (Workload API, ECDS, SDS, status server: ~100 ms of CPU) is built.
    await cache.whenRequested();
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
      socketPath: config.sdsSocket, listener: sdsListener, store: secrets, log, clock, registry: metrics.registry,
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
}
