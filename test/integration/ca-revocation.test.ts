/**
 * `citadel ca` revocation against the real apiserver, running as its ServiceAccount with deploy/base/rbac.yaml:
 * a bad ca-crl.pem never stops the CA from starting or its key material from rotating (istio/istio#61075), the
 * revocation list in Secret citadel-revocations refuses a SPIFFE ID new certificates with PERMISSION_DENIED naming
 * the revocation (and a revoked client certificate cannot renew itself), and un-revoking lets it back.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, issueCaCertificate, issueCrl, parseCertificate, privateKeyToPem, type ParsedCertificate } from '../../src/pki/index.js';
import { getCluster, startPod, type TestCluster } from '../harness/index.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { retryUntilPasses } from '../support/wait.js';
import { ensureBuilt, makeCsr, metricValue, requestCert, startCa, type CaProcess } from './ca-process.js';

const TD = 'cluster.local';
const DAY = 24 * 3600_000;
let cluster: TestCluster;
const running: CaProcess[] = [];
const eventually = <T>(fn: () => Promise<T>) => retryUntilPasses(fn, { timeoutMs: 15_000, intervalMs: 200 });

type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
interface Ca { cert: ParsedCertificate; key: Key; pem: string; keyPem: string }

async function makeCa(name: string, signer?: Ca): Promise<Ca> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const issued = issueCaCertificate({ key: privateKey, organization: TD, commonName: name, ttlMs: 365 * DAY, now: Date.now(), ...(signer ? { signer: { cert: signer.cert, key: signer.key } } : {}) });
  return { cert: parseCertificate(issued.pem), key: privateKey, pem: issued.pem, keyPem: privateKeyToPem(privateKey) };
}

const b64 = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
const cacerts = (inter: Ca, root: Ca, crl: string) => b64({ 'ca-cert.pem': inter.pem, 'ca-key.pem': inter.keyPem, 'cert-chain.pem': inter.pem + root.pem, 'root-cert.pem': root.pem, 'ca-crl.pem': crl });

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
}, 300_000);
afterAll(async () => {
  for (const ca of running) await ca.stop();
});

describe('revocation in citadel ca', () => {
  it('starts and rotates despite bad CRLs, refuses a revoked SPIFFE ID and a revoked client certificate, and un-revokes', async () => {
    const ns = await cluster.createNamespace('ca-revoke');
    const { kubeconfig } = await citadelClients(cluster, ns);
    const core = cluster.kube().core;
    const root = await makeCa('Root R');
    const inter1 = await makeCa('Intermediate R1', root);
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'cacerts' }, data: cacerts(inter1, root, 'not a CRL') } });
    const ca = await startCa({ kubeconfig, namespace: ns });
    running.push(ca);
    await ca.waitForLog((l) => l.msg === 'ca-crl.pem refused; the previous CRLs stay published (key material is not affected)');
    expect(metricValue(await ca.metrics(), 'citadel_server_crl_refused_count', 'source="ca-crl.pem"')).toBe(1);

    const issue = async (sa: string, client?: { chain: string[]; key: Key }) => {
      const pod = await startPod(cluster, { namespace: ns, serviceAccount: sa, watchRootCert: false });
      try {
        const { csr, key } = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/${sa}`);
        const chain = await requestCert({
          port: ca.grpcPort, namespace: ns, rootCaPem: root.pem, csr,
          ...(client ? { clientCertChainPem: client.chain.slice(0, -1).join(''), clientKeyPem: privateKeyToPem(client.key) } : { token: fs.readFileSync(pod.tokenPath, 'utf8') }),
        });
        return { chain, key };
      } finally {
        await pod.delete();
      }
    };
    const first = await issue('app');
    expect(parseCertificate(first.chain[0]!).issuer).toBe(inter1.cert.subject);

    // Key material and an expired root CRL in one update: the material switches, the CRL is refused.
    const inter2 = await makeCa('Intermediate R2', root);
    const expired = issueCrl({ signer: { cert: root.cert, key: root.key }, number: 1, thisUpdate: Date.now() - 2 * DAY, nextUpdate: Date.now() - DAY, entries: [] }).pem;
    await core.replaceNamespacedSecret({ name: 'cacerts', namespace: ns, body: { metadata: { name: 'cacerts' }, data: cacerts(inter2, root, expired) } });
    await eventually(async () => expect(parseCertificate((await issue('other')).chain[0]!).issuer).toBe(inter2.cert.subject));
    await ca.waitForLog((l) => l.msg === 'ca-crl.pem refused; the previous CRLs stay published (key material is not affected)' && String(l.reason).includes('expired'));

    // The revocation list, read and watched with the CA's own RBAC.
    const setList = async (text: string) => {
      const body = { metadata: { name: 'citadel-revocations' }, stringData: { revoked: text } };
      try {
        await core.replaceNamespacedSecret({ name: 'citadel-revocations', namespace: ns, body });
      } catch {
        await core.createNamespacedSecret({ namespace: ns, body });
      }
    };
    await setList(`spiffe://${TD}/ns/${ns}/sa/app keyCompromise\n${parseCertificate(first.chain[0]!).serialHex}\n`);
    await eventually(async () => {
      const err = await issue('app').then(() => undefined, (e: unknown) => e as { code?: number; details?: string; message: string });
      expect(err?.message).toMatch(/PERMISSION_DENIED|is revoked/);
      expect(err?.message).toContain(`spiffe://${TD}/ns/${ns}/sa/app is revoked (citadel-revocations line 1, keyCompromise)`);
    });
    expect(metricValue(await ca.metrics(), 'citadel_server_revoked_refusal_count')).toBeGreaterThanOrEqual(1);
    // The revoked certificate cannot be used to renew over mTLS (VM mode) either.
    const renewal = await issue('app', first).then(() => undefined, (e: unknown) => e as Error);
    expect(renewal?.message).toMatch(/UNAUTHENTICATED|client certificate rejected/);
    await ca.waitForLog((l) => l.msg === 'authentication failed' && String(l.detail).includes(`certificate ${parseCertificate(first.chain[0]!).serialHex} is revoked`));

    await setList('# nothing revoked\n');
    await eventually(async () => expect((await issue('app')).chain).toHaveLength(3));
  });
});
