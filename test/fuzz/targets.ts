/**
 * Everything an untrusted caller can make citadel parse, as fuzz targets (test/fuzz/engine.ts): PEM text, a CSR
 * (as PEM text and as DER, through the CA's own parse-and-check path), certificates (client certificates reach
 * the CA's parser), SDS requests (protobuf bytes from Envoy's socket, through the SDS service), and bearer tokens
 * (the CA reads a token's `exp` without verifying it, and the authorization header).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import type { ResponseSink } from '../../src/streams.js';
import { checkRequestedIdentity } from '../../src/ca/signing-policy.js';
import { CitadelError } from '../../src/errors.js';
import { createCsr, generateKeyPair, issueCaCertificate, issueWorkloadCertificate, parseCertificate, parseCsr } from '../../src/pki/index.js';
import { decodePemBlocks, encodePem } from '../../src/pki/pem.js';
import type { FuzzTarget } from './engine.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// From test/fuzz/ or dist/test/fuzz/: the committed seeds stay in the source tree.
const CORPUS = [path.join(HERE, 'corpus'), path.join(HERE, '..', '..', '..', 'test', 'fuzz', 'corpus')].find((d) => fs.existsSync(d))!;
export const IDENTITY = 'spiffe://cluster.local/ns/default/sa/app';

/** The committed real CSRs (openssl, Go crypto/x509) as PEM text. */
export function seedCsrPems(): string[] {
  const dir = path.join(CORPUS, 'csr');
  return fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));
}

const derOf = (pem: string) => decodePemBlocks(pem)[0]!.der;

/** The CA's parse-and-check of a CSR (what signCsr does before signing). */
export function checkCsr(pem: string): void {
  checkRequestedIdentity({ identity: IDENTITY }, parseCsr(pem));
}

export const TARGET_NAMES = ['pem', 'csr-pem', 'csr-der', 'certificate', 'sds-request', 'token'] as const;

/**
 * The target called `name`, with its seeds. Modules only some targets need (gRPC, the SDS service) are imported
 * here, on demand: coverage is read after every input, and its cost grows with every script loaded.
 */
export async function loadTarget(name: string): Promise<FuzzTarget> {
  const all = await fuzzTargets(name);
  const t = all.find((x) => x.name === name);
  if (!t) throw new Error(`no fuzz target ${name}; try ${TARGET_NAMES.join(', ')}`);
  return t;
}

async function fuzzTargets(name: string): Promise<FuzzTarget[]> {
  const { privateKey, publicKey } = await generateKeyPair('ecdsa-p256');
  const csrs = [...seedCsrPems(), createCsr({ key: privateKey, spiffeId: IDENTITY })];
  const caKey = (await generateKeyPair('ecdsa-p256')).privateKey;
  const now = Date.UTC(2026, 5, 1);
  const root = issueCaCertificate({ key: caKey, organization: 'cluster.local', commonName: 'root', trustDomain: 'cluster.local', ttlMs: 864e5, now });
  const leaf = issueWorkloadCertificate({ signer: { cert: parseCertificate(root.pem), key: caKey }, publicKey, spiffeId: IDENTITY, dnsNames: ['a.b'], ttlMs: 3600_000, now });

  if (name === 'sds-request') return [await sdsTarget(now)];
  if (name === 'token') return [await tokenTarget()];
  return [
    { name: 'pem', seeds: [...csrs, root.pem + leaf.pem].map((p) => Buffer.from(p)), run: (b) => void decodePemBlocks(b.toString('latin1')) },
    { name: 'csr-pem', seeds: csrs.map((p) => Buffer.from(p)), run: (b) => checkCsr(b.toString('latin1')) },
    { name: 'csr-der', seeds: csrs.map(derOf), run: (b) => checkCsr(encodePem('CERTIFICATE REQUEST', b)) },
    { name: 'certificate', seeds: [root.der, leaf.der], run: (b) => void parseCertificate(b) },
  ];
}

/** Protobuf bytes as Envoy would send them on the SDS socket, decoded as grpc-js does, then the SDS service. */
async function sdsTarget(now: number): Promise<FuzzTarget> {
  const [{ SECRET_TYPE_URL }, { sdsServiceDefinition }, { createSdsService }, { SecretStore }, { silentLogger }, { FakeClock }] = await Promise.all([
    import('../../src/agent/sds/xds-types.js'),
    import('../../src/grpc/protos.js'),
    import('../../src/agent/sds/service.js'),
    import('../../src/agent/secret-store.js'),
    import('../../src/log.js'),
    import('../support/fake-clock.js'),
  ]);
  const streamSecrets = sdsServiceDefinition().StreamSecrets as grpc.MethodDefinition<unknown, unknown>;
  const sdsRequest = (req: object) => streamSecrets.requestSerialize(req);
  const sds = createSdsService({ secrets: new SecretStore({ clock: new FakeClock(now), log: silentLogger }), log: silentLogger, clock: new FakeClock(now) });
  const sink: ResponseSink<never> = { send: () => undefined, end: () => undefined, fail: () => undefined };
  return {
    name: 'sds-request',
    seeds: [
      sdsRequest({ node: { id: 'sidecar~10.0.0.1~app.default~default.svc.cluster.local' }, resource_names: ['default'], type_url: SECRET_TYPE_URL }),
      sdsRequest({ resource_names: ['ROOTCA', 'file-cert:/etc/certs/cert.pem~/etc/certs/key.pem'], type_url: SECRET_TYPE_URL, version_info: '1', response_nonce: 'n' }),
      sdsRequest({ type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster', error_detail: { code: 3, message: 'nack' } }),
    ],
    run: (b) => {
      let req: unknown;
      try {
        req = streamSecrets.requestDeserialize(b);
      } catch (err) {
        // grpc-js refuses a message that does not decode (the call ends with INTERNAL): a refusal, not a finding.
        throw new CitadelError('DER_INVALID', 'undecodable SDS request', (err as Error).message);
      }
      const stream = sds.openStream(sink, 'fuzz');
      try {
        stream.onRequest(req as never);
      } finally {
        stream.onClose();
      }
    },
  };
}

/** A bearer token: the authorization header as the CA reads it, and the `exp` it reads without verifying. */
async function tokenTarget(): Promise<FuzzTarget> {
  const [grpcJs, { jwtExpiry }, { bearerToken }] = await Promise.all([import('@grpc/grpc-js'), import('../../src/ca/authn.js'), import('../../src/grpc/server.js')]);
  const jwt = (claims: object) => `eyJhbGciOiJSUzI1NiJ9.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;
  return {
    name: 'token',
    seeds: [jwt({ exp: 1_800_000_000, sub: 'system:serviceaccount:a:b' }), jwt({ exp: 'x' }), 'Bearer abc.def.ghi'].map((s) => Buffer.from(s)),
    run: (b) => {
      const text = b.toString('latin1');
      jwtExpiry(text);
      // Only what an HTTP/2 header value can carry (grpc-js refuses to build anything else).
      const md = new grpcJs.Metadata();
      md.set('authorization', `Bearer ${text.replace(/[^\x20-\x7e]/g, '')}`);
      bearerToken(md);
    },
  };
}
