import { describe, expect, it } from 'vitest';
import { connectKube } from '../../src/kube/client.js';
import { createTokenReviewer } from '../../src/kube/tokenreview.js';
import { getCluster } from '../harness/index.js';

describe('connectKube against the real apiserver', () => {
  it('reuses one TLS connection for sequential TokenReviews instead of a handshake per review', async () => {
    const cluster = getCluster();
    const ns = await cluster.createNamespace('kube-client');
    const token = await cluster.tokenFor(ns, 'default', { audiences: ['istio-ca'] });
    const kube = connectKube(cluster.kubeconfigPath);
    const reviewer = createTokenReviewer(kube);
    for (let i = 0; i < 10; i++) {
      const result = await reviewer.review(token, ['istio-ca']);
      expect(result.username).toBe(`system:serviceaccount:${ns}:default`);
    }
    expect(kube.connectionsOpened()).toBe(1);
  });
});
