/**
 * Keeps a published ConfigMap right in every selected namespace: `istio-ca-root-cert` (the trust bundle),
 * `istio-ca-crl` (the CRLs) and `citadel-authz` (the compiled AuthorizationPolicies, authz.ts). Key: the namespace name.
 * Triggers: namespace added/updated, the ConfigMap added/updated/deleted, a change of the content, resync.
 */
import type { CertificateAuthority } from '../ca/authority.js';
import type { Logger } from '../log.js';
import type { ObjectWriter } from '../kube/writes.js';
import type { ControllerMetrics } from './metrics.js';
import type { ConfigMapObject, NamespaceObject } from './objects.js';
import { RetryLater } from './queue.js';
import type { Cache, Reconciler } from './reconciler.js';
import { decidePublishedConfigMap, decideRootConfigMap, ROOT_CONFIGMAP, type NamespaceFilter, type PublishedConfigMap, type RootConfigMapDecision } from './root-configmap.js';

export const ROOT_CONFIGMAP_CONTROLLER = 'root-configmap';

export interface RootConfigMapDeps {
  readonly namespaces: Cache<NamespaceObject>;
  readonly configMaps: Cache<ConfigMapObject>;
  readonly ca: Pick<CertificateAuthority, 'trustBundlePem'>;
  /** The SPIFFE bundle JSON to publish beside the PEM (undefined: not published yet). */
  readonly spiffeBundle?: () => string | undefined;
  readonly filter: NamespaceFilter;
  readonly writer: ObjectWriter;
  readonly log: Logger;
  readonly metrics: ControllerMetrics;
}

export interface PublishedConfigMapDeps extends Omit<RootConfigMapDeps, 'ca' | 'spiffeBundle'> {
  /** Metric label and log name. */
  readonly controller: string;
  readonly spec: PublishedConfigMap;
  /** The decision for one namespace given its cached or live ConfigMap. */
  readonly decide: (input: { namespaceName: string; namespace: NamespaceObject | undefined; configMap: ConfigMapObject | undefined; filter: NamespaceFilter }) => RootConfigMapDecision;
}

export function createRootConfigMapReconciler(deps: RootConfigMapDeps): Reconciler {
  return createPublishedConfigMapReconciler({
    ...deps,
    controller: ROOT_CONFIGMAP_CONTROLLER,
    spec: ROOT_CONFIGMAP,
    decide: (input) => decideRootConfigMap({ ...input, bundlePem: deps.ca.trustBundlePem(), spiffeBundleJson: deps.spiffeBundle?.() }),
  });
}

/** The same reconciler for any published ConfigMap whose content (per namespace, or the same for all) comes from `content`. */
export function createContentConfigMapReconciler(deps: Omit<PublishedConfigMapDeps, 'decide'> & { content: (namespace: string) => string | undefined }): Reconciler {
  return createPublishedConfigMapReconciler({ ...deps, decide: (input) => decidePublishedConfigMap({ ...input, spec: deps.spec, content: deps.content(input.namespaceName) }) });
}

function createPublishedConfigMapReconciler(deps: PublishedConfigMapDeps): Reconciler {
  const { controller, spec } = deps;
  const log = deps.log.child({ controller });
  const decide = (namespace: string, configMap: ConfigMapObject | undefined): RootConfigMapDecision =>
    deps.decide({ namespaceName: namespace, namespace: deps.namespaces.get(namespace), configMap, filter: deps.filter });

  const record = (action: string, outcome: string) => deps.metrics.writes.inc({ controller, action, outcome });

  return {
    name: controller,
    allKeys: () => deps.namespaces.list().map((ns) => ns.metadata?.name).filter((n): n is string => !!n),
    async reconcile(namespace, signal) {
      let decision = decide(namespace, deps.configMaps.get(spec.name, namespace));
      if (decision.action === 'none') return;
      const fields = { namespace, configMap: spec.name, reason: decision.reason };
      if (decision.action === 'create') {
        const outcome = await deps.writer.createConfigMap(decision.desired, signal);
        record('create', outcome);
        if (outcome === 'created') {
          log.info({ ...fields, action: 'create' }, `created ${spec.name}`);
          return;
        }
        if (outcome !== 'exists') {
          log.debug({ ...fields, outcome }, `${spec.name} not created`);
          return;
        }
        // The cache has not seen it yet (or someone else made it): decide again on the live object.
        decision = decide(namespace, await deps.writer.readConfigMap(namespace, spec.name, signal));
        if (decision.action === 'none') return;
        if (decision.action === 'create') throw new RetryLater(`${spec.name} in ${namespace} existed, then vanished`);
      }
      const outcome = await deps.writer.updateConfigMap(decision.desired, signal);
      record('update', outcome);
      if (outcome !== 'updated') throw new RetryLater(`${spec.name} in ${namespace}: update ${outcome}`);
      log.info({ ...fields, reason: decision.reason, action: 'update' }, `updated ${spec.name}`);
    },
  };
}
