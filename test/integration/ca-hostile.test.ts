/**
 * Issue 14 against a real `citadel ca` (self-signed mode, real apiserver, gRPC over TLS): a caller holding one valid
 * pod token sends the worst CSRs it can build, SANs the CA never issues, and bad client certificates. Each is refused
 * with its status and message and counted under its own label; nothing is issued and the CA stays healthy.
 */
import fs from 'node:fs';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { implicit, oid, sequence, Tag, tlv, utf8String, contextTag } from '../../src/pki/der.js';
import { createCsr, generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, parsePrivateKeyPem, privateKeyToPem, type Signer } from '../../src/pki/index.js';
import { OID } from '../../src/pki/oids.js';
import { getCluster, startPod, type TestCluster } from '../harness/index.js';
import { issueLeaf } from '../harness/openssl.js';
import { citadelClients } from '../support/citadel-rbac.js';
import { csrPem, hostileCsrs, hostilePemTexts, san, subjectOf } from '../support/hostile-csrs.js';
import { ensureBuilt, metricValue, requestCert, startCa, type CaProcess } from './ca-process.js';

const TD = 'cluster.local';
const STATUS = { INVALID_ARGUMENT: 3, PERMISSION_DENIED: 7, UNAUTHENTICATED: 16 };
const HOUR = 3600_000;
let cluster: TestCluster;
let ns: string;
let ca: CaProcess;
let bundle: string;
let caSigner: Signer;
let tmp: string;

beforeAll(async () => {
  await ensureBuilt();
  cluster = getCluster();
  ns = await cluster.createNamespace('hostile');
  const { kubeconfig } = await citadelClients(cluster, ns);
  tmp = fs.mkdtempSync('/tmp/ca-hostile-');
  ca = await startCa({ kubeconfig, namespace: ns });
  const secret = await cluster.kube().core.readNamespacedSecret({ name: 'istio-ca-secret', namespace: ns });
  const file = (k: string) => Buffer.from(secret.data![k]!, 'base64').toString('utf8');
  bundle = file('root-cert.pem');
  caSigner = { cert: parseCertificate(file('ca-cert.pem')), key: parsePrivateKeyPem(file('ca-key.pem')) };
}, 180_000);

afterAll(async () => {
  await ca?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The status and the server's message of a refused call. */
async function refusal(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await p;
  } catch (err) {
    const cause = (err as { cause?: { code?: number; details?: string } }).cause;
    if (typeof cause?.code === 'number') return { code: cause.code, details: cause.details ?? '' };
    throw err;
  }
  throw new Error('the call succeeded');
}

const call = (o: { csr: string; token?: string; clientCertChainPem?: string; clientKeyPem?: string }) =>
  requestCert({ port: ca.grpcPort, namespace: ns, rootCaPem: bundle, ...o });

describe('citadel ca under hostile input', () => {
  it('refuses the worst CSRs, bad strings and SANs it never issues, each with its status, message and label', async () => {
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'mallory', watchRootCert: false });
    const token = fs.readFileSync(pod.tokenPath, 'utf8');
    const id = `spiffe://${TD}/ns/${ns}/sa/mallory`;
    const { privateKey } = await generateKeyPair('ecdsa-p256');
    const before = await ca.metrics();

    // Item 1: every hostile CSR is INVALID_ARGUMENT with its own message.
    const hostile = [...hostileCsrs(privateKey), ...hostilePemTexts()];
    for (const h of hostile) {
      const r = await refusal(call({ csr: h.pem, token }));
      expect({ name: h.name, code: r.code }).toEqual({ name: h.name, code: STATUS.INVALID_ARGUMENT });
      expect(r.details, h.name).toMatch(h.message);
    }
    // Item 2: a UniversalString code point above U+10FFFF is the caller's error, not the CA's.
    const universal = csrPem(privateKey, {
      subject: subjectOf(sequence(oid(OID.commonName), tlv(Tag.UNIVERSAL_STRING, Buffer.from('0000004100110000', 'hex')))),
      extensions: [san(implicit(6, Buffer.from(id)))],
    });
    expect(await refusal(call({ csr: universal, token }))).toEqual({ code: STATUS.INVALID_ARGUMENT, details: 'malformed DER: subject attribute value: UniversalString holds U+110000, which is not a character' });
    // Item 3: SANs of other kinds are refused like extra SANs.
    const otherName = implicit(0, Buffer.concat([oid('1.3.6.1.4.1.311.20.2.3'), tlv(contextTag(0, true), utf8String('admin@example.com'))]), true);
    const directoryName = tlv(contextTag(4, true), subjectOf(sequence(oid(OID.commonName), utf8String('admin'))));
    const registeredId = implicit(8, Buffer.of(0x2a, 0x03, 0x04));
    expect(await refusal(call({ csr: csrPem(privateKey, { extensions: [san(implicit(6, Buffer.from(id)), otherName, directoryName, registeredId)] }), token }))).toEqual({
      code: STATUS.PERMISSION_DENIED,
      details: `the CSR asks for a SAN of type otherName, a SAN of type directoryName, a SAN of type registeredID, but the caller is ${id}`,
    });

    const after = await ca.metrics();
    const delta = (name: string, labels = '') => metricValue(after, name, labels) - metricValue(before, name, labels);
    expect(delta('citadel_server_csr_sign_err_count', 'error="CSR_ERROR"')).toBe(hostile.length + 1);
    expect(delta('citadel_server_csr_sign_err_count', 'error="IDENTITY_MISMATCH"')).toBe(1);
    expect(delta('citadel_server_csr_sign_err_count', 'error="CERT_GEN_ERROR"')).toBe(0);
    expect(delta('citadel_server_success_cert_issuance_count')).toBe(0);

    // A CSR without any SAN gets the caller's identity (as in Istio), and the CA is as healthy as before.
    const bare = csrPem(privateKey, { subject: subjectOf(sequence(oid(OID.commonName), utf8String('no SAN at all'))) });
    const chain = await call({ csr: bare, token });
    expect(parseCertificate(chain[0]!).uris).toEqual([id]);
    expect(parseCertificate(chain[0]!).dnsNames).toEqual([]);
    await pod.delete();
  });

  it('refuses bad client certificates as such (UNAUTHENTICATED with the reason, counted by reason), never as "no credentials"', async () => {
    const id = `spiffe://${TD}/ns/${ns}/sa/renewer`;
    const now = Date.now();
    const key = await generateKeyPair('ecdsa-p256');
    const keyPem = privateKeyToPem(key.privateKey);
    const leafUnder = (signer: Signer, at: number, ttlMs: number) => issueWorkloadCertificate({ signer, publicKey: key.publicKey, spiffeId: id, ttlMs, now: at }).pem;

    // Expired: issued by this very CA two days ago for an hour.
    const expired = leafUnder(caSigner, now - 48 * HOUR, HOUR);
    // Self-signed, with the workload's SPIFFE ID.
    const self = issueCaCertificate({ key: key.privateKey, organization: TD, commonName: 'me', trustDomain: TD, ttlMs: HOUR, now: now - 60_000 }).pem;
    // Chained to a leaf: a valid leaf of this CA signs another "leaf" (openssl does it; our code refuses to).
    const parent = leafUnder(caSigner, now - 60_000, HOUR);
    fs.writeFileSync(path.join(tmp, 'parent.crt'), parent);
    fs.writeFileSync(path.join(tmp, 'parent.key'), keyPem, { mode: 0o600 });
    const child = await issueLeaf({ ca: { certPath: path.join(tmp, 'parent.crt'), keyPath: path.join(tmp, 'parent.key') }, dir: tmp, name: 'child', commonName: 'child', subjectAltNames: [`URI:${id}`], usage: 'client' });
    // From an old root: a root the CA no longer trusts (a rotated-out one), and a leaf under it.
    const oldRootKey = await generateKeyPair('ecdsa-p256');
    const oldRoot: Signer = { cert: parseCertificate(issueCaCertificate({ key: oldRootKey.privateKey, organization: TD, commonName: 'old root', ttlMs: 365 * 24 * HOUR, now: now - HOUR }).pem), key: oldRootKey.privateKey };
    const fromOldRoot = leafUnder(oldRoot, now - 60_000, HOUR);

    const csr = createCsr({ key: key.privateKey, spiffeId: id });
    const before = await ca.metrics();
    const cases: Array<[string, string, string, string]> = [
      ['expired', expired, keyPem, 'expired'],
      ['self-signed', self, keyPem, 'not issued by this CA'],
      ['chained to a leaf', fs.readFileSync(child.certPath, 'utf8') + parent, fs.readFileSync(child.keyPath, 'utf8'), 'not issued by this CA'],
      ['from an old root', fromOldRoot, keyPem, 'not issued by this CA'],
    ];
    for (const [name, chainPem, clientKeyPem, why] of cases) {
      const r = await refusal(call({ csr, clientCertChainPem: chainPem, clientKeyPem }));
      expect({ name, ...r }).toEqual({ name, code: STATUS.UNAUTHENTICATED, details: `authentication failed: client certificate rejected: ${why}` });
    }
    const after = await ca.metrics();
    const delta = (labels: string) => metricValue(after, 'citadel_server_authentication_failure_count', labels) - metricValue(before, 'citadel_server_authentication_failure_count', labels);
    expect(delta('reason="client_certificate_expired"')).toBe(1);
    expect(delta('reason="client_certificate_untrusted"')).toBe(3);
    expect(delta('reason="no_credentials"')).toBe(0);
    // The log says which certificate and why, for the operator.
    const lines = ca.logs().filter((l) => l.msg === 'authentication failed' && String(l.reason).startsWith('client certificate rejected'));
    expect(lines.slice(-4).map((l) => String(l.detail))).toEqual([
      expect.stringContaining('leaf certificate has expired'),
      expect.stringContaining('does not verify'),
      expect.stringContaining('does not verify'),
      expect.stringContaining('does not verify'),
    ]);

    // Still fails closed, and a good client certificate of this CA still renews.
    const good = leafUnder(caSigner, now - 60_000, HOUR);
    const renewed = await call({ csr, clientCertChainPem: good, clientKeyPem: keyPem });
    expect(parseCertificate(renewed[0]!).uris).toEqual([id]);
  });

  it('keeps serving while 1,000 connections sit idle or stalled in the TLS handshake, within a bounded memory', async () => {
    const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${ca.child.pid}/status`, 'utf8'))![1]) / 1024;
    const pod = await startPod(cluster, { namespace: ns, serviceAccount: 'patient', watchRootCert: false });
    const token = fs.readFileSync(pod.tokenPath, 'utf8');
    const id = `spiffe://${TD}/ns/${ns}/sa/patient`;
    const before = rssMb();
    // Half send nothing; half send the first bytes of a TLS record (a ClientHello that never completes).
    const sockets: Socket[] = [];
    for (let i = 0; i < 1000; i++) {
      const s = connect({ host: '127.0.0.1', port: ca.grpcPort });
      s.on('error', () => undefined);
      if (i % 2) s.once('connect', () => s.write(Buffer.from('160301', 'hex')));
      sockets.push(s);
    }
    try {
      await Promise.all(sockets.map((s) => (s.readyState === 'open' ? undefined : new Promise((r) => s.once('connect', r)))));
      const started = Date.now();
      const chain = await call({ csr: createCsr({ key: (await generateKeyPair('ecdsa-p256')).privateKey, spiffeId: id }), token });
      expect(parseCertificate(chain[0]!).uris).toEqual([id]);
      const grownMb = rssMb() - before;
      console.log(`1,000 idle/stalled handshakes: a real request answered in ${Date.now() - started} ms; CA RSS ${grownMb.toFixed(1)} MB above where it started`);
      expect(grownMb).toBeLessThan(64);
    } finally {
      for (const s of sockets) s.destroy();
      await pod.delete();
    }
  });
});
