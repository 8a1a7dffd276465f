/**
 * Keeps Secret `istio.<sa>` right for every ServiceAccount of the selected namespaces. Key: `<namespace>/<sa>`.
 * Triggers: ServiceAccount and secret events, namespace label changes, trust bundle change, resync, and a
 * requeue at each certificate's rotation time. The private key is generated here, kept in memory only until
 * it is written into the Secret, and never logged.
 */
import type { CertificateAuthority } from '../ca/authority.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { ObjectWriter } from '../kube/writes.js';
import { generateKeyPair, privateKeyToPem, workloadSpiffeId, type KeyType } from '../pki/index.js';
import type { ControllerMetrics } from './metrics.js';
import { namespaceSkipReason, type NamespaceFilter } from './namespaces.js';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, type NamespaceObject, type OwnerReference, type SecretObject, type ServiceAccountObject } from './objects.js';
import { RetryLater, type ReconcileOutcome } from './queue.js';
import type { Cache, Reconciler } from './reconciler.js';
import {
  CERT_CHAIN_PEM,
  decideSaSecret,
  KEY_PEM,
  namespaceWantsSaSecrets,
  ROOT_CERT_PEM,
  rotationTime,
  SA_SECRET_TYPE,
  saSecretName,
  serviceAccountOfSecret,
  type SaSecretsMode,
} from './sa-secrets.js';

export const SA_SECRET_CONTROLLER = 'sa-secrets';

export interface SaSecretDeps {
  readonly namespaces: Cache<NamespaceObject>;
  readonly filter: NamespaceFilter;
  readonly serviceAccounts: Cache<ServiceAccountObject>;
  readonly secrets: Cache<SecretObject>;
  readonly ca: Pick<CertificateAuthority, 'trustBundlePem' | 'issueWorkload'>;
  readonly writer: ObjectWriter;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
  readonly mode: SaSecretsMode;
  readonly trustDomain: string;
  readonly certTtlMs: number;
  readonly gracePeriodRatio: number;
  readonly keyType: KeyType;
}

export const saKey = (namespace: string, serviceAccount: string) => `${namespace}/${serviceAccount}`;

export function splitSaKey(key: string): { namespace: string; serviceAccount: string } {
  const slash = key.indexOf('/');
  return { namespace: key.slice(0, slash), serviceAccount: key.slice(slash + 1) };
}

/** The key for a secret event, or undefined when the secret is not an `istio.<sa>` one. */
export function keyOfSecret(secret: SecretObject): string | undefined {
  const sa = serviceAccountOfSecret(secret.metadata?.name ?? '');
  const ns = secret.metadata?.namespace;
  return sa && ns ? saKey(ns, sa) : undefined;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

export function createSaSecretReconciler(deps: SaSecretDeps): Reconciler {
  const log = deps.log.child({ controller: SA_SECRET_CONTROLLER });
  const record = (action: string, outcome: string) => deps.metrics.writes.inc({ controller: SA_SECRET_CONTROLLER, action, outcome });

  /** Issues a fresh key and certificate and builds the Secret to write (keeping unrelated fields of `existing`). */
  const build = async (namespace: string, sa: string, owner: ServiceAccountObject, existing: SecretObject | undefined) => {
    const spiffeId = workloadSpiffeId(deps.trustDomain, namespace, sa);
    const { privateKey, publicKey } = await generateKeyPair(deps.keyType);
    const issued = deps.ca.issueWorkload({ publicKey, spiffeId, ttlMs: deps.certTtlMs });
    const chain = issued.chain.slice(0, -1).map((pem) => (pem.endsWith('\n') ? pem : `${pem}\n`)).join('');
    const bundle = issued.chain[issued.chain.length - 1]!;
    const ownerRef: OwnerReference = { apiVersion: 'v1', kind: 'ServiceAccount', name: sa, uid: owner.metadata?.uid ?? '' };
    const otherOwners = (existing?.metadata?.ownerReferences ?? []).filter((o) => o.kind !== 'ServiceAccount');
    const secret: SecretObject = {
      ...existing,
      type: SA_SECRET_TYPE,
      metadata: {
        ...existing?.metadata,
        name: saSecretName(sa),
        namespace,
        labels: { ...existing?.metadata?.labels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
        ownerReferences: [...otherOwners, ownerRef],
      },
      data: { ...existing?.data, [KEY_PEM]: b64(privateKeyToPem(privateKey)), [CERT_CHAIN_PEM]: b64(chain), [ROOT_CERT_PEM]: b64(bundle) },
    };
    return { secret, spiffeId, issued };
  };

  // At most one rotation per 30 s per secret (less for very short test TTLs).
  const minReissueMs = Math.min(30_000, deps.certTtlMs * deps.gracePeriodRatio);
  const requeueAt = (at: number): ReconcileOutcome => ({ requeueAfterMs: Math.max(0, at - deps.clock.now()) });

  return {
    name: SA_SECRET_CONTROLLER,
    allKeys() {
      const keys = new Set<string>();
      for (const sa of deps.serviceAccounts.list()) {
        const ns = sa.metadata?.namespace;
        const name = sa.metadata?.name;
        const namespace = ns ? deps.namespaces.get(ns) : undefined;
        if (ns && name && namespaceWantsSaSecrets(deps.mode, namespace) && !namespaceSkipReason(ns, namespace, deps.filter)) keys.add(saKey(ns, name));
      }
      // Secrets whose ServiceAccount is gone are looked at too, so they get deleted.
      for (const secret of deps.secrets.list()) {
        const key = keyOfSecret(secret);
        if (key) keys.add(key);
      }
      return [...keys];
    },
    async reconcile(key, signal) {
      const { namespace, serviceAccount } = splitSaKey(key);
      const sa = deps.serviceAccounts.get(serviceAccount, namespace);
      const existing = deps.secrets.get(saSecretName(serviceAccount), namespace);
      const decision = decideSaSecret({
        namespaceName: namespace,
        filter: deps.filter,
        serviceAccountName: serviceAccount,
        namespace: deps.namespaces.get(namespace),
        serviceAccount: sa,
        secret: existing,
        mode: deps.mode,
        trustDomain: deps.trustDomain,
        bundlePem: deps.ca.trustBundlePem(),
        now: deps.clock.now(),
        gracePeriodRatio: deps.gracePeriodRatio,
        minReissueIntervalMs: minReissueMs,
      });
      const fields = { namespace, secret: saSecretName(serviceAccount), reason: decision.reason };
      switch (decision.action) {
        case 'none':
          return decision.recheckAt !== undefined ? requeueAt(decision.recheckAt) : undefined;
        case 'delete': {
          const outcome = await deps.writer.deleteSecret(namespace, saSecretName(serviceAccount), { uid: decision.uid }, signal);
          record('delete', outcome);
          if (outcome === 'conflict') throw new RetryLater(`secret ${namespace}/${saSecretName(serviceAccount)} changed before delete`);
          log.info({ ...fields, action: 'delete', outcome }, 'deleted ServiceAccount secret');
          return undefined;
        }
        case 'create':
        case 'update': {
          const { secret, spiffeId, issued } = await build(namespace, serviceAccount, sa!, decision.action === 'update' ? existing : undefined);
          if (decision.action === 'create') {
            const outcome = await deps.writer.createSecret(secret, signal);
            record('create', outcome);
            if (outcome === 'exists') throw new RetryLater(`secret ${namespace}/${saSecretName(serviceAccount)} exists but is not in the cache (not yet seen, or of another type)`);
            if (outcome !== 'created') {
              log.debug({ ...fields, outcome }, 'ServiceAccount secret not created');
              return undefined;
            }
          } else {
            const outcome = await deps.writer.updateSecret(secret, signal);
            record('update', outcome);
            if (outcome !== 'updated') throw new RetryLater(`secret ${namespace}/${saSecretName(serviceAccount)}: update ${outcome}`);
          }
          log.info(
            { ...fields, action: decision.action, identity: spiffeId, serial: issued.serialHex, notAfter: new Date(issued.notAfter).toISOString() },
            decision.action === 'create' ? 'created ServiceAccount secret' : 'reissued ServiceAccount secret',
          );
          return requeueAt(rotationTime(issued.notBefore, issued.notAfter, deps.gracePeriodRatio, minReissueMs));
        }
      }
    },
  };
}
