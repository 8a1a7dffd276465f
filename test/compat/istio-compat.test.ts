/**
 * Wire compatibility with Istio, proven with Istio's own code (istio.io/istio built as a library, see
 * istio-tools.ts), against the real apiserver with Pod-bound istio-ca tokens:
 *
 *   1. Istio's agent-side CA client (pilot-agent's key/CSR generation + citadel.CitadelClient) -> `citadel ca`.
 *   2. `citadel agent` -> Istio's CA server (security/pkg/server/ca with KubeJWT), serving a real Envoy over SDS;
 *      plus Istio's client against Istio's server as the control that shows the Go side itself works.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, startPod, writeFileAtomic, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { CITADEL_MAIN, ensureBuilt, eventually, requestOnce, startLineApp, type LineApp } from '../e2e/support/agent-env.js';
import { startCa, type RunningCa } from '../e2e/support/ca.js';
import { leafSerials, startSidecar, type Sidecar } from '../e2e/support/sidecar.js';
import { provisionCompatTools, runIstioClient, startIstioCa, type CompatTools, type IstioClientResult, type RunningIstioCa } from './istio-tools.js';

const CLIENT_CERT_TTL = '30s';

/** A cold Go build of Istio's code can take minutes; `npm test` provisions before vitest, so this is the rare case. */
const PROVISION_TIMEOUT_MS = 20 * 60_000;

function run(command: string, args: readonly string[], input?: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(command, args, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }));
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Normalised PEM blocks of a text (so element comparisons ignore trailing newlines). */
function pemBlocks(text: string): string[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => m[0].replace(/\r/g, ''));
}

/** The subjectAltName extension of a PEM certificate as openssl prints it (header line included). */
async function opensslSan(certPem: string): Promise<string> {
  const r = await run('openssl', ['x509', '-noout', '-ext', 'subjectAltName'], certPem);
  expect(r.code, r.out).toBe(0);
  return r.out.trim();
}

/** The URIs in a PEM certificate's SAN, read by openssl. */
async function opensslUris(certPem: string): Promise<string[]> {
  return [...(await opensslSan(certPem)).matchAll(/URI:([^,\s]+)/g)].map((m) => m[1]!);
}

/** Serial hex without leading zeros, lower case (openssl and Envoy print it slightly differently). */
function normalSerial(hex: string): string {
  return hex.toLowerCase().replace(/[^0-9a-f]/g, '').replace(/^0+/, '');
}

async function opensslSerial(certPem: string): Promise<string> {
  const r = await run('openssl', ['x509', '-noout', '-serial'], certPem);
  expect(r.code, r.out).toBe(0);
  return r.out.trim().replace(/^serial=/, '').toLowerCase();
}

/** `openssl verify` of `leaf` through `intermediates` to a root in `rootFile`; returns openssl's output, throws unless OK. */
async function opensslVerify(leaf: string, intermediates: readonly string[], rootFile: string, dir: string): Promise<string> {
  const leafFile = path.join(dir, `leaf-${Date.now()}-${Math.random().toString(16).slice(2)}.pem`);
  const untrustedFile = `${leafFile}.untrusted`;
  fs.writeFileSync(leafFile, `${leaf.trim()}\n`);
  fs.writeFileSync(untrustedFile, intermediates.map((c) => `${c.trim()}\n`).join(''));
  const args = ['verify', '-CAfile', rootFile, ...(intermediates.length ? ['-untrusted', untrustedFile] : []), leafFile];
  const r = await run('openssl', args);
  if (r.code !== 0 || !r.out.includes(': OK')) throw new Error(`openssl ${args.join(' ')}: ${r.out}`);
  return r.out;
}

/**
 * `openssl verify` of a CSR API response chain ([leaf, intermediates..., root bundle]) against `rootFile`: the CA's
 * own bundle, not the response's last element.
 */
function opensslVerifyChain(chain: readonly string[], rootFile: string, dir: string): Promise<string> {
  return opensslVerify(chain[0]!, chain.slice(1, -1), rootFile, dir);
}

function issued(r: IstioClientResult): string[] {
  if (r.error || !r.certChain) throw new Error(`Istio's client got no certificate: ${r.error ?? 'empty chain'}`);
  return r.certChain;
}

describe("Istio's agent CA client against `citadel ca`", () => {
  let tools: CompatTools;
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let rootFile: string;
  let ns: string;
  let pod: SimulatedPod;
  const sa = 'sleep';

  beforeAll(async () => {
    [tools] = await Promise.all([provisionCompatTools(), ensureBuilt()]);
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/compat1-');
    const caNs = await cluster.createNamespace('compat-ca');
    ns = await cluster.createNamespace('compat-wl');
    ca = await startCa({ kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir });
    rootFile = path.join(ca.cacertsDir, 'root-cert.pem');
    pod = await startPod(cluster, { namespace: ns, serviceAccount: sa, watchRootCert: false });
  }, PROVISION_TIMEOUT_MS);

  afterAll(async () => {
    await ca?.stop();
    await pod?.delete().catch(() => undefined);
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  const client = (o: { serviceAccount?: string; key?: 'rsa' | 'ecdsa-p256'; tokenPath?: string | null; renew?: boolean }) =>
    runIstioClient(tools.istioClient, {
      caAddress: ca.grpcAddress,
      caServerName: ca.serverName,
      rootCertPath: rootFile,
      ...(o.tokenPath === null ? {} : { tokenPath: o.tokenPath ?? pod.tokenPath }),
      namespace: ns,
      serviceAccount: o.serviceAccount ?? sa,
      key: o.key ?? 'rsa',
      renew: o.renew ?? false,
    });

  it('issues exactly spiffe://<td>/ns/<ns>/sa/<sa> in a [leaf, intermediate, root bundle] chain Istio accepts and openssl verifies (RSA-2048, pilot-agent default)', async () => {
    const id = `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
    const chain = issued(await client({ key: 'rsa' }));
    // Istio's client itself rejects fewer than 2 elements ("invalid empty CertChain"); ours: leaf, intermediate, root.
    expect(chain).toHaveLength(3);
    expect(pemBlocks(chain[2]!)).toEqual(pemBlocks(ca.rootPem));
    expect(pemBlocks(chain[1]!)).toEqual(pemBlocks(fs.readFileSync(path.join(ca.cacertsDir, 'ca-cert.pem'), 'utf8')));
    await opensslVerifyChain(chain, rootFile, workDir);
    expect(await opensslUris(chain[0]!)).toEqual([id]);
    expect(await opensslSan(chain[0]!)).not.toMatch(/DNS:|IP Address:|email:/);
    const text = await run('openssl', ['x509', '-noout', '-text'], chain[0]);
    expect(text.out).toMatch(/Public-Key: \(2048 bit\)/);
    expect(text.out).toMatch(/CA:FALSE/);
  });

  it('issues for an ECDSA P-256 CSR from Istio\'s GenCSR too', async () => {
    const chain = issued(await client({ key: 'ecdsa-p256' }));
    await opensslVerifyChain(chain, rootFile, workDir);
    expect(await opensslUris(chain[0]!)).toEqual([`spiffe://cluster.local/ns/${ns}/sa/${sa}`]);
    const text = await run('openssl', ['x509', '-noout', '-text'], chain[0]);
    expect(text.out).toMatch(/id-ecPublicKey[\s\S]*(prime256v1|P-256)/);
  });

  it('renews over mTLS with the issued certificate and no token, as the agent does with PROV_CERT', async () => {
    const first = await client({ renew: true });
    const firstChain = issued(first);
    expect(first.renewal, 'no renewal attempted').toBeDefined();
    const renewed = issued(first.renewal!);
    await opensslVerifyChain(renewed, rootFile, workDir);
    expect(await opensslUris(renewed[0]!)).toEqual([`spiffe://cluster.local/ns/${ns}/sa/${sa}`]);
    expect(await opensslSerial(renewed[0]!)).not.toBe(await opensslSerial(firstChain[0]!));
  });

  it('refuses a CSR for another ServiceAccount with PermissionDenied, which Istio\'s client surfaces with the requested identity', async () => {
    const other = `spiffe://cluster.local/ns/${ns}/sa/other`;
    const r = await client({ serviceAccount: 'other' });
    expect(r.certChain ?? []).toEqual([]);
    expect(r.code, r.error).toBe('PermissionDenied');
    expect(r.error).toMatch(/^create certificate: rpc error: code = PermissionDenied desc = /);
    expect(r.error).toContain(other);
  });

  it('refuses a call without a token (and without a client certificate) with Unauthenticated', async () => {
    const r = await client({ tokenPath: null });
    expect(r.certChain ?? []).toEqual([]);
    expect(r.code, r.error).toBe('Unauthenticated');
  });
});

describe('`citadel agent` against Istio\'s CA server, serving a real Envoy', () => {
  let tools: CompatTools;
  let cluster: TestCluster;
  let workDir: string;
  let istioCa: RunningIstioCa;
  let material: { caCert: string; caKey: string; certChain: string; rootCert: string };
  let ns: string;
  const pods: SimulatedPod[] = [];
  const apps: LineApp[] = [];
  const sidecars: Sidecar[] = [];
  let client: Sidecar;
  let server: Sidecar;
  let podClient: SimulatedPod;
  let idClient: string;
  let idServer: string;

  beforeAll(async () => {
    [tools] = await Promise.all([provisionCompatTools(), ensureBuilt()]);
    cluster = getCluster();
    workDir = fs.mkdtempSync('/tmp/compat2-');
    ns = await cluster.createNamespace('compat-istio');
    idClient = `spiffe://cluster.local/ns/${ns}/sa/client`;
    idServer = `spiffe://cluster.local/ns/${ns}/sa/server`;
    // Plugged-in material for Istio's CA: root + intermediate, in the cacerts layout Istio documents.
    const dir = path.join(workDir, 'cacerts');
    const made = await run(process.execPath, [CITADEL_MAIN, 'pki', 'create-ca', '--out', dir]);
    expect(made.code, made.out).toBe(0);
    material = { caCert: path.join(dir, 'ca-cert.pem'), caKey: path.join(dir, 'ca-key.pem'), certChain: path.join(dir, 'cert-chain.pem'), rootCert: path.join(dir, 'root-cert.pem') };
    istioCa = await startIstioCa(tools.istioCa, { kubeconfig: cluster.kubeconfigPath, files: material, logPath: path.join(workDir, 'istioca.log') });

    const pod = async (serviceAccount: string) => {
      const p = await startPod(cluster, { namespace: ns, serviceAccount, watchRootCert: false });
      pods.push(p);
      // What kubelet mounts from istio-ca-root-cert: here Istio's root.
      writeFileAtomic(p.rootCertPath, fs.readFileSync(material.rootCert, 'utf8'));
      return p;
    };
    const agentArgs = (certTtl: string) => ['--ca-address', istioCa.address, '--ca-server-name', istioCa.serverName, '--cert-ttl', certTtl];
    podClient = await pod('client');
    const podServer = await pod('server');
    const app = await startLineApp('server-app');
    apps.push(app);
    server = await startSidecar({ name: 'istio-server', root: podServer.root, logDir: workDir, agentArgs: agentArgs('1h'), inbound: { appPort: app.port, allowedClientIds: [idClient] } });
    sidecars.push(server);
    // A short-lived client certificate, so that the last test sees renewals (at half-life, ~15 s).
    client = await startSidecar({ name: 'istio-client', root: podClient.root, logDir: workDir, agentArgs: agentArgs(CLIENT_CERT_TTL), outbounds: [{ upstreamPort: server.inboundPort, serverId: idServer }] });
    sidecars.push(client);
  }, PROVISION_TIMEOUT_MS);

  afterAll(async () => {
    for (const s of sidecars) await s.stop();
    for (const a of apps) await a.close();
    await istioCa?.stop();
    for (const p of pods) await p.delete().catch(() => undefined);
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('control: Istio\'s client gets a certificate from Istio\'s server with the same pod token and layout rules', async () => {
    const r = await runIstioClient(tools.istioClient, {
      caAddress: istioCa.address, caServerName: istioCa.serverName, rootCertPath: material.rootCert,
      tokenPath: podClient.tokenPath, namespace: ns, serviceAccount: 'client',
    });
    const chain = issued(r);
    expect(pemBlocks(chain[chain.length - 1]!)).toEqual(pemBlocks(fs.readFileSync(material.rootCert, 'utf8')));
    await opensslVerifyChain(chain, material.rootCert, workDir);
    expect(await opensslUris(chain[0]!)).toEqual([idClient]);
  });

  it('each agent gets its SPIFFE ID from Istio\'s CA and Envoy serves it from SDS (/certs)', async () => {
    for (const [s, id] of [[client, idClient], [server, idServer]] as const) {
      // One consistent snapshot (the client's certificate rotates every ~15 s): /certs, the SDS secret, /certs again.
      await eventually(`${s.name}: /certs and the SDS secret agree`, async () => {
        const certs = await s.envoy.certs();
        const leaves = certs.certificates.flatMap((c) => (c.cert_chain?.[0] ? [c.cert_chain[0]] : []));
        expect(leaves.length, JSON.stringify(certs)).toBeGreaterThan(0);
        for (const leaf of leaves) expect(leaf.subject_alt_names?.map((n) => n.uri)).toEqual([id]);
        expect(leafSerials(certs)).toHaveLength(1);

        // The chain Envoy holds is Istio's signature under Istio's root: openssl verifies it against that root only.
        const dump = await s.envoy.configDump('dynamic_active_secrets', '^default$');
        type Dumped = { secret?: { tls_certificate?: { certificate_chain?: { inline_bytes?: string } } } };
        const b64 = (dump.configs[0] as Dumped | undefined)?.secret?.tls_certificate?.certificate_chain?.inline_bytes;
        const chain = pemBlocks(Buffer.from(b64 ?? '', 'base64').toString('utf8'));
        expect(chain.length).toBeGreaterThanOrEqual(2);
        await opensslVerify(chain[0]!, chain.slice(1), material.rootCert, workDir);
        const served = normalSerial(leafSerials(certs)[0]!);
        expect(normalSerial(leafSerials(await s.envoy.certs())[0] ?? '')).toBe(served);
        expect(normalSerial(await opensslSerial(chain[0]!))).toBe(served);
        return true;
      }, { timeoutMs: 10_000 });
    }
  });

  it('a request through the client Envoy reaches the server app over mTLS with Istio-issued certificates', async () => {
    expect(await requestOnce(client.outboundPorts[0]!, 'hello')).toBe('server-app:hello');
  });

  it('renews from Istio\'s CA with the token, then over mTLS with its certificate once the token is gone (VM mode)', async () => {
    const serialOf = async () => {
      const serials = leafSerials(await client.envoy.certs());
      if (serials.length !== 1) throw new Error(`expected one leaf serial in /certs, got ${serials.join(',') || 'none'}`);
      return serials[0]!;
    };
    const issuanceModes = () =>
      fs.readFileSync(client.agent.proc.logPath, 'utf8').split('\n').flatMap((line) => {
        if (!line.includes('certificate issued by the CA')) return [];
        try {
          return [(JSON.parse(line) as { mode?: string }).mode ?? '?'];
        } catch {
          return [];
        }
      });
    const first = await serialOf();
    const second = await eventually('a renewal with the token', async () => {
      const s = await serialOf();
      return s !== first && s;
    }, { timeoutMs: 45_000, context: () => client.agent.proc.tail(20) });
    expect(issuanceModes().at(-1)).toBe('token');

    fs.rmSync(podClient.tokenPath);
    await eventually('a renewal over mTLS', async () => {
      const s = await serialOf();
      return s !== first && s !== second && s;
    }, { timeoutMs: 45_000, context: () => client.agent.proc.tail(20) });
    expect(issuanceModes().at(-1)).toBe('mtls');
    const leaves = (await client.envoy.certs()).certificates.flatMap((c) => (c.cert_chain?.[0] ? [c.cert_chain[0]] : []));
    for (const leaf of leaves) expect(leaf.subject_alt_names?.map((n) => n.uri)).toEqual([idClient]);
    expect(await requestOnce(client.outboundPorts[0]!, 'after renewal')).toBe('server-app:after renewal');
  }, 120_000);
});
