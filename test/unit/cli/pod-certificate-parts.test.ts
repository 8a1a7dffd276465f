/** `citadel ca` turns off the kubelet-native parts whose beta API the apiserver does not serve, naming the flag. */
import { describe, expect, it } from 'vitest';
import { podCertificateParts } from '../../../src/cli/ca.js';

describe('podCertificateParts', () => {
  const both = { podCertificates: true, clusterTrustBundle: true };
  it('runs what is asked for and served', () => {
    expect(podCertificateParts(both, new Set(['podcertificaterequests', 'clustertrustbundles', 'podcertificaterequests/status'])))
      .toEqual({ sign: true, trustBundle: true, unserved: [] });
    expect(podCertificateParts({ podCertificates: false, clusterTrustBundle: true }, new Set(['clustertrustbundles'])))
      .toEqual({ sign: false, trustBundle: true, unserved: [] });
  });
  it('switches off, and names, a part whose API is not served (beta off, or certificates.k8s.io/v1beta1 absent)', () => {
    expect(podCertificateParts(both, new Set(['clustertrustbundles']))).toEqual({
      sign: false, trustBundle: true, unserved: [{ flag: 'pod-certificates', resource: 'podcertificaterequests' }],
    });
    expect(podCertificateParts(both, new Set()).unserved.map((u) => u.flag)).toEqual(['pod-certificates', 'cluster-trust-bundle']);
  });
});
