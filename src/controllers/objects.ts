/**
 * The slices of Kubernetes objects the controllers read, as plain structural types: the informers in src/kube
 * hand over @kubernetes/client-node objects, which fit these shapes, so the decision code stays free of the
 * client library and its tests build inputs as object literals.
 */

export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly deletionTimestamp?: Date;
  readonly ownerReferences?: OwnerReference[];
}

export interface OwnerReference {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly uid: string;
  readonly controller?: boolean;
  readonly blockOwnerDeletion?: boolean;
}

export interface NamespaceObject {
  readonly metadata?: ObjectMeta;
  readonly status?: { readonly phase?: string };
}

export interface ConfigMapObject {
  readonly metadata?: ObjectMeta;
  readonly data?: Readonly<Record<string, string>>;
}

export interface ServiceAccountObject {
  readonly metadata?: ObjectMeta;
}

export interface SecretObject {
  readonly metadata?: ObjectMeta;
  readonly type?: string;
  /** base64 values, as the API returns them. */
  readonly data?: Readonly<Record<string, string>>;
}

/** Labels citadel puts on everything it writes, so operators (and citadel) can tell its objects apart. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'citadel';

/** True when a namespace is being deleted: writes into it would be refused. */
export function isTerminating(ns: NamespaceObject): boolean {
  return (ns.metadata?.deletionTimestamp ?? undefined) !== undefined || ns.status?.phase === 'Terminating';
}
