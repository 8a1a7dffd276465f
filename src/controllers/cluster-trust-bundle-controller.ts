/**
 * Keeps citadel's signer-linked ClusterTrustBundle right (one object; key: its name): created when missing,
 * repaired when edited, updated when the trust bundle changes. Same shape as the root ConfigMap controller.
 * Writing a signer-linked bundle needs `attest` on the signer (deploy/base/rbac.yaml).
 */
import type { CertificateAuthority } from '../ca/authority.js';
import type { ObjectWriter } from '../kube/writes.js';
import type { Logger } from '../log.js';
import { clusterTrustBundleName, decideClusterTrustBundle, type ClusterTrustBundleObject } from './cluster-trust-bundle.js';
import type { ControllerMetrics } from './metrics.js';
import { RetryLater } from './queue.js';
import type { Cache, Reconciler } from './reconciler.js';

export const CLUSTER_TRUST_BUNDLE_CONTROLLER = 'cluster-trust-bundle';

export interface ClusterTrustBundleDeps {
  readonly signerName: string;
  readonly bundles: Cache<ClusterTrustBundleObject>;
  readonly ca: Pick<CertificateAuthority, 'trustBundlePem'>;
  readonly writer: ObjectWriter;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
}

type Writable = Parameters<ObjectWriter['createClusterTrustBundle']>[0];

export function createClusterTrustBundleReconciler(deps: ClusterTrustBundleDeps): Reconciler {
  const log = deps.log.child({ controller: CLUSTER_TRUST_BUNDLE_CONTROLLER });
  const name = clusterTrustBundleName(deps.signerName);
  const decide = (bundle: ClusterTrustBundleObject | undefined) => decideClusterTrustBundle({ signerName: deps.signerName, bundle, bundlePem: deps.ca.trustBundlePem() });
  const record = (action: string, outcome: string) => deps.metrics.writes.inc({ controller: CLUSTER_TRUST_BUNDLE_CONTROLLER, action, outcome });
  return {
    name: CLUSTER_TRUST_BUNDLE_CONTROLLER,
    allKeys: () => [name],
    async reconcile(_key, signal) {
      let decision = decide(deps.bundles.get(name));
      if (decision.action === 'none') return;
      if (decision.action === 'create') {
        const outcome = await deps.writer.createClusterTrustBundle(decision.desired as Writable, signal);
        record('create', outcome);
        if (outcome === 'created') {
          log.info({ clusterTrustBundle: name, reason: decision.reason, action: 'create' }, 'created ClusterTrustBundle');
          return;
        }
        decision = decide(await deps.writer.readClusterTrustBundle(name, signal));
        if (decision.action === 'none') return;
        if (decision.action === 'create') throw new RetryLater(`ClusterTrustBundle ${name} existed, then vanished`);
      }
      const outcome = await deps.writer.updateClusterTrustBundle(decision.desired as Writable, signal);
      record('update', outcome);
      if (outcome !== 'updated') throw new RetryLater(`ClusterTrustBundle ${name}: update ${outcome}`);
      log.info({ clusterTrustBundle: name, reason: decision.reason, action: 'update' }, 'updated ClusterTrustBundle');
    },
  };
}
