/** `citadel ca` flags: the design's command-line contract (names, env vars, defaults) and config errors. */
import { describe, expect, it } from 'vitest';
import { caFlags, checkCaConfig } from '../../../src/config/ca.js';
import { parseConfig } from '../../../src/config/flags.js';

describe('citadel ca flags', () => {
  it("keeps the design's names, environment variables and defaults", () => {
    const byName = Object.fromEntries(Object.values(caFlags).map((f) => [f.name, f]));
    const contract: Array<[string, string | undefined, string | undefined]> = [
      ['namespace', 'POD_NAMESPACE', 'citadel-system'],
      ['kubeconfig', 'KUBECONFIG', undefined],
      ['trust-domain', 'TRUST_DOMAIN', 'cluster.local'],
      ['grpc-address', 'CITADEL_GRPC_ADDRESS', ':15012'],
      ['monitoring-address', 'CITADEL_MONITORING_ADDRESS', ':15014'],
      ['cacerts-dir', 'ROOT_CA_DIR', '/etc/cacerts'],
      ['token-audiences', 'TOKEN_AUDIENCES', 'istio-ca'],
      ['workload-cert-ttl', 'DEFAULT_WORKLOAD_CERT_TTL', '24h'],
      ['max-workload-cert-ttl', 'MAX_WORKLOAD_CERT_TTL', '2160h'],
      ['sa-secrets', 'CITADEL_SA_SECRETS', 'labeled'],
    ];
    for (const [name, env, def] of contract) {
      expect(byName[name], name).toBeDefined();
      expect(byName[name]!.env, name).toBe(env);
      expect(byName[name]!.default, name).toBe(def);
    }
    // Every flag has an environment variable.
    expect(Object.values(caFlags).filter((f) => !f.env).map((f) => f.name)).toEqual([]);
  });

  it('parses defaults into typed values', () => {
    const c = parseConfig(caFlags, [], {});
    expect(c.workloadCertTtl).toBe(24 * 3600_000);
    expect(c.maxWorkloadCertTtl).toBe(2160 * 3600_000);
    expect(c.grpcAddress).toEqual({ kind: 'tcp', host: '0.0.0.0', port: 15012 });
    expect(c.tokenAudiences).toEqual(['istio-ca']);
    expect(c.selfSignedKeyType).toBe('ecdsa-p256');
    expect(c.extraDnsNames).toEqual([]);
    expect(() => checkCaConfig(c)).not.toThrow();
  });

  it('names the flag and env var of a bad value, and cross-flag problems', () => {
    expect(() => parseConfig(caFlags, [], { TOKEN_AUDIENCES: ' , ' })).toThrow('--token-audiences (TOKEN_AUDIENCES): needs at least one audience');
    expect(() => parseConfig(caFlags, ['--self-signed-key-type', 'rsa-1024'], {})).toThrow(/--self-signed-key-type \(CITADEL_SELF_SIGNED_KEY_TYPE\): must be one of/);
    expect(() => parseConfig(caFlags, ['--trust-domain', 'Bad Domain'], {})).toThrow(/--trust-domain \(TRUST_DOMAIN\)/);
    expect(() => parseConfig(caFlags, ['--sa-secrets', 'some'], {})).toThrow(/--sa-secrets \(CITADEL_SA_SECRETS\): must be one of off, labeled, all/);
    expect(() => checkCaConfig(parseConfig(caFlags, ['--workload-cert-ttl', '100h', '--max-workload-cert-ttl', '1h'], {}))).toThrow('--workload-cert-ttl: must not exceed --max-workload-cert-ttl');
    expect(() => checkCaConfig(parseConfig(caFlags, ['--lease-renew-deadline', '20s'], {}))).toThrow(/--lease-renew-deadline/);
    expect(() => parseConfig(caFlags, ['--namespace-selector', 'team in (a'], {})).toThrow(/--namespace-selector \(CITADEL_NAMESPACE_SELECTOR\)/);
    expect(parseConfig(caFlags, ['--namespace-selector', 'team=a'], {}).namespaceSelector.matches({ team: 'a' })).toBe(true);
    expect(parseConfig(caFlags, ['--token-review-cache-ttl', '0'], {}).tokenReviewCacheTtl).toBe(0);
  });
});
