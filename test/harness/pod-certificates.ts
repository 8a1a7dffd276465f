/**
 * The kubelet simulator's part for kubelet-native certificates (KEP-4317), doing what a 1.36 kubelet does for
 * a pod's `podCertificate` and `clusterTrustBundle` projected volume sources:
 *   - a Node object and that node's own credentials (client certificate CN=system:node:<name>, O=system:nodes),
 *     so the Node authorizer and NodeRestriction judge every request as on a real cluster;
 *   - a fresh private key in memory per request (keyType), a PodCertificateRequest made with the node's
 *     credentials (generateName req-, owner reference to the Pod) carrying the key as `stubPKCS10Request` (an empty
 *     PKCS#10 signed with the key; or, as 1.34/1.35 kubelets did, `pkixPublicKey` + `proofOfPossession`);
 *   - waiting for Issued / Denied / Failed (Denied and Failed are final), then writing the credential bundle
 *     (PKCS#8 `PRIVATE KEY` first, then the chain) atomically into the pod root;
 *   - a new key and request at `beginRefreshAt` plus up to 5 minutes of jitter, on the clock it is given (tests
 *     pass a FakeClock to reach the refresh time without waiting an hour);
 *   - the signer's ClusterTrustBundles (by signerName, every label) merged and deduplicated into one file, kept
 *     in step by a watch made with the node's credentials.
 */
import * as k8s from '@kubernetes/client-node';
import { constants, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { systemClock, type Clock, type Timer } from '../../src/clock.js';
import { connectKube, type KubeClients } from '../../src/kube/client.js';
import { clusterTrustBundleInformer, type Informer } from '../../src/kube/informer.js';
import { silentLogger } from '../../src/log.js';
import { bitString, contextTag, integer, nullValue, oid, sequence, tlv } from '../../src/pki/der.js';
import { writeFileAtomic, type SimulatedPod } from './kubelet.js';
import type { TestCluster } from './test-cluster.js';

export type PodCertificateKeyType = 'RSA3072' | 'RSA4096' | 'ECDSAP256' | 'ECDSAP384' | 'ECDSAP521' | 'ED25519';

export interface SimulatedNode {
  readonly name: string;
  readonly uid: string;
  /** API clients authenticated as system:node:<name>. */
  readonly kube: KubeClients;
}

/** Registers a Node (as the admin; nothing runs on it) and returns clients with that node's own identity. */
export async function startNode(cluster: TestCluster, name = `node-${randomBytes(3).toString('hex')}`): Promise<SimulatedNode> {
  const node = await cluster.kube().core.createNode({ body: { metadata: { name, labels: { 'kubernetes.io/hostname': name } } } });
  const kubeconfig = await cluster.userKubeconfig(`system:node:${name}`, ['system:nodes']);
  return { name, uid: node.metadata!.uid!, kube: connectKube(kubeconfig) };
}

// ---- Keys and the request body, as kubelet makes them ----

const spkiDer = (key: KeyObject): Buffer => createPublicKey(key).export({ type: 'spki', format: 'der' });

function generateKey(keyType: PodCertificateKeyType): KeyObject {
  switch (keyType) {
    case 'RSA3072': return generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
    case 'RSA4096': return generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey;
    case 'ECDSAP256': return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    case 'ECDSAP384': return generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    case 'ECDSAP521': return generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey;
    case 'ED25519': return generateKeyPairSync('ed25519').privateKey;
  }
}

/** Signature algorithm (AlgorithmIdentifier DER) and signing function per key type. */
function signerFor(keyType: PodCertificateKeyType, key: KeyObject): { algorithm: Buffer; sign(data: Buffer): Buffer } {
  const ecdsa = (hash: string, dotted: string) => ({ algorithm: sequence(oid(dotted)), sign: (d: Buffer) => sign(hash, d, { key, dsaEncoding: 'der' }) });
  switch (keyType) {
    case 'ECDSAP256': return ecdsa('sha256', '1.2.840.10045.4.3.2');
    case 'ECDSAP384': return ecdsa('sha384', '1.2.840.10045.4.3.3');
    case 'ECDSAP521': return ecdsa('sha512', '1.2.840.10045.4.3.4');
    case 'ED25519': return { algorithm: sequence(oid('1.3.101.112')), sign: (d) => sign(null, d, key) };
    default: return { algorithm: sequence(oid('1.2.840.113549.1.1.11'), nullValue()), sign: (d) => sign('sha256', d, key) };
  }
}

/** The 1.36 kubelet's stub: a PKCS#10 request with no subject and no attributes, signed with the key (DER). */
export function stubPkcs10Request(keyType: PodCertificateKeyType, key: KeyObject): Buffer {
  const spki = spkiDer(key);
  const cri = sequence(integer(0), sequence(), spki, tlv(contextTag(0, true)));
  const s = signerFor(keyType, key);
  return sequence(cri, s.algorithm, bitString(s.sign(cri)));
}

/** The 1.34/1.35 kubelet's proof of possession: a signature over the pod UID (ECDSA/RSA-PSS over SHA-256, Ed25519 raw). */
export function proofOfPossession(key: KeyObject, podUid: string): Buffer {
  const data = Buffer.from(podUid, 'utf8');
  if (key.asymmetricKeyType === 'ed25519') return sign(null, data, key);
  if (key.asymmetricKeyType === 'rsa') return sign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING });
  return sign('sha256', data, { key, dsaEncoding: 'der' });
}

export interface PodCertificateRequestOptions {
  signerName: string;
  keyType: PodCertificateKeyType;
  maxExpirationSeconds?: number;
  /** `stub` (1.36 kubelets, default) or `pkix` (pkixPublicKey + proofOfPossession, 1.34/1.35 kubelets). */
  keyForm?: 'stub' | 'pkix';
  /** Tests of refusals: sign the proof with another key than the one requested. */
  proofFromOtherKey?: boolean;
}

/** What the request needs to know about the pod (a SimulatedPod has it all but the SA uid, read here). */
type PodRef = Pick<SimulatedPod, 'name' | 'uid' | 'namespace' | 'serviceAccount'>;

/**
 * Makes a key and creates one PodCertificateRequest for `pod` with the node's credentials. Returns the request's
 * name and the key. Throws the API error when the apiserver refuses it (validation, NodeRestriction).
 */
export async function createPodCertificateRequest(cluster: TestCluster, node: SimulatedNode, pod: PodRef, opts: PodCertificateRequestOptions): Promise<{ name: string; key: KeyObject }> {
  const key = generateKey(opts.keyType);
  const sa = await cluster.kube().core.readNamespacedServiceAccount({ name: pod.serviceAccount, namespace: pod.namespace });
  const keyFields = (opts.keyForm ?? 'stub') === 'stub'
    ? { stubPKCS10Request: stubPkcs10Request(opts.keyType, key).toString('base64') }
    : {
        stubPKCS10Request: undefined as unknown as string,
        pkixPublicKey: spkiDer(key).toString('base64'),
        proofOfPossession: proofOfPossession(opts.proofFromOtherKey ? generateKey(opts.keyType) : key, pod.uid).toString('base64'),
      };
  const created = await node.kube.certificates.createNamespacedPodCertificateRequest({
    namespace: pod.namespace,
    body: {
      apiVersion: 'certificates.k8s.io/v1beta1',
      kind: 'PodCertificateRequest',
      metadata: { generateName: 'req-', ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid }] },
      spec: {
        signerName: opts.signerName,
        podName: pod.name,
        podUID: pod.uid,
        serviceAccountName: pod.serviceAccount,
        serviceAccountUID: sa.metadata!.uid!,
        nodeName: node.name,
        nodeUID: node.uid,
        ...(opts.maxExpirationSeconds !== undefined ? { maxExpirationSeconds: opts.maxExpirationSeconds } : {}),
        ...keyFields,
      },
    },
  });
  return { name: created.metadata!.name!, key };
}

export interface RequestAnswer {
  readonly type: 'Issued' | 'Denied' | 'Failed';
  readonly reason: string;
  readonly message: string;
  readonly status: k8s.V1beta1PodCertificateRequestStatus;
}

/** Polls the request (as the node) until it has a terminal condition. */
export async function waitForAnswer(node: SimulatedNode, namespace: string, name: string, timeoutMs = 30_000): Promise<RequestAnswer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pcr = await node.kube.certificates.readNamespacedPodCertificateRequest({ name, namespace });
    const c = (pcr.status?.conditions ?? []).find((x) => ['Issued', 'Denied', 'Failed'].includes(x.type) && x.status === 'True');
    if (c) return { type: c.type as RequestAnswer['type'], reason: c.reason, message: c.message, status: pcr.status! };
    if (Date.now() > deadline) throw new Error(`PodCertificateRequest ${namespace}/${name}: no answer after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

// ---- The projected volume ----

export interface ProjectionOptions extends PodCertificateRequestOptions {
  /** Relative to the pod root, as a volume mount would place it. */
  credentialBundlePath: string;
  /** The clusterTrustBundle source: every bundle of this signer, merged into this file (relative to the pod root). */
  trustBundle?: { signerName: string; path: string };
  /** Drives the refresh timer; default the system clock. */
  clock?: Clock;
}

export interface ProjectionState {
  readonly phase: 'pending' | 'issued' | 'denied' | 'failed';
  /** Names of the requests made so far, oldest first. */
  readonly requests: readonly string[];
  /** The request whose certificate is in the file. */
  readonly current?: string;
  readonly reason?: string;
  readonly message?: string;
  /** Of the certificate in the file (ms since the epoch). */
  readonly beginRefreshAt?: number;
  readonly notAfter?: number;
  /** The refresh is due at this clock time (beginRefreshAt + jitter). */
  readonly refreshDueAt?: number;
}

export interface PodCertificateVolume {
  readonly credentialBundlePath: string;
  readonly trustBundlePath?: string;
  state(): ProjectionState;
  /** Resolves once `predicate(state)` holds (polling); rejects on timeout with the last state. */
  waitFor(predicate: (s: ProjectionState) => boolean, timeoutMs?: number): Promise<ProjectionState>;
  stop(): Promise<void>;
}

/** Pod start in kubelet terms: request, wait, write; then refresh at beginRefreshAt until stopped. */
export async function projectPodCertificate(cluster: TestCluster, node: SimulatedNode, pod: SimulatedPod, opts: ProjectionOptions): Promise<PodCertificateVolume> {
  const clock = opts.clock ?? systemClock;
  const credentialBundlePath = path.join(pod.root, opts.credentialBundlePath);
  const trustBundlePath = opts.trustBundle ? path.join(pod.root, opts.trustBundle.path) : undefined;
  for (const p of [credentialBundlePath, trustBundlePath]) if (p) fs.mkdirSync(path.dirname(p), { recursive: true });
  let state: ProjectionState = { phase: 'pending', requests: [] };
  let stopped = false;
  let refreshTimer: Timer | undefined;

  const cycle = async (): Promise<void> => {
    if (stopped) return;
    const { name, key } = await createPodCertificateRequest(cluster, node, pod, opts);
    state = { ...state, requests: [...state.requests, name] };
    const answer = await waitForAnswer(node, pod.namespace, name, 60_000);
    if (stopped) return;
    if (answer.type !== 'Issued') {
      // Denied and Failed are final for this projection; an already written certificate stays in place.
      state = { ...state, phase: answer.type === 'Denied' ? 'denied' : 'failed', reason: answer.reason, message: answer.message };
      return;
    }
    const keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeFileAtomic(credentialBundlePath, keyPem + answer.status.certificateChain!, 0o600);
    const beginRefreshAt = new Date(answer.status.beginRefreshAt!).getTime();
    const refreshDueAt = beginRefreshAt + Math.floor(Math.random() * 5 * 60_000);
    state = { ...state, phase: 'issued', current: name, reason: answer.reason, message: answer.message, beginRefreshAt, notAfter: new Date(answer.status.notAfter!).getTime(), refreshDueAt };
    refreshTimer = clock.setTimer(() => void cycle().catch(report), Math.max(0, refreshDueAt - clock.now()));
  };
  const report = (err: unknown) => {
    // Kubelet keeps the old certificate and tries again on its next pass; here the error goes to the state.
    state = { ...state, message: `refresh failed: ${(err as Error).message}` };
  };

  let bundles: Informer<k8s.V1beta1ClusterTrustBundle> | undefined;
  if (opts.trustBundle && trustBundlePath) {
    bundles = clusterTrustBundleInformer(node.kube, opts.trustBundle.signerName, { clock: systemClock, log: silentLogger });
    const informer = bundles;
    const writeBundle = () => {
      if (stopped) return;
      // Merged and deduplicated, as kubelet does (order may differ from the objects').
      const seen = new Set<string>();
      const blocks: string[] = [];
      for (const ctb of informer.list()) {
        for (const block of ctb.spec.trustBundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? []) {
          const b = block.endsWith('\n') ? block : `${block}\n`;
          if (!seen.has(b)) blocks.push(b);
          seen.add(b);
        }
      }
      if (blocks.length > 0) writeFileAtomic(trustBundlePath, blocks.join(''));
    };
    for (const event of ['add', 'update', 'delete'] as const) informer.on(event, writeBundle);
    await informer.start();
    writeBundle();
  }

  // Pod start blocks until the first answer.
  await cycle();

  return {
    credentialBundlePath,
    trustBundlePath,
    state: () => state,
    async waitFor(predicate, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(state)) {
        if (Date.now() > deadline) throw new Error(`pod certificate volume: condition not met after ${timeoutMs} ms; state ${JSON.stringify(state)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return state;
    },
    async stop() {
      stopped = true;
      refreshTimer?.cancel();
      await bundles?.stop();
    },
  };
}
