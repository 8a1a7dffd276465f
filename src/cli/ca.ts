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
import { caFlags, checkCaConfig, type CaConfig } from '../config/ca.js';
import { formatAddress } from '../config/flags.js';
import { startControllers, type Controllers } from '../controllers/index.js';
import { CitadelError } from '../errors.js';
import { caServiceBinding } from '../grpc/ca-service.js';
import { jwtSvidServiceBinding } from '../grpc/jwt-svid-service.js';
import { ReloadableServerCredentials, startGrpcServer } from '../grpc/server.js';
import { apiStatus, connectKube, isForbidden, servedCertificatesV1beta1, type KubeClients } from '../kube/client.js';
import { canI, createNamespaceSecrets, watchSecret, type SecretWatch } from '../kube/secrets.js';
import { createTokenReviewer } from '../kube/tokenreview.js';
import { createLogger, type Logger } from '../log.js';
import { workloadSpiffeId } from '../pki/index.js';
import { startStatusServer } from '../status-server.js';
import { defineCommand, RUNTIME, untilAborted } from './command.js';

export const CACERTS_SECRET_NAME = 'cacerts';

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
