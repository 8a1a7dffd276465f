import { describe, expect, it } from 'vitest';
import { CRL_CONFIGMAP } from '../../../src/controllers/index.js';
import {
  decidePublishedConfigMap,
  decideRootConfigMap,
  DEFAULT_EXCLUDED_NAMESPACES,
  type NamespaceFilter,
  type RootConfigMapInput,
} from '../../../src/controllers/root-configmap.js';
import { parseLabelSelector } from '../../../src/controllers/selector.js';

const BUNDLE = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
const all: NamespaceFilter = { selector: parseLabelSelector(''), excluded: new Set(DEFAULT_EXCLUDED_NAMESPACES) };

function input(over: Partial<RootConfigMapInput> = {}): RootConfigMapInput {
  return {
    namespaceName: 'team-a',
    namespace: { metadata: { name: 'team-a', labels: { team: 'a' } }, status: { phase: 'Active' } },
    configMap: undefined,
    bundlePem: BUNDLE,
    filter: all,
    ...over,
  };
}

const goodCm = {
  metadata: {
    name: 'istio-ca-root-cert',
    namespace: 'team-a',
    resourceVersion: '42',
    labels: { 'istio.io/config': 'true', 'app.kubernetes.io/managed-by': 'citadel' },
  },
  data: { 'root-cert.pem': BUNDLE },
};

describe('decideRootConfigMap', () => {
  it('publishes the SPIFFE bundle as spiffe-bundle.json beside the PEM, and updates it alone when only it changed', () => {
    const created = decideRootConfigMap(input({ spiffeBundleJson: '{"keys":[]}' }));
    expect(created.action === 'create' && created.desired.data).toEqual({ 'root-cert.pem': BUNDLE, 'spiffe-bundle.json': '{"keys":[]}' });
    const upToDate = { ...goodCm, data: { ...goodCm.data, 'spiffe-bundle.json': '{"keys":[]}' } };
    expect(decideRootConfigMap(input({ configMap: upToDate, spiffeBundleJson: '{"keys":[]}' })).action).toBe('none');
    const changed = decideRootConfigMap(input({ configMap: upToDate, spiffeBundleJson: '{"keys":[1]}' }));
    expect(changed).toMatchObject({ action: 'update', reason: 'spiffe-bundle.json missing or outdated' });
    expect(changed.action === 'update' && changed.desired.data).toEqual({ 'root-cert.pem': BUNDLE, 'spiffe-bundle.json': '{"keys":[1]}' });
    // Without a SPIFFE bundle (a CA that does not publish one) an existing key is left alone.
    expect(decideRootConfigMap(input({ configMap: upToDate })).action).toBe('none');
  });

  it('creates the ConfigMap with the bundle and both labels when it is missing', () => {
    const d = decideRootConfigMap(input());
    expect(d.action).toBe('create');
    if (d.action !== 'create') return;
    expect(d.reason).toBe('ConfigMap missing');
    expect(d.desired).toEqual({
      metadata: { name: 'istio-ca-root-cert', namespace: 'team-a', labels: { 'istio.io/config': 'true', 'app.kubernetes.io/managed-by': 'citadel' } },
      data: { 'root-cert.pem': BUNDLE },
    });
  });

  it('does nothing when the ConfigMap is right', () => {
    expect(decideRootConfigMap(input({ configMap: goodCm }))).toEqual({ action: 'none', reason: 'up to date' });
  });

  it('repairs an edited root-cert.pem, keeping other keys, labels, annotations and the resourceVersion', () => {
    const edited = {
      ...goodCm,
      metadata: { ...goodCm.metadata, labels: { ...goodCm.metadata.labels, extra: 'x' }, annotations: { note: 'n' } },
      data: { 'root-cert.pem': 'tampered', 'extra.txt': 'keep me' },
    };
    const d = decideRootConfigMap(input({ configMap: edited }));
    expect(d.action).toBe('update');
    if (d.action !== 'update') return;
    expect(d.reason).toBe('root-cert.pem differs from the trust bundle');
    expect(d.desired.data).toEqual({ 'root-cert.pem': BUNDLE, 'extra.txt': 'keep me' });
    expect(d.desired.metadata?.labels).toEqual({ ...goodCm.metadata.labels, extra: 'x' });
    expect(d.desired.metadata?.annotations).toEqual({ note: 'n' });
    expect(d.desired.metadata?.resourceVersion).toBe('42');
  });

  it('updates when root-cert.pem is missing or the labels were removed', () => {
    const noKey = decideRootConfigMap(input({ configMap: { ...goodCm, data: { other: 'x' } } }));
    expect(noKey.action).toBe('update');
    expect(noKey.reason).toBe('root-cert.pem missing');
    const noLabels = decideRootConfigMap(input({ configMap: { ...goodCm, metadata: { ...goodCm.metadata, labels: { 'istio.io/config': 'false' } } } }));
    expect(noLabels.action).toBe('update');
    expect(noLabels.reason).toBe('label istio.io/config, app.kubernetes.io/managed-by missing or wrong');
    if (noLabels.action === 'update') expect(noLabels.desired.metadata?.labels).toEqual(goodCm.metadata.labels);
  });

  it('updates to a new bundle after a root change', () => {
    const d = decideRootConfigMap(input({ configMap: goodCm, bundlePem: BUNDLE + BUNDLE }));
    expect(d.action).toBe('update');
    if (d.action === 'update') expect(d.desired.data?.['root-cert.pem']).toBe(BUNDLE + BUNDLE);
  });

  it('skips terminating, excluded, unselected and vanished namespaces, and an empty bundle', () => {
    const terminating = input({ namespace: { metadata: { name: 'team-a', deletionTimestamp: new Date() }, status: { phase: 'Terminating' } } });
    expect(decideRootConfigMap(terminating)).toEqual({ action: 'none', reason: 'namespace is terminating' });
    expect(decideRootConfigMap(input({ namespace: { metadata: { name: 'team-a' }, status: { phase: 'Terminating' } } })).action).toBe('none');
    for (const name of ['kube-public', 'kube-node-lease']) {
      expect(decideRootConfigMap(input({ namespaceName: name, namespace: { metadata: { name } } }))).toEqual({ action: 'none', reason: 'namespace is excluded' });
    }
    expect(decideRootConfigMap(input({ namespaceName: 'kube-system', namespace: { metadata: { name: 'kube-system' } } })).action).toBe('create');
    const selective = { selector: parseLabelSelector('team=b'), excluded: new Set<string>() };
    expect(decideRootConfigMap(input({ filter: selective }))).toEqual({ action: 'none', reason: 'namespace labels do not match selector "team=b"' });
    // A namespace that leaves the selector keeps its ConfigMap: no delete is ever decided.
    expect(decideRootConfigMap(input({ filter: selective, configMap: { ...goodCm, data: { 'root-cert.pem': 'old' } } })).action).toBe('none');
    expect(decideRootConfigMap(input({ namespace: undefined }))).toEqual({ action: 'none', reason: 'namespace does not exist' });
    expect(decideRootConfigMap(input({ bundlePem: '' }))).toEqual({ action: 'none', reason: 'no trust bundle loaded yet' });
  });
});

describe('decidePublishedConfigMap (istio-ca-crl)', () => {
  const crlInput = (content: string | undefined, configMap?: { metadata: { name: string; namespace: string; labels: Record<string, string> }; data: Record<string, string> }) =>
    ({ ...input({ configMap }), spec: CRL_CONFIGMAP, content });

  it('publishes the empty text when there is no CRL (Istio\'s shape), and waits while there is nothing yet', () => {
    const d = decidePublishedConfigMap(crlInput(''));
    expect(d.action).toBe('create');
    if (d.action !== 'create') return;
    expect(d.desired.metadata?.name).toBe('istio-ca-crl');
    expect(d.desired.data).toEqual({ 'ca-crl.pem': '' });
    expect(decidePublishedConfigMap(crlInput(undefined))).toEqual({ action: 'none', reason: 'nothing to publish yet' });
  });

  it('clears a CRL the CA no longer publishes', () => {
    const cm = { metadata: { name: 'istio-ca-crl', namespace: 'team-a', labels: { 'istio.io/config': 'true', 'app.kubernetes.io/managed-by': 'citadel' } }, data: { 'ca-crl.pem': 'old CRL' } };
    const d = decidePublishedConfigMap(crlInput('', cm));
    expect(d.action).toBe('update');
    if (d.action !== 'update') return;
    expect(d.reason).toBe('ca-crl.pem differs from the published CRLs');
    expect(d.desired.data).toEqual({ 'ca-crl.pem': '' });
  });
});
