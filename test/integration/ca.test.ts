/**
 * `citadel ca` (self-signed mode) against the real apiserver, run as the citadel ServiceAccount with exactly
 * deploy/base/rbac.yaml: issuance for a Pod's bound token, renewal over mTLS, every refusal with its status and
 * nothing issued, JWT-SVIDs, metrics, rate limit, SIGTERM. Certificates are checked with the openssl command.
 */
import { createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCaClient } from '../../src/grpc/client.js';
import { decodeJwtSvid, privateKeyToPem, parseCertificate, parseCertificates } from '../../src/pki/index.js';
import { getCluster, startPod, type TestCluster } from '../harness/index.js';
import { openssl } from '../harness/openssl.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { waitFor } from '../support/wait.js';
import { ensureBuilt, makeCsr, metricValue, opensslVerifyChain, requestCert, startCa, type CaProcess } from './ca-process.js';

const TD = 'cluster.local';
let cluster: TestCluster;
let ns: string;
let kubeconfig: string;
let ca: CaProcess;
let bundle: string;
let tmp: string;

/** The gRPC status number of a failed call (the client wraps grpc-js's ServiceError). */
async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    const cause = (err as { cause?: { code?: number } }).cause;
    if (typeof cause?.code === 'number') return cause.code;
    throw err;
  }
  throw new Error('the call succeeded');
}

const STATUS = { INVALID_ARGUMENT: 3, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, UNAUTHENTICATED: 16 };

/** A JWT with the claims of `template` changed by `edit`, signed RS256 with `key` (kid kept). */
function resignJwt(template: string, key: KeyObject, edit: (claims: Record<string, unknown>) => void): string {
  const [h, p] = template.split('.');
  const claims = JSON.parse(Buffer.from(p!, 'base64url').toString('utf8')) as Record<string, unknown>;
  edit(claims);
  const head = h!;
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const signer = createSign('RSA-SHA256');
  signer.update(`${head}.${body}`);
  return `${head}.${body}.${signer.sign(key).toString('base64url')}`;
}

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
  ns = await cluster.createNamespace('ca');
  ({ kubeconfig } = await citadelClients(cluster, ns));
  tmp = fs.mkdtempSync('/tmp/ca-test-');
  ca = await startCa({ kubeconfig, namespace: ns });
  const secret = await cluster.kube().core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns });
  expect(secret.type).toBe('istio.io/ca-root');
  bundle = Buffer.from(secret.data!['root-cert.pem']!, 'base64').toString('utf8');
}, 180_000);

afterAll(async () => {
  await ca?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('citadel ca, self-signed', () => {
  it('writes istio-ca-secret with Istio keys and is ready', async () => {
    const secret = await cluster.kube().core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns });
    expect(Object.keys(secret.data!).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'key.pem', 'root-cert.pem']);
    const root = parseCertificate(Buffer.from(secret.data!['ca-cert.pem']!, 'base64').toString('utf8'));
    expect(root.isCa).toBe(true);
    expect(root.selfSigned).toBe(true);
    expect(root.subject).toBe(`O=${TD}`);
    expect(root.key.type).toBe('ecdsa-p256');
    expect(root.notAfter - root.notBefore).toBeGreaterThan(3649 * 24 * 3600_000);
    expect((await fetch(`http://127.0.0.1:${ca.monitoringPort}/readyz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${ca.monitoringPort}/healthz`)).status).toBe(200);
    // The watch on istio-ca-secret runs with exactly the deploy/base RBAC (get + watch on that name). A watch that
    // works says nothing, a refused one fails at once: a second without the failure line is the only evidence.
    await new Promise((r) => setTimeout(r, 1000));
    expect(ca.logs().filter((l) => l.msg === 'secret watch failed; retrying')).toEqual([]);
  });

  it('runs on Node 24 or later with OpenSSL 3.5 or later (its start-up line says which)', () => {
    const runtime = ca.logs().find((l) => l.msg === 'citadel ca serving')!.runtime as { node: string; openssl: string };
    expect(Number(runtime.node.slice(1).split('.')[0])).toBeGreaterThanOrEqual(24);
    expect(runtime.openssl).toMatch(/^3\.([5-9]|\d\d)\./);
  });

  it("issues a pod's bound token a certificate for exactly its SPIFFE ID, verified by openssl; renews with the client certificate", async () => {
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'sleep', watchRootCert: false });
    try {
      const token = fs.readFileSync(pod.tokenPath, 'utf8');
      const id = `spiffe://${TD}/ns/${ns}/sa/sleep`;
      const { key, csr } = await makeCsr(id);
      const chain = await requestCert({ port: ca.grpcPort, namespace: ns, rootCaPem: bundle, csr, token });
      expect(chain).toHaveLength(2);
      expect(chain[1]).toBe(bundle);
      expect(await opensslVerifyChain(chain, tmp)).toMatch(/leaf\.pem: OK/);
      const leaf = parseCertificate(chain[0]!);
      expect(leaf.uris).toEqual([id]);
      expect(leaf.dnsNames).toEqual([]);
      expect(leaf.isCa).toBe(false);
      expect(leaf.notAfter - Date.now()).toBeGreaterThan(23 * 3600_000);
      expect(leaf.notAfter - Date.now()).toBeLessThanOrEqual(24 * 3600_000 + 5000);
      fs.writeFileSync(path.join(tmp, 'leaf.pem'), chain[0]!);
      expect(await openssl(['x509', '-noout', '-ext', 'subjectAltName', '-in', path.join(tmp, 'leaf.pem')])).toContain(`URI:${id}`);

      // The audit line: identity, serial, pod; never the token.
      const audit = await ca.waitForLog((l) => l.audit === 'certificate-issued' && l.serial === leaf.serialHex);
      expect(audit).toMatchObject({ identity: id, pod: pod.name, keyType: 'ecdsa-p256', authn: 'token' });
      expect(ca.stderr()).not.toContain(token);

      // Renewal: the client certificate alone authenticates; the new certificate has the same identity.
      const renewal = await makeCsr(id);
      const renewed = await requestCert({
        port: ca.grpcPort, namespace: ns, rootCaPem: bundle, csr: renewal.csr, ttlSeconds: 3600,
        clientCertChainPem: chain[0]!, clientKeyPem: privateKeyToPem(key),
      });
      const renewedLeaf = parseCertificate(renewed[0]!);
      expect(renewedLeaf.uris).toEqual([id]);
      expect(renewedLeaf.serialHex).not.toBe(leaf.serialHex);
      expect(renewedLeaf.notAfter - Date.now()).toBeLessThanOrEqual(3600_000 + 5000);
      expect(await opensslVerifyChain(renewed, tmp)).toMatch(/OK/);
      await ca.waitForLog((l) => l.audit === 'certificate-issued' && l.serial === renewedLeaf.serialHex && l.authn === 'client-certificate');

      // A client certificate cannot get another identity.
      const other = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/other`);
      expect(await statusOf(requestCert({
        port: ca.grpcPort, namespace: ns, rootCaPem: bundle, csr: other.csr,
        clientCertChainPem: chain[0]!, clientKeyPem: privateKeyToPem(key),
      }))).toBe(STATUS.PERMISSION_DENIED);
    } finally {
      await pod.delete();
    }
  });

  it('refuses each bad request with its status and issues nothing', async () => {
    const before = await ca.metrics();
    const id = `spiffe://${TD}/ns/${ns}/sa/refused`;
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'refused', watchRootCert: false });
    const goodToken = fs.readFileSync(pod.tokenPath, 'utf8');
    const { csr } = await makeCsr(id);
    const call = (o: { csr?: string; token?: string; ttlSeconds?: number }) =>
      statusOf(requestCert({ port: ca.grpcPort, namespace: ns, rootCaPem: bundle, csr: o.csr ?? csr, token: o.token, ttlSeconds: o.ttlSeconds }));

    // No token.
    expect(await call({})).toBe(STATUS.UNAUTHENTICATED);
    // Wrong audience: a token for the apiserver's own audience.
    const apiToken = await cluster.tokenFor(ns, 'refused');
    expect(await call({ token: apiToken })).toBe(STATUS.UNAUTHENTICATED);
    // Expired: the apiserver's own signing key, claims of a real token, exp in the past.
    const saKey = fs.readFileSync(path.join(cluster.info.dir, 'pki', 'sa.key'), 'utf8');
    const { createPrivateKey } = await import('node:crypto');
    const now = Math.floor(Date.now() / 1000);
    const expired = resignJwt(goodToken, createPrivateKey(saKey), (c) => {
      c.iat = now - 7200;
      c.nbf = now - 7200;
      c.exp = now - 3600;
    });
    expect(await call({ token: expired })).toBe(STATUS.UNAUTHENTICATED);
    // Signed by another key (same claims, still valid by time).
    const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    expect(await call({ token: resignJwt(goodToken, otherKey, () => undefined) })).toBe(STATUS.UNAUTHENTICATED);
    // A token bound to a Pod that has been deleted (never used before, so no cache anywhere holds it).
    const gone = await startPod(cluster, { namespace: ns, serviceAccount: 'refused', watchRootCert: false });
    const goneToken = fs.readFileSync(gone.tokenPath, 'utf8');
    await gone.delete();
    expect(await call({ token: goneToken })).toBe(STATUS.UNAUTHENTICATED);

    // Authenticated, but the CSR asks for another ServiceAccount's identity.
    const otherSa = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/default`);
    expect(await call({ token: goodToken, csr: otherSa.csr })).toBe(STATUS.PERMISSION_DENIED);
    // A CSR whose signature does not verify (one byte of the signature flipped).
    const der = Buffer.from(csr.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    der[der.length - 5] = der[der.length - 5]! ^ 0x01;
    const badSig = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(await call({ token: goodToken, csr: badSig })).toBe(STATUS.INVALID_ARGUMENT);
    // RSA-1024 (made by openssl: our own code refuses to make such a CSR).
    const weakKey = path.join(tmp, 'weak.key');
    await openssl(['req', '-new', '-newkey', 'rsa:1024', '-nodes', '-keyout', weakKey, '-out', path.join(tmp, 'weak.csr'), '-subj', '/', '-addext', `subjectAltName=URI:${id}`]);
    expect(await call({ token: goodToken, csr: fs.readFileSync(path.join(tmp, 'weak.csr'), 'utf8') })).toBe(STATUS.INVALID_ARGUMENT);
    // TTL above the maximum (90 days).
    expect(await call({ token: goodToken, ttlSeconds: 91 * 24 * 3600 })).toBe(STATUS.INVALID_ARGUMENT);
    // Garbage bytes in csr.
    expect(await call({ token: goodToken, csr: '\u0000\u00ff garbage \u0001' })).toBe(STATUS.INVALID_ARGUMENT);
    // Over-size request: refused by the transport before it is decoded.
    expect(await call({ token: goodToken, csr: 'A'.repeat(200_000) })).toBe(STATUS.RESOURCE_EXHAUSTED);

    const details = ca.logs().filter((l) => l.msg === 'authentication failed').map((l) => String(l.detail));
    // Each was refused for its own reason (the apiserver's words, in the CA's log only).
    expect(details.slice(-5)).toEqual([
      expect.stringContaining('no bearer token'),
      expect.stringMatching(/audiences .* is invalid for the target audiences \["istio-ca"\]/),
      expect.stringContaining('token has expired'),
      expect.stringContaining('cryptographic primitive'),
      expect.stringContaining('has been invalidated'),
    ]);
    const after = await ca.metrics();
    const delta = (name: string, labels = '') => metricValue(after, name, labels) - metricValue(before, name, labels);
    expect(delta('citadel_server_success_cert_issuance_count')).toBe(0);
    expect(delta('citadel_server_csr_count')).toBe(10);
    const authFailures = ['no_credentials', 'token_rejected'].reduce((n, r) => n + delta('citadel_server_authentication_failure_count', `reason="${r}"`), 0);
    expect(authFailures).toBe(5);
    expect(delta('citadel_server_csr_sign_err_count', 'error="IDENTITY_MISMATCH"')).toBe(1);
    expect(delta('citadel_server_csr_sign_err_count', 'error="CSR_ERROR"')).toBe(3);
    expect(delta('citadel_server_csr_sign_err_count', 'error="TTL_ERROR"')).toBe(1);
    // The token itself is never logged.
    for (const t of [goodToken, apiToken, expired, goneToken]) expect(ca.stderr()).not.toContain(t);

    // And the same token with a correct request still works (nothing above was cached as a failure).
    const ok = await requestCert({ port: ca.grpcPort, namespace: ns, rootCaPem: bundle, csr, token: goodToken });
    expect(parseCertificate(ok[0]!).uris).toEqual([id]);
    await pod.delete();
  });

  it('mints JWT-SVIDs over citadel.v1.JwtSvidService, authenticated exactly like CreateCertificate', async () => {
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'jwt', watchRootCert: false });
    const client = createCaClient({ address: `127.0.0.1:${ca.grpcPort}`, rootCaPem: bundle, serverName: `citadel.${ns}.svc` });
    try {
      const token = fs.readFileSync(pod.tokenPath, 'utf8');
      const id = `spiffe://${TD}/ns/${ns}/sa/jwt`;
      const jwt = await client.createJwtSvid({ audience: ['db', 'cache'], validityDurationSeconds: 0, bearerToken: token });
      const { header, claims } = decodeJwtSvid(jwt);
      expect(header).toMatchObject({ alg: 'ES256', typ: 'JWT', kid: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
      expect(claims).toMatchObject({ sub: id, aud: ['db', 'cache'] });
      expect((claims.exp as number) - (claims.iat as number)).toBe(300); // --jwt-svid-ttl default
      const audit = await ca.waitForLog((l) => l.audit === 'jwt-svid-issued' && l.identity === id);
      expect(audit).toMatchObject({ audience: ['db', 'cache'], kid: header.kid, authn: 'token' });
      expect(ca.stderr()).not.toContain(jwt.split('.')[2]);

      expect(await statusOf(client.createJwtSvid({ audience: ['db'], validityDurationSeconds: 3601, bearerToken: token }))).toBe(STATUS.INVALID_ARGUMENT);
      expect(await statusOf(client.createJwtSvid({ audience: [], validityDurationSeconds: 0, bearerToken: token }))).toBe(STATUS.INVALID_ARGUMENT);
      expect(await statusOf(client.createJwtSvid({ audience: ['db'], validityDurationSeconds: 0 }))).toBe(STATUS.UNAUTHENTICATED);
      expect(await statusOf(client.createJwtSvid({ audience: ['db'], validityDurationSeconds: 0, bearerToken: `${token}x` }))).toBe(STATUS.UNAUTHENTICATED);

      // A client certificate the CA issued authenticates too, for its own identity.
      const { key, csr } = await makeCsr(id);
      const chain = await requestCert({ port: ca.grpcPort, namespace: ns, rootCaPem: bundle, csr, token });
      const mtls = createCaClient({ address: `127.0.0.1:${ca.grpcPort}`, rootCaPem: bundle, serverName: `citadel.${ns}.svc`, clientCertChainPem: chain[0]!, clientKeyPem: privateKeyToPem(key) });
      try {
        const viaCert = await mtls.createJwtSvid({ audience: ['db'], validityDurationSeconds: 60 });
        expect(decodeJwtSvid(viaCert).claims).toMatchObject({ sub: id, aud: 'db' });
      } finally {
        mtls.close();
      }
    } finally {
      client.close();
      await pod.delete();
    }
  });

  it('exposes Istio-named metrics for what happened', async () => {
    const text = await ca.metrics();
    expect(metricValue(text, 'citadel_server_success_cert_issuance_count')).toBeGreaterThanOrEqual(3);
    expect(metricValue(text, 'citadel_server_csr_count')).toBeGreaterThanOrEqual(14);
    const root = parseCertificates(bundle)[0]!;
    expect(metricValue(text, 'citadel_server_root_cert_expiry_timestamp')).toBe(Math.floor(root.notAfter / 1000));
    expect(metricValue(text, 'citadel_server_csr_sign_duration_seconds_count')).toBeGreaterThanOrEqual(3);
    expect(text).not.toMatch(/citadel_server_csr_count_total/);
  });

  it('limits issuance per identity and stops cleanly on SIGTERM', async () => {
    const limited = await startCa({ kubeconfig, namespace: ns, args: ['--csr-rate-limit-burst', '2', '--csr-rate-limit-qps', '0.001'] });
    try {
      const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'busy', watchRootCert: false });
      const token = fs.readFileSync(pod.tokenPath, 'utf8');
      const { csr } = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/busy`);
      const req = () => requestCert({ port: limited.grpcPort, namespace: ns, rootCaPem: bundle, csr, token });
      await req();
      await req();
      expect(await statusOf(req())).toBe(STATUS.RESOURCE_EXHAUSTED);
      // Another identity has its own budget.
      const pod2 = await startPod(cluster, { namespace: ns, serviceAccount: 'quiet', watchRootCert: false });
      const other = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/quiet`);
      await requestCert({ port: limited.grpcPort, namespace: ns, rootCaPem: bundle, csr: other.csr, token: fs.readFileSync(pod2.tokenPath, 'utf8') });
      await pod.delete();
      await pod2.delete();
      // Both CAs loaded the same root from istio-ca-secret.
      expect(limited.logs().some((l) => l.msg === 'created a self-signed root')).toBe(false);
    } finally {
      expect(await limited.stop()).toBe(0);
    }
    expect(limited.logs().some((l) => l.msg === 'stopped')).toBe(true);
  });

  it('on SIGTERM answers every call it accepted, then exits 0', async () => {
    const draining = await startCa({ kubeconfig, namespace: ns, args: ['--shutdown-grace', '5s'] });
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'drain', watchRootCert: false });
    const token = fs.readFileSync(pod.tokenPath, 'utf8');
    const { csr } = await makeCsr(`spiffe://${TD}/ns/${ns}/sa/drain`);
    // Warm the token cache so calls are in flight at once.
    await requestCert({ port: draining.grpcPort, namespace: ns, rootCaPem: bundle, csr, token });
    const calls = Array.from({ length: 30 }, () => requestCert({ port: draining.grpcPort, namespace: ns, rootCaPem: bundle, csr, token }).then(() => 'ok', () => 'failed'));
    // SIGTERM once the CA has accepted calls beyond the warm-up one (the counter moves as a call reaches the handler).
    const received = async () => metricValue(await (await fetch(`http://127.0.0.1:${draining.monitoringPort}/metrics`)).text(), 'citadel_server_csr_count');
    await waitFor('calls to reach the CA', async () => (await received()) > 1, { intervalMs: 5 });
    const code = draining.stop();
    const results = await Promise.all(calls);
    expect(await code).toBe(0);
    const issued = draining.logs().filter((l) => l.audit === 'certificate-issued').length;
    // Every certificate the CA issued reached its caller (plus the warm-up call).
    expect(results.filter((r) => r === 'ok').length + 1).toBe(issued);
    const msgs = draining.logs().map((l) => l.msg);
    expect(msgs.indexOf('shutting down: no new calls, finishing in-flight ones')).toBeLessThan(msgs.indexOf('stopped'));
    await pod.delete();
  });
});
