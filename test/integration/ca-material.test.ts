/**
 * `citadel ca` key material against the real apiserver: plugged-in root + intermediate (directory and Secret,
 * both layouts), hot reload (new intermediate under the same root, a different root, invalid material),
 * corrupt or incomplete cacerts stopping the CA with a clear message, the serving certificate following the key
 * material, and replicas racing to create the self-signed root.
 */
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, parseCertificates, privateKeyToPem, type ParsedCertificate } from '../../src/pki/index.js';
import { getCluster, startPod, type TestCluster } from '../harness/index.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { retryUntilPasses } from '../support/wait.js';
import { ensureBuilt, makeCsr, metricValue, opensslVerifyChain, requestCert, spawnCa, startCa, type CaProcess } from './ca-process.js';

const TD = 'cluster.local';
const DAY = 24 * 3600_000;
let cluster: TestCluster;
let tmp: string;
const running: CaProcess[] = [];

interface Ca {
  cert: ParsedCertificate;
  key: CryptoKeyLike;
  pem: string;
  keyPem: string;
}
type CryptoKeyLike = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

async function makeRoot(name: string, ttlMs = 365 * DAY): Promise<Ca> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const issued = issueCaCertificate({ key: privateKey, organization: TD, commonName: name, ttlMs, now: Date.now() });
  return { cert: parseCertificate(issued.pem), key: privateKey, pem: issued.pem, keyPem: privateKeyToPem(privateKey) };
}

async function makeIntermediate(root: Ca, name: string, opts: { ttlMs?: number; now?: number } = {}): Promise<Ca> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const issued = issueCaCertificate({
    key: privateKey, signer: { cert: root.cert, key: root.key }, organization: TD, commonName: name,
    ttlMs: opts.ttlMs ?? 180 * DAY, now: opts.now ?? Date.now(),
  });
  return { cert: parseCertificate(issued.pem), key: privateKey, pem: issued.pem, keyPem: privateKeyToPem(privateKey) };
}

/** Istio's cacerts layout: cert-chain.pem is the intermediate followed by the root (as Istio's tooling writes it). */
function istioFiles(inter: Ca, root: Ca, roots: readonly Ca[] = [root]): Record<string, string> {
  return {
    'ca-cert.pem': inter.pem,
    'ca-key.pem': inter.keyPem,
    'cert-chain.pem': inter.pem + root.pem,
    'root-cert.pem': roots.map((r) => r.pem).join(''),
  };
}

function writeDir(dir: string, files: Record<string, string>): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    const tmpFile = path.join(dir, `.${name}.tmp`);
    fs.writeFileSync(tmpFile, text);
    fs.renameSync(tmpFile, path.join(dir, name));
  }
}

/** A namespace with the citadel RBAC, a Pod-bound token for `sa`, and a CSR for it. */
async function setup(prefix: string) {
  const ns = await cluster.createNamespace(prefix);
  const { kubeconfig } = await citadelClients(cluster, ns);
  return { ns, kubeconfig };
}

async function issue(ca: CaProcess, ns: string, rootCaPem: string, sa = 'app') {
  const pod = await startPod(cluster, { namespace: ns, serviceAccount: sa, watchRootCert: false });
  try {
    const { csr } = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/${sa}`);
    return await requestCert({ port: ca.grpcPort, namespace: ns, rootCaPem, csr, token: fs.readFileSync(pod.tokenPath, 'utf8') });
  } finally {
    await pod.delete();
  }
}

/** The serving certificate the CA presents right now (fresh TLS connection). */
function servingCert(port: number, ns: string): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: `citadel.${ns}.svc`, rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
      const cert = socket.getPeerCertificate(true);
      socket.end();
      resolve(cert);
    });
    socket.on('error', reject);
  });
}

/** Retries a block of assertions until the CA has converged. */
const eventually = <T>(fn: () => Promise<T>) => retryUntilPasses(fn, { timeoutMs: 15_000, intervalMs: 200 });

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
  tmp = fs.mkdtempSync('/tmp/ca-material-');
}, 180_000);

afterAll(async () => {
  await Promise.all(running.map((c) => c.stop()));
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('plugged-in key material', () => {
  it('signs under a root + intermediate from --cacerts-dir, switches to a new intermediate and to a new root without a restart', async () => {
    const { ns, kubeconfig } = await setup('ca-dir');
    const root = await makeRoot('Root A');
    const interA = await makeIntermediate(root, 'Intermediate A1');
    const dir = path.join(tmp, ns);
    writeDir(dir, istioFiles(interA, root));
    const ca = await startCa({ kubeconfig, namespace: ns, cacertsDir: dir, args: ['--cacerts-poll-interval', '200ms', '--extra-dns-names', 'ca.example.test', '--plugged-root-publish-delay', '12s'] });
    running.push(ca);

    // Response chain: [leaf, intermediate, root bundle]; openssl agrees.
    const chain = await issue(ca, ns, root.pem);
    expect(chain).toHaveLength(3);
    expect(chain[1]).toBe(interA.cert.pem);
    expect(chain[2]).toBe(root.cert.pem);
    expect(parseCertificate(chain[0]!).issuer).toBe(interA.cert.subject);
    expect(await opensslVerifyChain(chain, tmp)).toMatch(/OK/);
    // No istio-ca-secret is made in plugged mode.
    await expect(cluster.kube().core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns })).rejects.toMatchObject({ code: 404 });

    // The serving certificate is issued by the CA itself, with the Service names.
    const serving = await servingCert(ca.grpcPort, ns);
    expect(serving.subjectaltname).toContain(`DNS:citadel.${ns}.svc`);
    expect(serving.subjectaltname).toContain(`DNS:citadel.${ns}.svc.cluster.local`);
    expect(serving.subjectaltname).toContain('DNS:ca.example.test');
    expect(serving.issuer.CN).toBe('Intermediate A1');

    // A new intermediate under the same root: signing switches, the serving cert follows, no restart.
    const interA2 = await makeIntermediate(root, 'Intermediate A2');
    writeDir(dir, istioFiles(interA2, root));
    await ca.waitForLog((l) => l.msg === 'CA key material switched');
    const chain2 = await issue(ca, ns, root.pem);
    expect(parseCertificate(chain2[0]!).issuer).toBe(interA2.cert.subject);
    expect(chain2[1]).toBe(interA2.cert.pem);
    expect(chain2[2]).toBe(root.cert.pem);
    expect(await opensslVerifyChain(chain2, tmp)).toMatch(/OK/);
    await eventually(async () => expect((await servingCert(ca.grpcPort, ns)).issuer.CN).toBe('Intermediate A2'));

    // Invalid material (key of another certificate) is refused: signing continues with A2, the error is counted.
    const stray = await makeIntermediate(root, 'Stray');
    writeDir(dir, { ...istioFiles(interA2, root), 'ca-key.pem': stray.keyPem });
    await ca.waitForLog((l) => l.msg === 'new CA key material refused; still signing with the previous material' && String(l.reason).includes('ca-key.pem'));
    expect(metricValue(await ca.metrics(), 'citadel_server_key_material_reload_err_count')).toBe(1);
    expect(parseCertificate((await issue(ca, ns, root.pem))[0]!).issuer).toBe(interA2.cert.subject);

    // A different root: published first (the bundle gains root B while Intermediate A2 still signs, the serving
    // certificate too), signing moves after --plugged-root-publish-delay; the bundle keeps the old root next to
    // the new one, so old leaves still verify.
    const rootB = await makeRoot('Root B');
    const interB = await makeIntermediate(rootB, 'Intermediate B1');
    writeDir(dir, istioFiles(interB, rootB));
    await ca.waitForLog((l) => l.msg === 'new CA root published in the trust bundle; the new material signs once the publish delay has passed');
    const published = await issue(ca, ns, root.pem);
    expect(parseCertificate(published[0]!).issuer).toBe(interA2.cert.subject);
    expect(parseCertificates(published[2]!).map((c) => c.subject).sort()).toEqual([root.cert.subject, rootB.cert.subject].sort());
    expect((await servingCert(ca.grpcPort, ns)).issuer.CN).toBe('Intermediate A2');
    await retryUntilPasses(async () => {
      const c = await issue(ca, ns, root.pem + rootB.pem);
      expect(parseCertificate(c[0]!).issuer).toBe(interB.cert.subject);
    }, { timeoutMs: 30_000, intervalMs: 500 });
    const chain3 = await issue(ca, ns, root.pem + rootB.pem);
    const bundleRoots = parseCertificates(chain3[2]!).map((c) => c.subject);
    expect(bundleRoots).toEqual([rootB.cert.subject, root.cert.subject]);
    expect(await opensslVerifyChain(chain3, tmp)).toMatch(/OK/);
    // A leaf issued under the old root verifies against the new bundle.
    expect(await opensslVerifyChain([chain2[0]!, chain2[1]!, chain3[2]!], tmp)).toMatch(/OK/);
    // The serving certificate now chains to root B.
    await eventually(async () => expect((await servingCert(ca.grpcPort, ns)).issuer.CN).toBe('Intermediate B1'));
    const m = await ca.metrics();
    expect(metricValue(m, 'citadel_server_key_material_reload_count')).toBe(2);
    expect(metricValue(m, 'citadel_server_root_cert_expiry_timestamp')).toBe(Math.floor(rootB.cert.notAfter / 1000));
    expect(metricValue(m, 'citadel_server_cert_chain_expiry_timestamp')).toBe(Math.floor(interB.cert.notAfter / 1000));
  });

  it('reads the cacerts Secret (kubernetes.io/tls layout) and follows changes to it', async () => {
    const { ns, kubeconfig } = await setup('ca-secret');
    const root = await makeRoot('Root S');
    const inter1 = await makeIntermediate(root, 'Intermediate S1');
    const toTls = (inter: Ca) => ({ 'tls.crt': inter.pem + root.pem, 'tls.key': inter.keyPem, 'ca.crt': root.pem });
    const b64 = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    const core = cluster.kube().core;
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'cacerts' }, type: 'kubernetes.io/tls', data: b64(toTls(inter1)) } });
    const ca = await startCa({ kubeconfig, namespace: ns });
    running.push(ca);
    const chain = await issue(ca, ns, root.pem);
    expect(chain.map((c) => parseCertificates(c)[0]!.subject)).toEqual(['', inter1.cert.subject, root.cert.subject]);
    expect(await opensslVerifyChain(chain, tmp)).toMatch(/OK/);

    const inter2 = await makeIntermediate(root, 'Intermediate S2');
    await core.replaceNamespacedSecret({ name: 'cacerts', namespace: ns, body: { metadata: { name: 'cacerts' }, type: 'kubernetes.io/tls', data: b64(toTls(inter2)) } });
    await eventually(async () => expect(parseCertificate((await issue(ca, ns, root.pem))[0]!).issuer).toBe(inter2.cert.subject));
    expect(ca.logs().filter((l) => l.msg === 'secret watch failed; retrying')).toEqual([]);
    // A broken update is refused; signing continues with S2.
    await core.replaceNamespacedSecret({ name: 'cacerts', namespace: ns, body: { metadata: { name: 'cacerts' }, type: 'kubernetes.io/tls', data: b64({ ...toTls(inter2), 'ca.crt': 'garbage' }) } });
    await ca.waitForLog((l) => l.msg === 'new CA key material refused; still signing with the previous material' && String(l.reason).includes('ca.crt'));
    expect(parseCertificate((await issue(ca, ns, root.pem))[0]!).issuer).toBe(inter2.cert.subject);
  });

  it('stops at start with a message naming the file when cacerts is corrupt or incomplete', async () => {
    const { ns, kubeconfig } = await setup('ca-bad');
    const root = await makeRoot('Root X');
    const inter = await makeIntermediate(root, 'Intermediate X');
    const otherRoot = await makeRoot('Root Y');
    const expiredInter = await makeIntermediate(root, 'Expired X', { ttlMs: DAY, now: Date.now() - 3 * DAY });
    const good = istioFiles(inter, root);
    const leafKey = await generateKeyPair('ecdsa-p256');
    const leaf = issueWorkloadCertificate({ signer: { cert: root.cert, key: root.key }, publicKey: leafKey.publicKey, spiffeId: `spiffe://${TD}/ns/x/sa/y`, ttlMs: DAY, now: Date.now() });
    const cases: Array<{ name: string; files: Record<string, string>; message: RegExp }> = [
      { name: 'missing key', files: { 'ca-cert.pem': good['ca-cert.pem']!, 'cert-chain.pem': good['cert-chain.pem']!, 'root-cert.pem': good['root-cert.pem']! }, message: /ca-key\.pem: missing/ },
      { name: 'only root-cert.pem', files: { 'root-cert.pem': root.pem }, message: /ca-cert\.pem, ca-key\.pem, cert-chain\.pem: missing/ },
      { name: 'key of another cert', files: { ...good, 'ca-key.pem': otherRoot.keyPem }, message: /ca-key\.pem: does not match/ },
      { name: 'garbage root', files: { ...good, 'root-cert.pem': 'not a certificate' }, message: /root-cert\.pem: / },
      { name: 'wrong root', files: { ...good, 'root-cert.pem': otherRoot.pem }, message: /cert-chain\.pem: ca-cert\.pem does not chain to root-cert\.pem/ },
      { name: 'expired signing cert', files: istioFiles(expiredInter, root), message: /ca-cert\.pem: expired/ },
      { name: 'not a CA', files: { ...good, 'ca-cert.pem': leaf.pem, 'ca-key.pem': privateKeyToPem(leafKey.privateKey) }, message: /ca-cert\.pem: is not a CA certificate/ },
    ];
    for (const c of cases) {
      const dir = path.join(tmp, `${ns}-${c.name.replace(/\W+/g, '-')}`);
      writeDir(dir, c.files);
      const { stderr, exited } = spawnCa(['--kubeconfig', kubeconfig, '--namespace', ns, '--cacerts-dir', dir, '--grpc-address', '127.0.0.1:0', '--monitoring-address', '127.0.0.1:0', '--controllers=false']);
      const code = await exited;
      expect(code, c.name).toBe(1);
      const lastLine = stderr().trim().split('\n').pop()!;
      expect(lastLine, c.name).toMatch(/^citadel ca: /);
      expect(lastLine, c.name).toContain(`directory ${dir}`);
      expect(lastLine, c.name).toMatch(c.message);
    }
    // Never fell back to self-signed.
    await expect(cluster.kube().core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns })).rejects.toMatchObject({ code: 404 });
  });

  it('says clearly when the ServiceAccount may not create TokenReviews, and names a bad flag', async () => {
    const ns = await cluster.createNamespace('ca-norbac');
    await cluster.createServiceAccount(ns, 'citadel');
    const kubeconfig = await cluster.serviceAccountKubeconfig(ns, 'citadel');
    const { stderr, exited } = spawnCa(['--kubeconfig', kubeconfig, '--namespace', ns, '--grpc-address', '127.0.0.1:0', '--monitoring-address', '127.0.0.1:0', '--controllers=false']);
    expect(await exited).toBe(2);
    expect(stderr()).toMatch(/may not create tokenreviews\.authentication\.k8s\.io/);

    const bad = spawnCa(['--workload-cert-ttl', 'soon']);
    expect(await bad.exited).toBe(2);
    expect(bad.stderr()).toContain('--workload-cert-ttl (DEFAULT_WORKLOAD_CERT_TTL)');
    const env = spawnCa([], { MAX_WORKLOAD_CERT_TTL: '1h', DEFAULT_WORKLOAD_CERT_TTL: '2h' });
    expect(await env.exited).toBe(2);
    expect(env.stderr()).toContain('--workload-cert-ttl: must not exceed --max-workload-cert-ttl');
  });
});

describe('self-signed root', () => {
  it('ends with exactly one root when several CAs start at the same moment on an empty namespace', async () => {
    const { ns, kubeconfig } = await setup('ca-race');
    const cas = await Promise.all([0, 1, 2].map(() => startCa({ kubeconfig, namespace: ns })));
    running.push(...cas);
    const secret = await cluster.kube().core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns });
    const root = Buffer.from(secret.data!['ca-cert.pem']!, 'base64').toString('utf8');
    const created = cas.filter((c) => c.logs().some((l) => l.msg === 'created a self-signed root'));
    expect(created).toHaveLength(1);
    // Every replica signs under that one root.
    for (const ca of cas) {
      const chain = await issue(ca, ns, root);
      expect(chain[1]).toBe(parseCertificate(root).pem);
      expect(await opensslVerifyChain(chain, tmp)).toMatch(/OK/);
    }
    await Promise.all(cas.map((c) => c.stop()));
  });
});
