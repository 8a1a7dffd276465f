/**
 * The SPIFFE Workload API over a real Unix socket (the SDS socket, shared), with our own grpc-js client playing an
 * application: the security header, PermissionDenied before an identity exists, streamed updates on rotation and
 * bundle change, JWT-SVIDs cached per audience, ValidateJWTSVID's refusals, SDS unaffected on the same socket.
 * The CA's JWT minting is our own seam (JwtSvidMinter) signing with real derived keys; go-spiffe against the real
 * CA is in test/workload-api.
 */
import { writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../../src/clock.js';
import { silentLogger } from '../../../src/log.js';
import { mergeTrustBundles, validateCertificateMaterial } from '../../../src/agent/material.js';
import { SecretStore } from '../../../src/agent/secret-store.js';
import { watchJwtBundle, type JwtBundle } from '../../../src/agent/workload-api/jwt-bundle.js';
import { createJwtSvidCache } from '../../../src/agent/workload-api/jwt-cache.js';
import { prometheusWorkloadApiMetrics } from '../../../src/grpc/workload-api-metrics.js';
import { createWorkloadApi } from '../../../src/agent/workload-api/service.js';
import { workloadApiClientConstructor } from '../../../src/grpc/protos.js';
import { startAgentSocket, type AgentSocket } from '../../../src/cli/agent-socket.js';
import { workloadApiServiceBinding, type WorkloadApiBinding } from '../../../src/grpc/workload-api-server.js';
import { decodeJwtSvid, deriveJwtSigningKey, generateKeyPair, issueWorkloadCertificate, parseCertificates, signJwtSvid, spiffeBundleJson, type JwtSigningKey } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { SdsTestClient } from './sds/sds-client.js';
import { makeTestCa, tempDir, waitFor, type TestCa } from './support.js';

const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/app/sa/web`;
const HEADER = new grpc.Metadata();
HEADER.set('workload.spiffe.io', 'true');

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

describe('SPIFFE Workload API on the agent socket', () => {
  let clock: FakeClock;
  let dir: string;
  let ca: TestCa;
  let secrets: SecretStore;
  let jwtKey: JwtSigningKey;
  let minted: string[][];
  let jwtBundle: JwtBundle;
  let binding: WorkloadApiBinding;
  let sds: AgentSocket;
  let store: SecretStore;
  let client: Client;
  let bundlePath: string;
  let registry: Registry;
  const metric = async (sample: string) => (await registry.metrics()).split('\n').find((l) => l.startsWith(`${sample} `))?.split(' ')[1];

  const publishCert = async () => {
    const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
    const leaf = issueWorkloadCertificate({ signer: ca.signer, publicKey, spiffeId: ID, ttlMs: 3_600_000, now: clock.now() });
    secrets.publishCertificate(validateCertificateMaterial({ chain: leaf.pem, key: privateKey, now: clock.now() }));
    secrets.publishTrustBundle(mergeTrustBundles([ca.rootPem]));
    return leaf;
  };
  const writeBundle = async (keys: JwtSigningKey[], sequence: number) => {
    const tmp = `${bundlePath}.tmp`;
    await writeFile(tmp, spiffeBundleJson({ roots: parseCertificates(ca.rootPem), jwtKeys: keys, sequence, refreshHintSeconds: 300 }));
    await rename(tmp, bundlePath);
  };
  const unary = <T>(method: string, req: object, metadata = HEADER) =>
    new Promise<T>((resolve, reject) => client[method]!(req, metadata, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))));
  /** Opens a server stream and collects its messages and its end. */
  const stream = (method: string, metadata = HEADER) => {
    const call = client[method]!({}, metadata) as grpc.ClientReadableStream<Record<string, unknown>>;
    const messages: Record<string, unknown>[] = [];
    let status: grpc.StatusObject | undefined;
    let error: grpc.ServiceError | undefined;
    call.on('data', (m: Record<string, unknown>) => messages.push(m));
    call.on('error', (e: grpc.ServiceError) => (error = e));
    call.on('status', (s: grpc.StatusObject) => (status = s));
    return { call, messages, ended: () => error ?? status };
  };

  beforeEach(async () => {
    clock = new FakeClock(Date.now());
    dir = tempDir('wapi-');
    bundlePath = join(dir, 'spiffe-bundle.json');
    ca = await makeTestCa(clock.now(), TD);
    secrets = new SecretStore({ clock, log: silentLogger });
    jwtKey = deriveJwtSigningKey({ caKey: ca.signer.key, trustDomain: TD, period: 1 });
    minted = [];
    await writeBundle([jwtKey], 1);
    jwtBundle = await watchJwtBundle({ path: bundlePath, clock: systemClock, log: silentLogger, pollMs: 100 });
    const minter = {
      mintJwtSvid: async (audience: readonly string[], ttlMs: number) => {
        minted.push([...audience]);
        return signJwtSvid(jwtKey, { sub: ID, aud: audience, iat: Math.floor(clock.now() / 1000), exp: Math.floor((clock.now() + ttlMs) / 1000) });
      },
    };
    const api = createWorkloadApi({ secrets, jwtSvids: createJwtSvidCache({ minter, ttlMs: 300_000, clock, log: silentLogger }), jwtBundle, trustDomain: TD, clock });
    registry = new Registry();
    binding = workloadApiServiceBinding({ api, log: silentLogger, metrics: prometheusWorkloadApiMetrics(registry) });
    store = new SecretStore({ clock: systemClock, log: silentLogger });
    sds = await startAgentSocket({ socketPath: join(dir, 'socket'), store, log: silentLogger, workloadApi: binding });
    const Ctor = workloadApiClientConstructor();
    client = new Ctor(`unix:${sds.socketPath}`, grpc.credentials.createInsecure()) as unknown as Client;
  });

  afterEach(async () => {
    client.close();
    binding.close();
    jwtBundle.close();
    await sds.stop(500);
    store.close();
  });

  it('answers INVALID_ARGUMENT without the security header, with a wrong value, or with two values', async () => {
    await publishCert();
    const wrong = new grpc.Metadata();
    wrong.set('workload.spiffe.io', 'True');
    const twice = new grpc.Metadata();
    twice.add('workload.spiffe.io', 'true');
    twice.add('workload.spiffe.io', 'true');
    for (const md of [new grpc.Metadata(), wrong, twice]) {
      await expect(unary('FetchJWTSVID', { audience: ['db'] }, md)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' });
      await expect(unary('ValidateJWTSVID', { audience: 'db', svid: 'x.y.z' }, md)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      const s = stream('FetchX509SVID', md);
      await waitFor(() => s.ended(), 'stream end');
      expect(s.ended()).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      expect(s.messages).toEqual([]);
    }
    expect(minted).toEqual([]);
    expect(await metric('citadel_agent_workload_api_requests_total{method="FetchJWTSVID",code="INVALID_ARGUMENT"}')).toBe('3');
    expect(await metric('citadel_agent_workload_api_requests_total{method="FetchX509SVID",code="INVALID_ARGUMENT"}')).toBe('3');
    expect(await metric('citadel_agent_workload_api_active_streams{method="FetchX509SVID"}')).toBe('0');
  });

  it('answers PERMISSION_DENIED before the agent has an identity, then serves it', async () => {
    const early = stream('FetchX509SVID');
    await waitFor(() => early.ended(), 'stream end');
    expect(early.ended()).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    await expect(unary('FetchJWTSVID', { audience: ['db'] })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    const bundles = stream('FetchX509Bundles');
    await waitFor(() => bundles.ended(), 'stream end');
    expect(bundles.ended()).toMatchObject({ code: grpc.status.PERMISSION_DENIED });

    const leaf = await publishCert();
    expect(await metric('citadel_agent_workload_api_requests_total{method="FetchX509SVID",code="PERMISSION_DENIED"}')).toBe('1');
    const s = stream('FetchX509SVID');
    await waitFor(() => s.messages.length === 1, 'first X509SVIDResponse');
    expect(await metric('citadel_agent_workload_api_active_streams{method="FetchX509SVID"}')).toBe('1');
    const svid = (s.messages[0]!.svids as Record<string, Buffer>[])[0]!;
    expect(svid.spiffe_id).toBe(ID);
    expect(svid.x509_svid).toEqual(leaf.der);
    expect(svid.bundle).toEqual(parseCertificates(ca.rootPem)[0]!.der);
    expect(svid.x509_svid_key!.subarray(0, 1)).toEqual(Buffer.from([0x30])); // PKCS#8 DER
    s.call.cancel();
    await waitFor(async () => (await metric('citadel_agent_workload_api_active_streams{method="FetchX509SVID"}')) === '0', 'stream closed in the gauge');
  });

  it('streams the full X.509 state again on every rotation, and the bundle on every root change', async () => {
    const first = await publishCert();
    const s = stream('FetchX509SVID');
    const b = stream('FetchX509Bundles');
    await waitFor(() => s.messages.length === 1 && b.messages.length === 1, 'first messages');
    expect(Object.keys(b.messages[0]!.bundles as object)).toEqual([`spiffe://${TD}`]);
    const second = await publishCert();
    await waitFor(() => s.messages.length === 2, 'rotated SVID');
    expect(b.messages).toHaveLength(1); // a rotation does not change the bundles
    const svids = s.messages.map((m) => (m.svids as Record<string, Buffer>[])[0]!.x509_svid);
    expect(svids).toEqual([first.der, second.der]);
    const newRoot = await makeTestCa(clock.now(), 'next');
    secrets.publishTrustBundle(mergeTrustBundles([ca.rootPem, newRoot.rootPem]));
    await waitFor(() => b.messages.length === 2 && s.messages.length === 3, 'bundle update on both streams');
    const last = b.messages[1]!.bundles as Record<string, Buffer>;
    expect(last[`spiffe://${TD}`]!.length).toBe(parseCertificates(ca.rootPem)[0]!.der.length + parseCertificates(newRoot.rootPem)[0]!.der.length);
    s.call.cancel();
    b.call.cancel();
  });

  it('mints JWT-SVIDs once per audience set, again after half their life, and refuses a request without audience', async () => {
    await publishCert();
    await expect(unary('FetchJWTSVID', { audience: [] })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'audience must be specified' });
    await expect(unary('FetchJWTSVID', { audience: ['db'], spiffe_id: 'spiffe://cluster.local/ns/app/sa/other' })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    const a = await unary<{ svids: { spiffe_id: string; svid: string }[] }>('FetchJWTSVID', { audience: ['db'] });
    expect(a.svids[0]!.spiffe_id).toBe(ID);
    expect(decodeJwtSvid(a.svids[0]!.svid).claims).toMatchObject({ sub: ID, aud: 'db' });
    const again = await unary<{ svids: { svid: string }[] }>('FetchJWTSVID', { audience: ['db', 'db'], spiffe_id: ID });
    expect(again.svids[0]!.svid).toBe(a.svids[0]!.svid);
    await unary('FetchJWTSVID', { audience: ['cache'] });
    expect(minted).toEqual([['db'], ['cache']]);
    await clock.advance(149_000);
    expect((await unary<{ svids: { svid: string }[] }>('FetchJWTSVID', { audience: ['db'] })).svids[0]!.svid).toBe(a.svids[0]!.svid);
    await clock.advance(2_000);
    const renewed = await unary<{ svids: { svid: string }[] }>('FetchJWTSVID', { audience: ['db'] });
    expect(renewed.svids[0]!.svid).not.toBe(a.svids[0]!.svid);
    expect(minted).toEqual([['db'], ['cache'], ['db']]);
  });

  it('validates JWT-SVIDs: claims for a good one; INVALID_ARGUMENT for another audience, another trust domain, a bad signature', async () => {
    await publishCert();
    const token = (await unary<{ svids: { svid: string }[] }>('FetchJWTSVID', { audience: ['db'] })).svids[0]!.svid;
    const ok = await unary<{ spiffe_id: string; claims: { fields: Record<string, unknown> } }>('ValidateJWTSVID', { audience: 'db', svid: token });
    expect(ok.spiffe_id).toBe(ID);
    expect(Object.keys(ok.claims.fields).sort()).toEqual(['aud', 'exp', 'iat', 'sub']);

    const refused = (req: object) => expect(unary('ValidateJWTSVID', req)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await refused({ audience: 'cache', svid: token });
    await refused({ audience: '', svid: token });
    await refused({ audience: 'db', svid: '' });
    const [h, p, sig] = token.split('.') as [string, string, string];
    const bad = Buffer.from(sig, 'base64url');
    bad[0]! ^= 0xff;
    await refused({ audience: 'db', svid: `${h}.${p}.${bad.toString('base64url')}` });
    // A token from another trust domain, signed by that domain's own key: there is no bundle for it here.
    const foreignKey = deriveJwtSigningKey({ caKey: (await makeTestCa(clock.now(), 'example.org')).signer.key, trustDomain: 'example.org', period: 1 });
    const foreign = signJwtSvid(foreignKey, { sub: 'spiffe://example.org/ns/app/sa/web', aud: ['db'], iat: clock.now() / 1000, exp: clock.now() / 1000 + 60 });
    await expect(unary('ValidateJWTSVID', { audience: 'db', svid: foreign })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'no JWT bundle for trust domain "example.org"' });
    // Our subject, but signed by a key that is not in our bundle.
    const outsider = signJwtSvid(foreignKey, { sub: ID, aud: ['db'], iat: clock.now() / 1000, exp: clock.now() / 1000 + 60 });
    await refused({ audience: 'db', svid: outsider });
    await clock.advance(301_000);
    await refused({ audience: 'db', svid: token });
  });

  it('streams the JWT bundle and again when the bundle file changes; WIT RPCs are UNIMPLEMENTED', async () => {
    const s = stream('FetchJWTBundles');
    await waitFor(() => s.messages.length === 1, 'first JWTBundlesResponse');
    const jwks = (m: Record<string, unknown>) => JSON.parse((m.bundles as Record<string, Buffer>)[`spiffe://${TD}`]!.toString()) as { keys: { kid: string; use?: string }[] };
    expect(jwks(s.messages[0]!).keys.map((k) => k.kid)).toEqual([jwtKey.kid]);
    expect(jwks(s.messages[0]!).keys[0]!.use).toBeUndefined();
    const next = deriveJwtSigningKey({ caKey: ca.signer.key, trustDomain: TD, period: 2 });
    await writeBundle([jwtKey, next], 2);
    await waitFor(() => s.messages.length === 2, 'JWT bundle update', 5000);
    expect(jwks(s.messages[1]!).keys.map((k) => k.kid)).toEqual([jwtKey.kid, next.kid]);
    s.call.cancel();
    const wit = stream('FetchWITSVID');
    await waitFor(() => wit.ended(), 'WIT stream end');
    expect(wit.ended()).toMatchObject({ code: grpc.status.UNIMPLEMENTED });
  });

  it('leaves SDS on the same socket alone: Envoy sends no security header and is served', async () => {
    await publishCert();
    store.setTlsCertificate('default', secrets.certificate()!.certificateChainPem, secrets.certificate()!.privateKeyPem);
    const sdsClient = new SdsTestClient(sds.socketPath);
    try {
      const res = await sdsClient.fetch(['default']);
      expect(res.resources).toHaveLength(1);
    } finally {
      sdsClient.close();
    }
  });
});
