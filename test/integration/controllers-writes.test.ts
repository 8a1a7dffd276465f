/**
 * src/kube/writes.ts against the real apiserver: each write's outcome for the races the controllers meet, and
 * no request at all once the leadership signal has aborted.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { connectKube, type KubeClients } from '../../src/kube/client.js';
import { createObjectWriter, type ObjectWriter } from '../../src/kube/writes.js';
import { getCluster, type TestCluster } from '../harness/index.js';

let cluster: TestCluster;
let admin: KubeClients;
let writer: ObjectWriter;
let ns: string;
const live = () => new AbortController().signal;

beforeAll(async () => {
  cluster = getCluster();
  admin = cluster.kube();
  writer = createObjectWriter({ kube: admin, clock: systemClock });
  ns = await cluster.createNamespace('writes');
});

describe('createObjectWriter', () => {
  it('ConfigMaps: created, then exists; update with a stale resourceVersion is a conflict; read returns undefined when missing', async () => {
    const body = { metadata: { name: 'w1', namespace: ns }, data: { a: '1' } };
    expect(await writer.createConfigMap(body, live())).toBe('created');
    expect(await writer.createConfigMap(body, live())).toBe('exists');
    const current = await writer.readConfigMap(ns, 'w1', live());
    expect(current?.data).toEqual({ a: '1' });
    expect(await writer.updateConfigMap({ ...current!, data: { a: '2' } }, live())).toBe('updated');
    expect(await writer.updateConfigMap({ ...current!, data: { a: '3' } }, live())).toBe('conflict');
    expect((await writer.readConfigMap(ns, 'w1', live()))?.data).toEqual({ a: '2' });
    expect(await writer.readConfigMap(ns, 'missing', live())).toBeUndefined();
    expect(await writer.updateConfigMap({ metadata: { name: 'missing', namespace: ns }, data: {} }, live())).toBe('gone');
  });

  it('Secrets: delete honours the uid precondition and reports an already deleted secret as gone', async () => {
    const body = { metadata: { name: 's1', namespace: ns }, type: 'Opaque', stringData: { k: 'v' } };
    expect(await writer.createSecret(body, live())).toBe('created');
    const secret = await admin.core.readNamespacedSecret({ name: 's1', namespace: ns });
    expect(await writer.updateSecret({ ...secret, data: { k: Buffer.from('w').toString('base64') } }, live())).toBe('updated');
    expect(await writer.deleteSecret(ns, 's1', { uid: 'not-its-uid' }, live())).toBe('conflict');
    expect(await writer.deleteSecret(ns, 's1', { uid: secret.metadata?.uid }, live())).toBe('deleted');
    expect(await writer.deleteSecret(ns, 's1', { uid: secret.metadata?.uid }, live())).toBe('gone');
  });

  it('reports a missing or terminating namespace instead of throwing', async () => {
    expect(await writer.createConfigMap({ metadata: { name: 'x', namespace: 'no-such-namespace-here' } }, live())).toBe('namespace-gone');
    // No controller-manager runs here, so a deleted namespace stays Terminating.
    const doomed = await cluster.createNamespace('writes-doomed');
    await admin.core.deleteNamespace({ name: doomed });
    expect(await writer.createConfigMap({ metadata: { name: 'x', namespace: doomed } }, live())).toBe('namespace-terminating');
    expect(await writer.createSecret({ metadata: { name: 'x', namespace: doomed }, type: 'Opaque' }, live())).toBe('namespace-terminating');
  });

  it('sends nothing once the leadership signal has aborted', async () => {
    const ended = new AbortController();
    ended.abort(new Error('leadership lost'));
    await expect(writer.createConfigMap({ metadata: { name: 'never', namespace: ns } }, ended.signal)).rejects.toThrow('leadership lost');
    await expect(writer.deleteSecret(ns, 'anything', {}, ended.signal)).rejects.toThrow('leadership lost');
    expect(await writer.readConfigMap(ns, 'never', live())).toBeUndefined();
  });

  it('throws other failures (here 403 for a ServiceAccount without RBAC)', async () => {
    const kubeconfig = await cluster.serviceAccountKubeconfig(ns, 'default');
    const weak = createObjectWriter({ kube: connectKube(kubeconfig), clock: systemClock });
    await expect(weak.createConfigMap({ metadata: { name: 'nope', namespace: ns } }, live())).rejects.toMatchObject({ code: 403 });
  });
});
