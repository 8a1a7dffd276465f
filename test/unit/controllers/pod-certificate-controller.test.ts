/**
 * The PodCertificateRequest reconciler's act step with an in-memory cache and a recording writer (our own seams):
 * one status write per request, the chain without the roots, retries instead of answers for transient trouble.
 */
import { generateKeyPairSync } from 'node:crypto';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../../src/clock.js';
import { createControllerMetrics } from '../../../src/controllers/metrics.js';
import { createPodCertificateReconciler, type PodCertificateRequestObject } from '../../../src/controllers/pod-certificate-controller.js';
import { RetryLater } from '../../../src/controllers/queue.js';
import { CitadelError } from '../../../src/errors.js';
import type { ObjectWriter, UpdateOutcome } from '../../../src/kube/writes.js';
import { silentLogger } from '../../../src/log.js';
import { parseCertificates } from '../../../src/pki/index.js';
import { stubPkcs10Request } from '../../harness/pod-certificates.js';
import { createTestAuthority } from '../../support/test-authority.js';

const UID = '11111111-2222-4333-8444-555555555555';
const request = (status?: PodCertificateRequestObject['status']): PodCertificateRequestObject => ({
  metadata: { name: 'req-1', namespace: 'shop', resourceVersion: '5' },
  spec: {
    signerName: 'citadel.io/workload', podName: 'web-0', podUID: UID, serviceAccountName: 'web', maxExpirationSeconds: 3600,
    stubPKCS10Request: stubPkcs10Request('ECDSAP256', generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey).toString('base64'),
  },
  ...(status ? { status } : {}),
});

function setup(pcr: PodCertificateRequestObject, opts: { outcome?: UpdateOutcome; ca?: Parameters<typeof createPodCertificateReconciler>[0]['ca'] } = {}) {
  const writes: PodCertificateRequestObject[] = [];
  const writer = {
    readPod: async () => ({ metadata: { uid: UID }, spec: { serviceAccountName: 'web' } }),
    updatePodCertificateRequestStatus: async (obj: PodCertificateRequestObject) => {
      writes.push(obj);
      return opts.outcome ?? 'updated';
    },
  } as unknown as ObjectWriter;
  const cache = { get: () => pcr, list: () => [pcr] };
  return { writes, make: async () => createPodCertificateReconciler({
    requests: cache, ca: opts.ca ?? (await createTestAuthority()), policy: { trustDomain: 'cluster.local', maxTtlMs: 90 * 24 * 3600_000 },
    writer, clock: systemClock, log: silentLogger, metrics: createControllerMetrics(new Registry(), () => ({})),
  }) };
}

describe('pod certificate reconciler', () => {
  it('writes Issued with the leaf (no roots), notBefore/notAfter of the leaf and beginRefreshAt, carrying the resourceVersion read', async () => {
    const t = setup(request());
    await (await t.make()).reconcile('shop/req-1', new AbortController().signal);
    expect(t.writes).toHaveLength(1);
    const { status, metadata } = t.writes[0]!;
    expect(metadata?.resourceVersion).toBe('5');
    expect(status?.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([['Issued', 'True', 'Issued']]);
    const chain = parseCertificates(status!.certificateChain!);
    expect(chain).toHaveLength(1);
    expect(chain[0]!.uris).toEqual(['spiffe://cluster.local/ns/shop/sa/web']);
    expect(status!.notBefore!.getTime()).toBe(chain[0]!.notBefore);
    expect(status!.notAfter!.getTime()).toBe(chain[0]!.notAfter);
    expect(status!.beginRefreshAt!.getTime()).toBe(chain[0]!.notBefore + 1800_000);
  });

  it('leaves answered requests alone, retries on a conflict, and waits (no answer) while the CA has no key material', async () => {
    const answered = setup(request({ conditions: [{ type: 'Denied', status: 'True', reason: 'PodNotFound', message: 'x', lastTransitionTime: new Date() }] }));
    await (await answered.make()).reconcile('shop/req-1', new AbortController().signal);
    expect(answered.writes).toEqual([]);

    const conflict = setup(request(), { outcome: 'conflict' });
    await expect((await conflict.make()).reconcile('shop/req-1', new AbortController().signal)).rejects.toBeInstanceOf(RetryLater);

    const notReady = setup(request(), { ca: { issueWorkload: () => { throw new CitadelError('CA_NOT_READY', 'not loaded'); } } });
    await expect((await notReady.make()).reconcile('shop/req-1', new AbortController().signal)).rejects.toBeInstanceOf(RetryLater);
    expect(notReady.writes).toEqual([]);
  });
});
