import { describe, expect, it } from 'vitest';
import { metaOnly, withoutManagedFields } from '../../../src/kube/informer.js';

describe('metaOnly', () => {
  it('keeps the metadata the controllers read and a Namespace phase, and drops the rest', () => {
    const deleting = new Date('2026-01-01T00:00:00Z');
    const ns = metaOnly({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: 'a', uid: 'u', resourceVersion: '7', labels: { l: '1' }, annotations: { n: '2' }, deletionTimestamp: deleting,
        managedFields: [{ manager: 'kubectl', operation: 'Apply' }], creationTimestamp: deleting, generateName: 'x',
      },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Terminating' },
    });
    expect(ns).toEqual({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'a', uid: 'u', resourceVersion: '7', labels: { l: '1' }, annotations: { n: '2' }, deletionTimestamp: deleting },
      status: { phase: 'Terminating' },
    });
    const sa = metaOnly({ metadata: { name: 's', namespace: 'a', ownerReferences: [{ apiVersion: 'v1', kind: 'X', name: 'o', uid: 'w' }] }, secrets: [{ name: 't' }] });
    expect(sa).toEqual({ apiVersion: undefined, kind: undefined, metadata: { name: 's', namespace: 'a', ownerReferences: [{ apiVersion: 'v1', kind: 'X', name: 'o', uid: 'w' }] } });
  });
});

describe('withoutManagedFields', () => {
  it('keeps everything but metadata.managedFields', () => {
    const cm = { metadata: { name: 'c', namespace: 'n', labels: { a: 'b' }, managedFields: [{ manager: 'm' }] }, data: { 'root-cert.pem': 'PEM' } };
    expect(withoutManagedFields(cm)).toEqual({ metadata: { name: 'c', namespace: 'n', labels: { a: 'b' } }, data: { 'root-cert.pem': 'PEM' } });
    const plain = { metadata: { name: 'c' } };
    expect(withoutManagedFields(plain)).toBe(plain);
  });
});
