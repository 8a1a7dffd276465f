/**
 * Kubelet-native delivery against the real apiserver (PodCertificateRequest + ClusterTrustBundle beta APIs,
 * NodeRestriction on): the controllers run as the citadel ServiceAccount with exactly deploy/base/rbac.yaml (its
 * own signer name per copy, test/support/citadel-rbac.ts), and the kubelet simulator makes every request with a
 * node's own credentials. openssl checks what lands in the pod.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { clusterTrustBundleName, startControllers, type Controllers } from '../../src/controllers/index.js';
import type { KubeClients } from '../../src/kube/client.js';
import { silentLogger } from '../../src/log.js';
import { keyMatchesCertificate, parseCertificates, parsePrivateKeyPem, splitPem } from '../../src/pki/index.js';
import {
  createPodCertificateRequest, getCluster, projectPodCertificate, startNode, startPod, waitForAnswer,
  type SimulatedNode, type SimulatedPod, type TestCluster,
} from '../harness/index.js';
import { openssl } from '../harness/openssl.js';
import { citadelClients, signerNameFor } from '../support/citadel-rbac.js';
import { FakeClock } from '../support/fake-clock.js';
import { createTestAuthority, type TestAuthority } from '../support/test-authority.js';
import { unlessNotFound, waitFor } from '../support/wait.js';

const HOUR_MS = 3600_000;
const BUNDLE = 'var/run/secrets/citadel/credentialbundle.pem';
const TRUST = 'var/run/secrets/citadel/trust-bundle.pem';

let cluster: TestCluster;
let admin: KubeClients;
let ca: TestAuthority;
let signer: string;
let controllers: Controllers;
let registry: Registry;
let node: SimulatedNode;
let ns: string;
let tmp: string;
const pods: SimulatedPod[] = [];
const stops: Array<() => Promise<void>> = [];

async function runControllers(caNamespace: string, authority: TestAuthority, maxTtlMs: number, reg: Registry): Promise<Controllers> {
  const { kube } = await citadelClients(cluster, caNamespace);
  const c = startControllers({
    kube, ca: authority, clock: systemClock, log: silentLogger, registry: reg, namespace: caNamespace, trustDomain: 'cluster.local',
    saSecrets: 'off', rootConfigMaps: false, authorizationPolicies: false,
    podCertificates: { signerName: signerNameFor(caNamespace), sign: true, trustBundle: true, maxTtlMs },
    leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500,
  });
  await c.synced();
  await waitFor('leadership', async () => c.isLeader());
  return c;
}

const podOnNode = async (serviceAccount = 'web', on = node) => {
  const pod = await startPod(cluster, { namespace: ns, serviceAccount, nodeName: on.name, watchRootCert: false });
  pods.push(pod);
  return pod;
};

const x509 = async (pem: string, ...args: string[]) => {
  const file = path.join(tmp, `cert-${Math.random().toString(16).slice(2)}.pem`);
  fs.writeFileSync(file, pem);
  return openssl(['x509', '-in', file, '-noout', ...args]);
};

beforeAll(async () => {
  cluster = getCluster();
  admin = cluster.kube();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-pcr-'));
  const caNamespace = await cluster.createNamespace('pcr-ca');
  signer = signerNameFor(caNamespace);
  ca = await createTestAuthority();
  registry = new Registry();
  controllers = await runControllers(caNamespace, ca, 2160 * HOUR_MS, registry);
  node = await startNode(cluster);
  ns = await cluster.createNamespace('pcr');
}, 60_000);

afterAll(async () => {
  for (const stop of stops) await stop();
  await Promise.all(pods.map((p) => p.delete().catch(() => {})));
  await controllers?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('PodCertificateRequest signer', () => {
  it('issues the pod its SVID through the kubelet path, chained to the projected ClusterTrustBundle, and refreshes at beginRefreshAt', async () => {
    const pod = await podOnNode();
    const clock = new FakeClock(Date.now());
    const vol = await projectPodCertificate(cluster, node, pod, {
      signerName: signer, keyType: 'ECDSAP256', maxExpirationSeconds: 3600, credentialBundlePath: BUNDLE,
      trustBundle: { signerName: signer, path: TRUST }, clock,
    });
    stops.push(() => vol.stop());
    const first = vol.state();
    expect(first).toMatchObject({ phase: 'issued', reason: 'Issued' });

    const bundle = fs.readFileSync(vol.credentialBundlePath, 'utf8');
    const [keyPem, ...chain] = splitPem(bundle);
    expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const leaf = parseCertificates(chain.join(''))[0]!;
    expect(keyMatchesCertificate(parsePrivateKeyPem(keyPem!), leaf)).toBe(true);
    expect(await x509(chain[0]!, '-ext', 'subjectAltName')).toContain(`URI:spiffe://cluster.local/ns/${ns}/sa/web`);
    // The whole life (2 min backdate included) is maxExpirationSeconds; beginRefreshAt within the API's window.
    expect(leaf.notAfter - leaf.notBefore).toBe(HOUR_MS);
    expect(first.beginRefreshAt).toBe(leaf.notBefore + HOUR_MS / 2);
    // The trust bundle came from the ClusterTrustBundle, and openssl verifies the chain against it.
    await waitFor('projected trust bundle', () => fs.existsSync(vol.trustBundlePath!));
    expect(fs.readFileSync(vol.trustBundlePath!, 'utf8')).toBe(ca.rootPem);
    const leafFile = path.join(tmp, 'leaf.pem');
    fs.writeFileSync(leafFile, chain.join(''));
    expect(await openssl(['verify', '-CAfile', vol.trustBundlePath!, leafFile])).toContain(': OK');

    // Refresh: at beginRefreshAt (+ kubelet's jitter) a new key and a new request; the file is replaced.
    await clock.advance(first.refreshDueAt! - clock.now());
    const second = await vol.waitFor((s) => s.requests.length === 2 && s.current === s.requests[1], 30_000);
    expect(second.phase).toBe('issued');
    const renewed = splitPem(fs.readFileSync(vol.credentialBundlePath, 'utf8'));
    expect(renewed[0]).not.toBe(keyPem);
    expect(parseCertificates(renewed.slice(1).join(''))[0]!.serialHex).not.toBe(leaf.serialHex);
  });

  it('issues for a 1.35 kubelet (pkixPublicKey + proofOfPossession) and RSA keys', async () => {
    const pod = await podOnNode();
    const pkix = await createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'ECDSAP384', keyForm: 'pkix' });
    const rsa = await createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'RSA3072' });
    for (const r of [pkix, rsa]) {
      const answer = await waitForAnswer(node, ns, r.name);
      expect(answer.type).toBe('Issued');
      expect(keyMatchesCertificate(r.key, parseCertificates(answer.status.certificateChain!)[0]!)).toBe(true);
    }
  });

  it('denies unsupported keys with UnsupportedKeyType, and leaves other signers\' requests alone', async () => {
    const pod = await podOnNode();
    const other = await createPodCertificateRequest(cluster, node, pod, { signerName: 'example.com/not-citadel', keyType: 'ECDSAP256' });
    const ed = await createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'ED25519' });
    const p521 = await createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'ECDSAP521', keyForm: 'pkix' });
    for (const r of [ed, p521]) {
      const answer = await waitForAnswer(node, ns, r.name);
      expect(answer).toMatchObject({ type: 'Denied', reason: 'UnsupportedKeyType' });
      expect(answer.message).toMatch(/keyType to ECDSAP256, ECDSAP384, RSA3072 or RSA4096/);
    }
    // Created before the two above and still unanswered: our signer only watches its own name.
    const untouched = await node.kube.certificates.readNamespacedPodCertificateRequest({ name: other.name, namespace: ns });
    expect(untouched.status?.conditions ?? []).toEqual([]);
  });

  it('refuses through the apiserver what it already forbids: a proof that does not match, lifetimes outside 1 h..91 d, another node\'s pod', async () => {
    const pod = await podOnNode();
    await expect(createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'ECDSAP256', keyForm: 'pkix', proofFromOtherKey: true }))
      .rejects.toMatchObject({ code: 422 });
    await expect(createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'ECDSAP256', maxExpirationSeconds: 3599 })).rejects.toMatchObject({ code: 422 });
    await expect(createPodCertificateRequest(cluster, node, pod, { signerName: signer, keyType: 'ECDSAP256', maxExpirationSeconds: 91 * 86_400 + 1 })).rejects.toMatchObject({ code: 422 });
    const intruder = await startNode(cluster);
    await expect(createPodCertificateRequest(cluster, intruder, pod, { signerName: signer, keyType: 'ECDSAP256' })).rejects.toMatchObject({ code: 403 });
  });

  it('denies a request whose pod is gone, and one whose lifetime the CA cannot honour', async () => {
    // A second CA (own signer) that starts only after the requests exist, so the pod is deleted before it looks.
    const caNamespace = await cluster.createNamespace('pcr-ca2');
    const gonePod = await podOnNode();
    const livePod = await podOnNode();
    const gone = await createPodCertificateRequest(cluster, node, gonePod, { signerName: signerNameFor(caNamespace), keyType: 'ECDSAP256' });
    const short = await createPodCertificateRequest(cluster, node, livePod, { signerName: signerNameFor(caNamespace), keyType: 'ECDSAP256' });
    await gonePod.delete();
    const second = await runControllers(caNamespace, await createTestAuthority(), HOUR_MS / 2, new Registry());
    stops.push(() => second.stop());
    expect(await waitForAnswer(node, ns, gone.name)).toMatchObject({ type: 'Denied', reason: 'PodNotFound' });
    const answer = await waitForAnswer(node, ns, short.name);
    expect(answer).toMatchObject({ type: 'Denied', reason: 'LifetimeNotAllowed' });
    expect(answer.message).toMatch(/at most 1800s/);
  });
});

describe('ClusterTrustBundle publisher', () => {
  const read = () => unlessNotFound(admin.certificates.readClusterTrustBundle({ name: clusterTrustBundleName(signer) }));

  it('publishes the trust bundle under the signer-linked name, and recreates, repairs and follows root changes', async () => {
    const first = await waitFor('ClusterTrustBundle', read);
    expect(first.metadata?.name).toBe(`${signer.replace('/', ':')}:root-cert`);
    expect(first.spec).toMatchObject({ signerName: signer, trustBundle: ca.trustBundlePem() });
    expect(first.metadata?.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'citadel' });

    await admin.certificates.deleteClusterTrustBundle({ name: first.metadata!.name! });
    await waitFor('recreated ClusterTrustBundle', async () => {
      const b = await read();
      return b && b.metadata?.uid !== first.metadata?.uid && b.spec.trustBundle === ca.trustBundlePem();
    });

    // An edit (someone else's root, our label gone) is put back.
    const current = (await read())!;
    const foreign = (await createTestAuthority()).rootPem;
    await admin.certificates.replaceClusterTrustBundle({
      name: current.metadata!.name!,
      body: { ...current, metadata: { ...current.metadata, labels: {} }, spec: { ...current.spec, trustBundle: foreign } },
    });
    await waitFor('repaired ClusterTrustBundle', async () => {
      const b = await read();
      return b?.spec.trustBundle === ca.trustBundlePem() && b.metadata?.labels?.['app.kubernetes.io/managed-by'] === 'citadel';
    });

    const oldRoot = ca.rootPem;
    await ca.rotateRoot({ keepOld: true });
    const rotated = await waitFor('ClusterTrustBundle with both roots', async () => {
      const b = await read();
      return b?.spec.trustBundle === ca.trustBundlePem() ? b : undefined;
    });
    expect(parseCertificates(rotated.spec.trustBundle).map((c) => c.pem)).toEqual([oldRoot, ca.rootPem]);
  });

  it('needed nothing beyond deploy/base/rbac.yaml, and ran no root ConfigMap controller (rootConfigMaps: false)', async () => {
    const values = async (name: string) =>
      ((await registry.getMetricsAsJSON()).find((m) => m.name === name)?.values ?? []) as Array<{ labels: Record<string, string>; value: number }>;
    expect((await values('citadel_controller_errors_total')).filter((v) => v.labels.reason === 'http_403')).toEqual([]);
    const reconciled = new Set((await values('citadel_controller_reconciles_total')).map((v) => v.labels.controller));
    expect([...reconciled].sort()).toEqual(['cluster-trust-bundle', 'pod-certificate']);
    // Every answer counted by condition and reason.
    const answers = Object.fromEntries((await values('citadel_pod_certificate_requests_total')).map((v) => [`${v.labels.condition}/${v.labels.reason}`, v.value]));
    expect(answers['Issued/Issued']).toBeGreaterThanOrEqual(4);
    expect(answers['Denied/UnsupportedKeyType']).toBe(2);
  });
});
