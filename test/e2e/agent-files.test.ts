/**
 * `citadel agent` in file-mounted mode (./etc/certs/{cert-chain,key,root-cert}.pem, also the layout of an
 * istio.<sa> Secret) serving real Envoys: mTLS between two sidecars with the mounted certificates, a rewritten
 * certificate reaching Envoy as a new serial while requests keep working, and a root bundle change reaching ROOTCA.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../harness/index.js';
import { generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, privateKeyToPem, type Signer } from '../../src/pki/index.js';
import { ensureBuilt, eventually, metricValue, requestOnce, startLineApp, type LineApp } from './support/agent-env.js';
import { caSerials, leafSerials, startSidecar, type Sidecar } from './support/sidecar.js';

const ID_A = 'spiffe://cluster.local/ns/files/sa/client';
const ID_B = 'spiffe://cluster.local/ns/files/sa/server';

async function newRoot(name: string): Promise<Signer & { pem: string }> {
  const { privateKey } = await generateKeyPair('ecdsa-p256');
  const root = issueCaCertificate({ key: privateKey, organization: name, commonName: `${name} root`, ttlMs: 86_400_000, now: Date.now() });
  return { cert: parseCertificate(root.pem), key: privateKey, pem: root.pem };
}

async function writeLeaf(dir: string, signer: Signer, spiffeId: string): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
  const leaf = issueWorkloadCertificate({ signer, publicKey, spiffeId, ttlMs: 3_600_000, now: Date.now() });
  // The key first: until the chain follows, the agent sees a mismatched pair and keeps the previous one.
  writeFileAtomic(path.join(dir, 'key.pem'), privateKeyToPem(privateKey), 0o600);
  writeFileAtomic(path.join(dir, 'cert-chain.pem'), leaf.pem);
  return leaf.serialHex;
}

describe('citadel agent with file-mounted certificates and real Envoys', () => {
  let root: Signer & { pem: string };
  let logDir: string;
  const roots: string[] = [];
  let app: LineApp;
  let a: Sidecar;
  let b: Sidecar;
  let serialB: string;

  beforeAll(async () => {
    await ensureBuilt();
    root = await newRoot('files-e2e');
    logDir = fs.mkdtempSync('/tmp/cf-logs-');
    const pod = async (id: string) => {
      const dir = fs.mkdtempSync('/tmp/cf-');
      roots.push(dir);
      const certs = path.join(dir, 'etc', 'certs');
      fs.mkdirSync(certs, { recursive: true });
      fs.writeFileSync(path.join(certs, 'root-cert.pem'), root.pem);
      const serial = await writeLeaf(certs, root, id);
      return { dir, certs, serial };
    };
    const podA = await pod(ID_A);
    const podB = await pod(ID_B);
    serialB = podB.serial;
    app = await startLineApp('b-app');
    b = await startSidecar({ name: 'files-b', root: podB.dir, logDir, inbound: { appPort: app.port, allowedClientIds: [ID_A] } });
    a = await startSidecar({ name: 'files-a', root: podA.dir, logDir, outbounds: [{ upstreamPort: b.inboundPort, serverId: ID_B }] });
  }, 120_000);

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await app?.close();
    for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
  });

  it('serves the mounted certificate: Envoy B holds it and A reaches B over mTLS', async () => {
    expect(leafSerials(await b.envoy.certs())).toEqual([serialB]);
    expect(await requestOnce(a.outboundPorts[0]!, 'hello')).toBe('b-app:hello');
    const log = fs.readFileSync(b.agent.proc.logPath, 'utf8');
    expect(log).toContain('file-mounted');
    expect(log).not.toMatch(/BEGIN (EC |RSA )?PRIVATE KEY/);
  });

  it('pushes a rewritten certificate: Envoy shows the new serial and requests keep working', async () => {
    const pushesBefore = metricValue(await b.agent.metrics(), 'citadel_agent_sds_pushes_total{resource_name="default"}') ?? 0;
    const updatesBefore = (await b.envoy.stats('ssl_context_update_by_sds'))['listener.127.0.0.1_' + b.inboundPort + '.server_ssl_socket_factory.ssl_context_update_by_sds'] ?? 0;
    const next = await writeLeaf(path.join(b.root, 'etc', 'certs'), root, ID_B);
    await eventually('Envoy B to serve the rewritten certificate', async () => leafSerials(await b.envoy.certs()).includes(next), { context: () => b.agent.proc.tail(20) });
    expect(leafSerials(await b.envoy.certs())).toEqual([next]);
    expect(await requestOnce(a.outboundPorts[0]!, 'after-rewrite')).toBe('b-app:after-rewrite');
    expect(metricValue(await b.agent.metrics(), 'citadel_agent_sds_pushes_total{resource_name="default"}')).toBeGreaterThan(pushesBefore);
    const updatesAfter = (await b.envoy.stats('ssl_context_update_by_sds'))['listener.127.0.0.1_' + b.inboundPort + '.server_ssl_socket_factory.ssl_context_update_by_sds'] ?? 0;
    expect(updatesAfter).toBeGreaterThan(updatesBefore);
  });

  it('pushes a changed root bundle as a new ROOTCA', async () => {
    const extra = await newRoot('files-e2e-next');
    writeFileAtomic(path.join(b.root, 'etc', 'certs', 'root-cert.pem'), root.pem + extra.pem);
    await eventually('Envoy B to trust the new root', async () => caSerials(await b.envoy.certs()).includes(extra.cert.serialHex) || (await rootcaPem(b)).includes(extra.pem.trim().split('\n')[1]!));
    const dump = await rootcaPem(b);
    expect(dump).toContain(root.pem.trim().split('\n')[1]!);
    expect(dump).toContain(extra.pem.trim().split('\n')[1]!);
    expect(await requestOnce(a.outboundPorts[0]!, 'after-root-change')).toBe('b-app:after-root-change');
  });
});

/** The ROOTCA bundle Envoy holds, from config_dump dynamic_active_secrets (trusted_ca inline_bytes is base64 PEM). */
async function rootcaPem(s: Sidecar): Promise<string> {
  const dump = await s.envoy.configDump('dynamic_active_secrets', '^ROOTCA$');
  const secret = (dump.configs[0] as { secret?: { validation_context?: { trusted_ca?: { inline_bytes?: string } } } } | undefined)?.secret;
  const b64 = secret?.validation_context?.trusted_ca?.inline_bytes;
  return b64 ? Buffer.from(b64, 'base64').toString('utf8') : '';
}
