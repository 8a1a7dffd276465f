/**
 * Keeps `istio-ca-root-cert` right in every selected namespace. Key: the namespace name.
 * Triggers: namespace added/updated, the ConfigMap added/updated/deleted, trust bundle change, resync.
 */
import type { CertificateAuthority } from '../ca/authority.js';
import type { Logger } from '../log.js';
import type { ObjectWriter } from '../kube/writes.js';
import type { ControllerMetrics } from './metrics.js';
import type { ConfigMapObject, NamespaceObject } from './objects.js';
import { RetryLater } from './queue.js';
import type { Cache, Reconciler } from './reconciler.js';
import { decideRootConfigMap, ROOT_CONFIGMAP_NAME, type NamespaceFilter, type RootConfigMapDecision } from './root-configmap.js';

export const ROOT_CONFIGMAP_CONTROLLER = 'root-configmap';

export interface RootConfigMapDeps {
  readonly namespaces: Cache<NamespaceObject>;
  readonly configMaps: Cache<ConfigMapObject>;
  readonly ca: Pick<CertificateAuthority, 'trustBundlePem'>;
  readonly filter: NamespaceFilter;
  readonly writer: ObjectWriter;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
}

export function createRootConfigMapReconciler(deps: RootConfigMapDeps): Reconciler {
  const log = deps.log.child({ controller: ROOT_CONFIGMAP_CONTROLLER });
  const decide = (namespace: string, configMap: ConfigMapObject | undefined): RootConfigMapDecision =>
    decideRootConfigMap({
      namespaceName: namespace,
      namespace: deps.namespaces.get(namespace),
      configMap,
      bundlePem: deps.ca.trustBundlePem(),
      filter: deps.filter,
    });

  const record = (action: string, outcome: string) => deps.metrics.writes.inc({ controller: ROOT_CONFIGMAP_CONTROLLER, action, outcome });

  return {
    name: ROOT_CONFIGMAP_CONTROLLER,
    allKeys: () => deps.namespaces.list().map((ns) => ns.metadata?.name).filter((n): n is string => !!n),
    async reconcile(namespace, signal) {
      let decision = decide(namespace, deps.configMaps.get(ROOT_CONFIGMAP_NAME, namespace));
      if (decision.action === 'none') return;
      const fields = { namespace, configMap: ROOT_CONFIGMAP_NAME, reason: decision.reason };
      if (decision.action === 'create') {
        const outcome = await deps.writer.createConfigMap(decision.desired, signal);
        record('create', outcome);
        if (outcome === 'created') {
          log.info({ ...fields, action: 'create' }, 'created root ConfigMap');
          return;
        }
        if (outcome !== 'exists') {
          log.debug({ ...fields, outcome }, 'root ConfigMap not created');
          return;
        }
        // The cache has not seen it yet (or someone else made it): decide again on the live object.
        decision = decide(namespace, await deps.writer.readConfigMap(namespace, ROOT_CONFIGMAP_NAME, signal));
        if (decision.action === 'none') return;
        if (decision.action === 'create') throw new RetryLater(`root ConfigMap in ${namespace} existed, then vanished`);
      }
      const outcome = await deps.writer.updateConfigMap(decision.desired, signal);
      record('update', outcome);
      if (outcome !== 'updated') throw new RetryLater(`root ConfigMap in ${namespace}: update ${outcome}`);
      log.info({ namespace, configMap: ROOT_CONFIGMAP_NAME, reason: decision.reason, action: 'update' }, 'updated root ConfigMap');
    },
  };
}
