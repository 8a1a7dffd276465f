/** The ClusterTrustBundle decision (pure) and the signer-name rules behind --pod-certificate-signer. */
import { describe, expect, it } from 'vitest';
import { clusterTrustBundleName, decideClusterTrustBundle, validateSignerName } from '../../../src/controllers/cluster-trust-bundle.js';

const SIGNER = 'citadel.io/workload';

describe('signer names', () => {
  it('links the bundle name to the signer: "/" becomes ":", then ":root-cert"', () => {
    expect(clusterTrustBundleName(SIGNER)).toBe('citadel.io:workload:root-cert');
  });
  it('takes <domain>/<name> only, and never under kubernetes.io', () => {
    expect(validateSignerName(SIGNER)).toBe(SIGNER);
    for (const bad of ['workload', 'citadel.io/', 'citadel.io/a/b', 'localhost/x', 'Citadel.io/x']) expect(() => validateSignerName(bad)).toThrow(/<domain>\/<name>/);
    expect(() => validateSignerName('kubernetes.io/kube-apiserver-client-pod')).toThrow(/reserved/);
  });
});

describe('decideClusterTrustBundle', () => {
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
  it('creates, updates a changed bundle or a lost label (keeping other labels), and otherwise leaves it alone', () => {
    const created = decideClusterTrustBundle({ signerName: SIGNER, bundle: undefined, bundlePem: pem });
    expect(created).toMatchObject({ action: 'create', desired: { metadata: { name: 'citadel.io:workload:root-cert' }, spec: { signerName: SIGNER, trustBundle: pem } } });
    const live = { metadata: { name: 'citadel.io:workload:root-cert', resourceVersion: '7', labels: { team: 'x' } }, spec: { signerName: SIGNER, trustBundle: 'old' } };
    const updated = decideClusterTrustBundle({ signerName: SIGNER, bundle: live, bundlePem: pem });
    expect(updated).toMatchObject({ action: 'update', desired: { metadata: { resourceVersion: '7', labels: { team: 'x', 'app.kubernetes.io/managed-by': 'citadel' } }, spec: { trustBundle: pem } } });
    expect(updated.reason).toMatch(/trustBundle differs.*label/);
    const right = updated.action === 'update' ? updated.desired : live;
    expect(decideClusterTrustBundle({ signerName: SIGNER, bundle: right, bundlePem: pem })).toMatchObject({ action: 'none' });
    expect(decideClusterTrustBundle({ signerName: SIGNER, bundle: undefined, bundlePem: '' })).toMatchObject({ action: 'none' });
  });
});
