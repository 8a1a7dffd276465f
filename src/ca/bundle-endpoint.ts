/**
 * The SPIFFE bundle endpoint (SPIFFE Federation §5), profile `https_spiffe`: an HTTPS server presenting the CA's
 * own serving certificate, an X509-SVID for spiffe://<td>/ns/<ns>/sa/citadel, that answers GET with the trust
 * domain's SPIFFE bundle. Why this profile: the CA already has an SVID and renews it; `https_web` would need a
 * certificate from a public CA (ACME, a DNS name reachable from outside) that an in-cluster CA cannot get on its
 * own. Federating clients configure the endpoint URL, its SPIFFE ID and a first bundle, then follow the bundle.
 * No client authentication, as the spec requires.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ListenAddress } from '../config/flags.js';
import type { Logger } from '../log.js';
import type { SpiffeBundleSource } from './jwt-svid.js';
import type { ServingMaterial } from './serving-cert.js';

export interface BundleEndpoint {
  readonly port: number;
  /** Presents `material` to new connections (the serving certificate was re-issued). */
  updateCertificate(material: ServingMaterial): void;
  close(): Promise<void>;
}

const tlsOptions = (m: ServingMaterial) => ({ cert: m.certChainPem, key: m.keyPem, minVersion: 'TLSv1.2' as const });

/** @throws Error when the address cannot be bound. */
export async function startBundleEndpoint(deps: { address: ListenAddress; bundle: SpiffeBundleSource; certificate: ServingMaterial; log: Logger }): Promise<BundleEndpoint> {
  const server = https.createServer(tlsOptions(deps.certificate), (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' });
      res.end('method not allowed\n');
      return;
    }
    const json = deps.bundle.json();
    if (!json) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('no trust bundle yet\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : json);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (deps.address.kind === 'unix') server.listen(deps.address.path, done);
    else server.listen(deps.address.port, deps.address.host, done);
  });
  const bound = server.address();
  const port = typeof bound === 'object' && bound ? (bound as AddressInfo).port : 0;
  deps.log.info({ port }, 'SPIFFE bundle endpoint listening (https_spiffe)');
  return {
    port,
    updateCertificate(material) {
      server.setSecureContext(tlsOptions(material));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
