/**
 * Which namespaces citadel's controllers manage at all (root ConfigMaps and ServiceAccount secrets alike):
 * not terminating, not excluded by name, and matching the namespace selector. Several CAs (or test runs) can
 * share a cluster by giving each its own selector.
 */
import { isTerminating, type NamespaceObject } from './objects.js';
import type { LabelSelector } from './selector.js';

/** Skipped unless an operator says otherwise (kube-system is included, as in Istio). */
export const DEFAULT_EXCLUDED_NAMESPACES: readonly string[] = ['kube-public', 'kube-node-lease'];

export interface NamespaceFilter {
  /** Only namespaces whose labels match are managed (the empty selector matches all). */
  readonly selector: LabelSelector;
  /** Namespace names skipped whatever their labels. */
  readonly excluded: ReadonlySet<string>;
}

/** Why a namespace is not managed, or undefined when it is. */
export function namespaceSkipReason(name: string, ns: NamespaceObject | undefined, filter: NamespaceFilter): string | undefined {
  if (!ns) return 'namespace does not exist';
  if (isTerminating(ns)) return 'namespace is terminating';
  if (filter.excluded.has(name)) return 'namespace is excluded';
  if (!filter.selector.matches(ns.metadata?.labels)) return `namespace labels do not match selector "${filter.selector.toString()}"`;
  return undefined;
}
