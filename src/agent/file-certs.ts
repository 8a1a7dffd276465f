/**
 * File-mounted mode: serve `cert-chain.pem`, `key.pem` and `root-cert.pem` from a directory (Istio's
 * ./etc/certs layout) instead of talking to a CA, and push again whenever they change. The `istio.<sa>` Secret
 * of the ServiceAccount-secret mode (type istio.io/key-and-cert) has exactly these keys, so mounting that
 * Secret at ./etc/certs (or pointing --file-certs at its mount) serves it the same way.
 *
 * The kubelet-projected layout (docs/pod-certificates.md) is the same idea with two files: the `podCertificate`
 * source's credential bundle (PKCS#8 `PRIVATE KEY` first, then the chain, written atomically by the kubelet, so key
 * and chain cannot tear) and the `clusterTrustBundle` source's roots.
 *
 * Files are checked before publishing (key matches cert, not expired); a bad or half-written set is logged and
 * counted, and the last good set keeps being served until a good one appears. Certificates are not renewed
 * here: whoever writes the files rotates them.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Clock } from '../clock.js';
import { CitadelError, toCitadelError } from '../errors.js';
import type { Logger } from '../log.js';
import { splitPem } from '../pki/index.js';
import { watchFiles, type FileContents, type FileWatcher } from '../file-watch.js';
import { mergeTrustBundles, ROOT_CA_RESOURCE, validateCertificateMaterial, WORKLOAD_CERT_RESOURCE } from './material.js';
import type { AgentMetrics } from './metrics.js';
import type { WorkloadSecretsPublisher } from './secret-store.js';

export const FILE_CERT_NAMES = { certChain: 'cert-chain.pem', key: 'key.pem', root: 'root-cert.pem' } as const;

/** True when all three files exist in `dir` (how the agent decides to start in file-mounted mode). */
export function hasMountedCerts(dir: string): boolean {
  return Object.values(FILE_CERT_NAMES).every((name) => {
    try {
      return fs.statSync(path.join(dir, name)).isFile();
    } catch {
      return false;
    }
  });
}

/** A kubelet-projected credential bundle and trust bundle (absolute paths). */
export interface CredentialBundleFiles {
  credentialBundle: string;
  trustBundle: string;
}

/** Splits a credential bundle: its first PEM block is the key, the rest is the chain. @throws CitadelError PEM_INVALID. */
export function splitCredentialBundle(text: string): { key: string; chain: string } {
  const blocks = splitPem(text);
  const [key, ...chain] = blocks;
  if (!key || !/^-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) throw new CitadelError('PEM_INVALID', 'the credential bundle does not start with a PRIVATE KEY block');
  if (chain.length === 0) throw new CitadelError('PEM_INVALID', 'the credential bundle holds no certificate after its key');
  return { key, chain: chain.join('') };
}

export interface FileCertsDeps {
  /** Istio's layout: cert-chain.pem, key.pem, root-cert.pem in this directory. */
  dir?: string;
  /** Or the kubelet-projected layout. */
  credentialBundle?: CredentialBundleFiles;
  secrets: WorkloadSecretsPublisher;
  clock: Clock;
  log: Logger;
  metrics?: AgentMetrics;
  pollMs?: number;
}

export interface FileCertSource {
  /** Loads the files once (publishing what is valid) and starts watching. */
  start(): Promise<void>;
  stop(): void;
}

/** Creates the file-mounted source. */
export function createFileCertSource(deps: FileCertsDeps): FileCertSource {
  const bundle = deps.credentialBundle;
  if (!bundle && deps.dir === undefined) throw new TypeError('createFileCertSource needs dir or credentialBundle');
  // In the credential-bundle layout key and chain are one file.
  const certPath = bundle ? bundle.credentialBundle : path.join(deps.dir!, FILE_CERT_NAMES.certChain);
  const keyPath = bundle ? bundle.credentialBundle : path.join(deps.dir!, FILE_CERT_NAMES.key);
  const rootPath = bundle ? bundle.trustBundle : path.join(deps.dir!, FILE_CERT_NAMES.root);
  let watcher: FileWatcher | undefined;

  const load = (contents: FileContents) => {
    const now = deps.clock.now();
    const root = contents.get(rootPath);
    try {
      if (root === undefined) throw new Error(`${rootPath} is missing`);
      deps.secrets.publishTrustBundle(mergeTrustBundles([root]));
    } catch (err) {
      deps.metrics?.fileSecretFailures.inc({ resource_name: ROOT_CA_RESOURCE });
      deps.log.error({ path: rootPath, err: toCitadelError(err, 'CERT_INVALID') }, 'mounted root certificate not loaded; keeping the last good one');
    }
    try {
      let chain = contents.get(certPath);
      let key = contents.get(keyPath);
      if (chain === undefined || key === undefined) throw new Error(`${chain === undefined ? certPath : keyPath} is missing`);
      if (bundle) ({ chain, key } = splitCredentialBundle(chain));
      deps.secrets.publishCertificate(validateCertificateMaterial({ chain, key, now }));
    } catch (err) {
      deps.metrics?.fileSecretFailures.inc({ resource_name: WORKLOAD_CERT_RESOURCE });
      deps.log.error({ path: certPath, err: toCitadelError(err, 'CERT_INVALID') }, 'mounted certificate not loaded; keeping the last good one');
    }
  };

  return {
    async start() {
      deps.log.info(bundle ? { credentialBundle: certPath, trustBundle: rootPath } : { dir: deps.dir }, 'serving file-mounted certificates (no CA client)');
      watcher = watchFiles({
        paths: [...new Set([certPath, keyPath, rootPath])],
        clock: deps.clock,
        log: deps.log,
        pollMs: deps.pollMs,
        onWatchFailure: () => deps.metrics?.fileWatcherFailures.inc(),
        onChange: load,
      });
      await watcher.checkNow();
    },
    stop() {
      watcher?.close();
    },
  };
}
