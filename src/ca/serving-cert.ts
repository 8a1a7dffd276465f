/**
 * The CA's own TLS serving certificate, issued by the CA itself: DNS SANs of its Service (citadel.<ns>.svc,
 * citadel.<ns>.svc.cluster.local, plus extras), key type following the CA key (EC keeps its curve, RSA gets
 * RSA-2048, as istiod). Re-issued at half its life and whenever the key material changes, and handed to
 * `onUpdate` (which swaps the gRPC server's credentials without a restart).
 */
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { describeKey, generateKeyPair, privateKeyToPem, type KeyType } from '../pki/index.js';
import type { Keyring } from './keyring.js';

export interface ServingMaterial {
  /** Leaf then intermediates. */
  readonly certChainPem: string;
  readonly keyPem: string;
  /** What client certificates are checked against at handshake: the trust bundle and intermediates. */
  readonly clientCaPem: string;
  readonly notAfter: number;
  readonly serialHex: string;
}

export interface ServingCertDeps {
  readonly keyring: Keyring;
  readonly dnsNames: readonly string[];
  /** The URI SAN of the serving certificate (the CA's own workload identity). */
  readonly spiffeId: string;
  readonly ttlMs: number;
  readonly clock: Clock;
  readonly log: Logger;
  readonly onUpdate: (material: ServingMaterial) => void;
  /** Retry delay after a failed issuance; default 10 s. */
  readonly retryMs?: number;
}

/** The serving-certificate key type for a CA key type. */
export function servingKeyType(caKeyType: KeyType): KeyType {
  return caKeyType === 'ecdsa-p256' || caKeyType === 'ecdsa-p384' ? caKeyType : 'rsa-2048';
}

/** Default Service DNS names for a CA in `namespace`. */
export function serviceDnsNames(namespace: string, extra: readonly string[] = []): string[] {
  return [...new Set([`citadel.${namespace}.svc`, `citadel.${namespace}.svc.cluster.local`, ...extra])];
}

export interface ServingCertManager {
  /** The material in use, once issued. */
  current(): ServingMaterial | undefined;
  /** Issues now (first call at start; later calls force a re-issue). @throws what issuance throws. */
  issue(): Promise<ServingMaterial>;
  stop(): void;
}

export function createServingCertManager(deps: ServingCertDeps): ServingCertManager {
  const { keyring, clock, log } = deps;
  let material: ServingMaterial | undefined;
  let timer: Timer | undefined;
  let stopped = false;
  let running: Promise<ServingMaterial> | undefined;
  let again = false;

  const schedule = (ms: number) => {
    timer?.cancel();
    if (stopped) return;
    timer = clock.setTimer(() => void issueSoon(), ms);
  };

  const issueOnce = async (): Promise<ServingMaterial> => {
    const ca = keyring.current();
    if (!ca) throw new Error('CA key material is not loaded');
    const { privateKey, publicKey } = await generateKeyPair(servingKeyType(describeKey(ca.signer.key).type));
    const issued = keyring.issueWorkload({ publicKey, spiffeId: deps.spiffeId, dnsNames: deps.dnsNames, ttlMs: deps.ttlMs });
    const chain = issued.chain;
    const next: ServingMaterial = {
      certChainPem: chain.slice(0, -1).join(''),
      keyPem: privateKeyToPem(privateKey),
      clientCaPem: keyring.trustBundlePem() + keyring.verificationMaterial().intermediates.map((c) => c.pem).join(''),
      notAfter: issued.notAfter,
      serialHex: issued.serialHex,
    };
    deps.onUpdate(next);
    material = next;
    const now = clock.now();
    schedule(Math.max(1000, (issued.notAfter - now) / 2));
    log.info({ serial: issued.serialHex, notAfter: new Date(issued.notAfter).toISOString(), dnsNames: deps.dnsNames }, 'serving certificate issued');
    return next;
  };

  // Coalesce: a change during an issuance triggers exactly one more.
  const issueSoon = (): Promise<ServingMaterial> => {
    if (running) {
      again = true;
      return running;
    }
    running = issueOnce()
      .catch((err: unknown) => {
        log.error({ err }, 'serving certificate issuance failed; retrying');
        schedule(deps.retryMs ?? 10_000);
        throw err;
      })
      .finally(() => {
        running = undefined;
        if (again && !stopped) {
          again = false;
          void issueSoon().catch(() => undefined);
        }
      });
    return running;
  };

  const unsubscribe = keyring.onChange(() => {
    if (!stopped) void issueSoon().catch(() => undefined);
  });

  return {
    current: () => material,
    issue: issueSoon,
    stop() {
      stopped = true;
      timer?.cancel();
      unsubscribe();
    },
  };
}
