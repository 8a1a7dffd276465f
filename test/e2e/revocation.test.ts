/**
 * Revocation end to end (issue 15): the real CA with plugged-in keys (intermediate signs, root kept "offline": its
 * CRL comes from `citadel pki revoke` into ca-crl.pem), its leader publishing `istio-ca-crl`, and real Envoys fed
 * by agents. The test plays kubelet: it copies the ConfigMap's ca-crl.pem into each pod's
 * var/run/secrets/istio/crl/ (atomic rename) and measures from that write until Envoy refuses a new handshake.
 *
 *   A (sa client)   outbound-0 -> B inbound (expects sa server)   outbound-1 -> C inbound (expects sa other)
 *   D (sa intruder) outbound-0 -> C inbound (expects sa other)
 *   B (sa server)   inbound accepts client                     C (sa other) inbound accepts client and intruder
 *
 * Revoking B's serial (a server certificate) makes A's Envoy refuse B; revoking D's serial (a client certificate)
 * makes C's Envoy refuse D; A -> C is untouched; a connection A -> B opened before keeps working.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCluster, startPod, writeFileAtomic, type SimulatedPod, type TestCluster } from '../harness/index.js';
import { parseCrls } from '../../src/pki/index.js';
import { connectLines, ensureBuilt, eventually, requestOnce, startAgent, startLineApp, type LineApp, type LineClient } from './support/agent-env.js';
import { runCitadel, scopedNamespaces, startCa, type RunningCa } from './support/ca.js';
import { leafSerials, startSidecar, type Sidecar } from './support/sidecar.js';

const CRL_FILE = 'var/run/secrets/istio/crl/ca-crl.pem';
/** The bound: from the CRL file changing in the pod to Envoy refusing a new handshake. */
const BOUND_MS = 5_000;

const sumStat = (stats: Record<string, number>) => Object.values(stats).reduce((n, v) => n + v, 0);

/** The istio-ca-crl ConfigMap's ca-crl.pem in `namespace`. */
async function readPublishedCrl(cluster: TestCluster, namespace: string): Promise<string | undefined> {
  try {
    return (await cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-crl', namespace })).data?.['ca-crl.pem'];
  } catch {
    return undefined;
  }
}

/** What kubelet does for the mounted ConfigMap, for every pod at once; returns when the files changed. */
function mountCrlIn(pods: readonly SimulatedPod[], pem: string): number {
  for (const p of pods) {
    fs.mkdirSync(path.dirname(path.join(p.root, CRL_FILE)), { recursive: true });
    writeFileAtomic(path.join(p.root, CRL_FILE), pem);
  }
  return Date.now();
}

async function writeRevocations(cluster: TestCluster, caNs: string, text: string): Promise<void> {
  const body = { metadata: { name: 'citadel-revocations', namespace: caNs }, stringData: { revoked: text } };
  try {
    await cluster.kube().core.replaceNamespacedSecret({ name: 'citadel-revocations', namespace: caNs, body });
  } catch {
    await cluster.kube().core.createNamespacedSecret({ namespace: caNs, body });
  }
}

/** A CA in its own namespace whose controllers manage only a fresh workload namespace (--namespace-selector). */
async function startScopedCa(prefix: string, opts: { selfSigned?: boolean; extraArgs?: string[] }) {
  await ensureBuilt();
  const cluster = getCluster();
  const workDir = fs.mkdtempSync('/tmp/crl-e2e-');
  const { caNs, ns, selectorArgs } = await scopedNamespaces(cluster, prefix);
  const ca = await startCa({
    kubeconfigPath: cluster.kubeconfigPath, namespace: caNs, workDir, controllers: true, selfSigned: opts.selfSigned,
    extraArgs: [...selectorArgs, '--sa-secrets', 'off', ...(opts.extraArgs ?? [])],
  });
  return { cluster, workDir, caNs, ns, ca };
}

const serialOf = async (s: Sidecar) => leafSerials(await s.envoy.certs())[0]!;

/** Resolves with ms from `since` until `fn` has held once. */
async function elapsedUntil(since: number, what: string, fn: () => Promise<boolean>): Promise<number> {
  await eventually(what, fn, { timeoutMs: 20_000, intervalMs: 50 });
  return Date.now() - since;
}

async function works(port: number, expected: string): Promise<boolean> {
  try {
    return (await requestOnce(port, 'ping', 2000)) === `${expected}:ping`;
  } catch {
    return false;
  }
}

describe('revocation with the real CA, apiserver and Envoys', () => {
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let caNs: string;
  let ns: string;
  const pods: SimulatedPod[] = [];
  const apps: LineApp[] = [];
  let a: Sidecar;
  let b: Sidecar;
  let c: Sidecar;
  let d: Sidecar;
  let agentArgs: string[];

  const publishedCrl = () => readPublishedCrl(cluster, ns);
  const mountCrl = (pem: string) => mountCrlIn(pods, pem);
  const setRevocations = (text: string) => writeRevocations(cluster, caNs, text);

  beforeAll(async () => {
    ({ cluster, workDir, caNs, ns, ca } = await startScopedCa('revocation', { extraArgs: ['--cacerts-poll-interval', '1s'] }));
    // The root's CRL, signed "offline" with its key, beside the plugged-in material (the CA follows the directory).
    await runCitadel(['pki', 'revoke', '--ca-cert', path.join(ca.cacertsDir, 'root-cert.pem'), '--ca-key', path.join(ca.cacertsDir, 'root-key.pem'), '--out', path.join(ca.cacertsDir, 'ca-crl.pem')]);
    const initial = await eventually('istio-ca-crl with the intermediate\'s and the root\'s CRL', async () => {
      const pem = await publishedCrl();
      return pem && parseCrls(pem).length === 2 ? pem : undefined;
    });

    const pod = async (serviceAccount: string) => {
      const p = await startPod(cluster, { namespace: ns, serviceAccount, watchRootCert: false });
      pods.push(p);
      writeFileAtomic(p.rootCertPath, ca.rootPem);
      mountCrlIn([p], initial);
      return p;
    };
    const id = (sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
    agentArgs = ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName];
    const [podA, podB, podC, podD] = [await pod('client'), await pod('server'), await pod('other'), await pod('intruder')];
    const bApp = await startLineApp('b-app');
    const cApp = await startLineApp('c-app');
    apps.push(bApp, cApp);
    b = await startSidecar({ name: 'b', root: podB.root, logDir: workDir, agentArgs, inbound: { appPort: bApp.port, allowedClientIds: [id('client')] } });
    c = await startSidecar({ name: 'c', root: podC.root, logDir: workDir, agentArgs, inbound: { appPort: cApp.port, allowedClientIds: [id('client'), id('intruder')] } });
    a = await startSidecar({ name: 'a', root: podA.root, logDir: workDir, agentArgs, outbounds: [{ upstreamPort: b.inboundPort, serverId: id('server') }, { upstreamPort: c.inboundPort, serverId: id('other') }] });
    d = await startSidecar({ name: 'd', root: podD.root, logDir: workDir, agentArgs, outbounds: [{ upstreamPort: c.inboundPort, serverId: id('other') }] });
  }, 240_000);

  afterAll(async () => {
    for (const s of [a, b, c, d]) await s?.stop();
    for (const app of apps) await app.close();
    await ca?.stop();
    for (const p of pods) await p.delete().catch(() => undefined);
  });

  it('Envoy holds the CRLs in ROOTCA and, with nothing revoked, every path works', async () => {
    const dump = await a.envoy.configDump('dynamic_active_secrets', '^ROOTCA$');
    type Dumped = { secret?: { validation_context?: { crl?: { inline_bytes?: string } } } };
    const crl = (dump.configs[0] as Dumped | undefined)?.secret?.validation_context?.crl?.inline_bytes;
    expect(parseCrls(Buffer.from(crl!, 'base64').toString()).length).toBe(2);
    expect(await works(a.outboundPorts[0]!, 'b-app')).toBe(true);
    expect(await works(a.outboundPorts[1]!, 'c-app')).toBe(true);
    expect(await works(d.outboundPorts[0]!, 'c-app')).toBe(true);
  });

  let open: LineClient;
  it(`revoking a server and a client certificate: new handshakes refused by Envoy within ${BOUND_MS} ms of the file change, others unaffected, open connections kept`, async () => {
    open = await connectLines(a.outboundPorts[0]!);
    expect(await open.ask('before')).toBe('b-app:before');
    const [bSerial, dSerial] = [await serialOf(b), await serialOf(d)];
    const aFailBefore = sumStat(await a.envoy.stats('^cluster\\.outbound-0\\.ssl\\.fail_verify_error$'));
    const cFailBefore = sumStat(await c.envoy.stats('^listener\\..*\\.ssl\\.fail_verify_error$'));
    await setRevocations(`${bSerial} keyCompromise\n${dSerial} keyCompromise\n`);
    const pem = await eventually('istio-ca-crl listing both serials', async () => {
      const p = await publishedCrl();
      const serials = p ? parseCrls(p).flatMap((x) => x.entries.map((e) => e.serialHex)) : [];
      return serials.includes(bSerial) && serials.includes(dSerial) ? p : undefined;
    });
    const changedAt = mountCrl(pem!);
    const serverRefused = await elapsedUntil(changedAt, 'A refuses B (revoked server certificate)', async () => !(await works(a.outboundPorts[0]!, 'b-app')));
    const clientRefused = await elapsedUntil(changedAt, 'C refuses D (revoked client certificate)', async () => !(await works(d.outboundPorts[0]!, 'c-app')));
    console.log(`[revocation e2e] CRL file change -> refused by Envoy: server cert ${serverRefused} ms, client cert ${clientRefused} ms`);
    expect(serverRefused).toBeLessThanOrEqual(BOUND_MS);
    expect(clientRefused).toBeLessThanOrEqual(BOUND_MS);
    expect(sumStat(await a.envoy.stats('^cluster\\.outbound-0\\.ssl\\.fail_verify_error$'))).toBeGreaterThan(aFailBefore);
    expect(sumStat(await c.envoy.stats('^listener\\..*\\.ssl\\.fail_verify_error$'))).toBeGreaterThan(cFailBefore);
    // Other workloads keep working, and Envoy does not re-check a connection that is already open.
    expect(await works(a.outboundPorts[1]!, 'c-app')).toBe(true);
    expect(await open.ask('after')).toBe('b-app:after');
  });

  it(`un-revoking restores both within ${BOUND_MS} ms of the file change`, async () => {
    await setRevocations('');
    const pem = await eventually('istio-ca-crl without entries', async () => {
      const p = await publishedCrl();
      return p && parseCrls(p).every((x) => x.entries.length === 0) ? p : undefined;
    });
    const changedAt = mountCrl(pem!);
    const serverBack = await elapsedUntil(changedAt, 'A reaches B again', () => works(a.outboundPorts[0]!, 'b-app'));
    const clientBack = await elapsedUntil(changedAt, 'D reaches C again', () => works(d.outboundPorts[0]!, 'c-app'));
    console.log(`[revocation e2e] CRL file change -> accepted again: server cert ${serverBack} ms, client cert ${clientBack} ms`);
    expect(serverBack).toBeLessThanOrEqual(BOUND_MS);
    expect(clientBack).toBeLessThanOrEqual(BOUND_MS);
    open.close();
  });

  it('revoking a SPIFFE ID lists the certificates the CA issued to it and refuses it new ones (PERMISSION_DENIED naming the revocation)', async () => {
    const dSerial = await serialOf(d);
    await setRevocations(`spiffe://cluster.local/ns/${ns}/sa/intruder keyCompromise\n`);
    await eventually('istio-ca-crl listing the intruder\'s certificate', async () => {
      const p = await publishedCrl();
      return p !== undefined && p !== '' && parseCrls(p).some((x) => x.entries.some((e) => e.serialHex === dSerial));
    });
    await d.agent.stop();
    const again = await startAgent({ name: 'd-again', cwd: pods[3]!.root, args: agentArgs, logDir: workDir });
    try {
      await eventually('the agent refused with the reason', () => again.proc.tail(80).includes('is revoked (citadel-revocations line 1, keyCompromise)'));
    } finally {
      await again.stop();
    }
    await setRevocations('');
  });

  it('removing ca-crl.pem from cacerts clears the CRLs everywhere (nothing revoked)', async () => {
    fs.rmSync(path.join(ca.cacertsDir, 'ca-crl.pem'));
    await eventually('istio-ca-crl emptied', async () => (await publishedCrl()) === '');
    mountCrl('');
    await eventually('ROOTCA without crl in Envoy', async () => {
      const dump = await a.envoy.configDump('dynamic_active_secrets', '^ROOTCA$');
      type Dumped = { secret?: { validation_context?: { crl?: unknown } } };
      return (dump.configs[0] as Dumped | undefined)?.secret?.validation_context?.crl === undefined;
    });
    expect(await works(a.outboundPorts[0]!, 'b-app')).toBe(true);
  });
});

describe('revocation with a self-signed CA and real Envoys', () => {
  let cluster: TestCluster;
  let workDir: string;
  let ca: RunningCa;
  let caNs: string;
  let ns: string;
  const pods: SimulatedPod[] = [];
  let app: LineApp;
  let client: Sidecar;
  let server: Sidecar;

  beforeAll(async () => {
    ({ cluster, workDir, caNs, ns, ca } = await startScopedCa('revocation-ss', { selfSigned: true }));
    const rootPem = await eventually('istio-ca-root-cert', async () => (await cluster.kube().core.readNamespacedConfigMap({ name: 'istio-ca-root-cert', namespace: ns }).catch(() => undefined))?.data?.['root-cert.pem']);
    expect(await eventually('istio-ca-crl (empty: nothing revoked)', async () => (await readPublishedCrl(cluster, ns)) === '')).toBe(true);
    const pod = async (serviceAccount: string) => {
      const p = await startPod(cluster, { namespace: ns, serviceAccount, watchRootCert: false });
      pods.push(p);
      writeFileAtomic(p.rootCertPath, rootPem);
      mountCrlIn([p], '');
      return p;
    };
    const id = (sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
    const agentArgs = ['--ca-address', ca.grpcAddress, '--ca-server-name', ca.serverName];
    const [podClient, podServer] = [await pod('client'), await pod('server')];
    app = await startLineApp('s-app');
    server = await startSidecar({ name: 'ss-server', root: podServer.root, logDir: workDir, agentArgs, inbound: { appPort: app.port, allowedClientIds: [id('client')] } });
    client = await startSidecar({ name: 'ss-client', root: podClient.root, logDir: workDir, agentArgs, outbounds: [{ upstreamPort: server.inboundPort, serverId: id('server') }] });
  }, 240_000);

  afterAll(async () => {
    for (const s of [client, server]) await s?.stop();
    await app?.close();
    await ca?.stop();
    for (const p of pods) await p.delete().catch(() => undefined);
  });

  it('revoking the server\'s SPIFFE ID puts its certificate in the root\'s CRL, and the client\'s Envoy refuses it', async () => {
    expect(await works(client.outboundPorts[0]!, 's-app')).toBe(true);
    const serial = await serialOf(server);
    await writeRevocations(cluster, caNs, `spiffe://cluster.local/ns/${ns}/sa/server keyCompromise\n`);
    const pem = await eventually('istio-ca-crl listing the server\'s certificate', async () => {
      const p = await readPublishedCrl(cluster, ns);
      return p && parseCrls(p).some((c) => c.entries.some((e) => e.serialHex === serial)) ? p : undefined;
    });
    expect(parseCrls(pem!)).toHaveLength(1);
    const refused = await elapsedUntil(mountCrlIn(pods, pem!), 'client refuses the server', async () => !(await works(client.outboundPorts[0]!, 's-app')));
    console.log(`[revocation e2e] self-signed: CRL file change -> refused by Envoy in ${refused} ms`);
    expect(refused).toBeLessThanOrEqual(BOUND_MS);
    expect(sumStat(await client.envoy.stats('^cluster\\.outbound-0\\.ssl\\.fail_verify_error$'))).toBeGreaterThan(0);

    await writeRevocations(cluster, caNs, '');
    await eventually('istio-ca-crl empty again', async () => (await readPublishedCrl(cluster, ns)) === '');
    const back = await elapsedUntil(mountCrlIn(pods, ''), 'client reaches the server again', () => works(client.outboundPorts[0]!, 's-app'));
    expect(back).toBeLessThanOrEqual(BOUND_MS);
  });
});
