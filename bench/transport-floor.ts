/**
 * The transport floor: citadel's own gRPC layer (src/grpc startGrpcServer + caServiceBinding, grpc-js over
 * TLS) serving IstioCertificateService with a handler that returns a constant, pre-issued chain and does
 * nothing else: no authentication, no CSR parsing, no signing, no logging. Its CPU per request under the same
 * load generator is what citadel ca pays before any CA work; the rest of citadel's figure is the CA itself.
 *
 *   node dist/bench/transport-floor.js --port <p> --cacerts <dir with ca-cert.pem, ca-key.pem, cert-chain.pem>
 *                                      --spiffe-id <the one identity the load uses> --server-name <dns>
 * Prints one JSON line {"ready":true,...} once it listens; stops on SIGTERM.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { caServiceBinding } from '../src/grpc/ca-service.js';
import { startGrpcServer } from '../src/grpc/server.js';
import { generateKeyPair, issueWorkloadCertificate, parseCertificate, parsePrivateKeyPem, privateKeyToPem, splitPem } from '../src/pki/index.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    cacerts: { type: 'string' },
    'spiffe-id': { type: 'string' },
    'server-name': { type: 'string', default: 'floor.bench.svc' },
  },
});
if (!values.port || !values.cacerts || !values['spiffe-id']) {
  process.stderr.write('usage: transport-floor --port <p> --cacerts <dir> --spiffe-id <id> [--server-name <dns>]\n');
  process.exit(2);
}

const dir = values.cacerts;
const signer = {
  cert: parseCertificate(fs.readFileSync(path.join(dir, 'ca-cert.pem'), 'utf8')),
  key: parsePrivateKeyPem(fs.readFileSync(path.join(dir, 'ca-key.pem'), 'utf8')),
};
const chainPems = splitPem(fs.readFileSync(path.join(dir, 'cert-chain.pem'), 'utf8'));
const now = Date.now();
const day = 24 * 3600 * 1000;
const keyType = signer.cert.key.algorithm === 'rsa' ? 'rsa-2048' : 'ecdsa-p256';

// The constant answer: a real leaf for the load's identity, then the chain, as citadel ca would send it.
const workload = await generateKeyPair(keyType);
const leaf = issueWorkloadCertificate({ signer, publicKey: workload.publicKey, spiffeId: values['spiffe-id'], ttlMs: day, now });
const answer = [leaf.pem, ...chainPems];

// The serving certificate (DNS SAN = --server-name), chained like citadel ca's.
const serving = await generateKeyPair(keyType);
const servingCert = issueWorkloadCertificate({
  signer, publicKey: serving.publicKey, spiffeId: 'spiffe://cluster.local/ns/bench/sa/transport-floor',
  dnsNames: [values['server-name']!], ttlMs: day, now,
});
const credentials = grpc.ServerCredentials.createSsl(null, [{
  cert_chain: Buffer.from(servingCert.pem + chainPems.join('')),
  private_key: Buffer.from(privateKeyToPem(serving.privateKey)),
}], false);

const server = await startGrpcServer({
  address: `127.0.0.1:${values.port}`,
  credentials,
  services: [caServiceBinding({ createCertificate: async () => answer })],
});
process.stdout.write(`${JSON.stringify({ ready: true, port: server.port, pid: process.pid })}\n`);
const stop = () => {
  void server.stop(1000).then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
