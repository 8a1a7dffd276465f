import { describe, expect, it } from 'vitest';
import { agentFlags, checkAgentConfig } from '../../../src/config/agent.js';
import { hostOfAddress } from '../../../src/grpc/client.js';
import { helpText, parseConfig } from '../../../src/config/flags.js';

describe('citadel agent flags', () => {
  it('has the command-line contract defaults', () => {
    const c = parseConfig(agentFlags, [], {});
    expect(c).toMatchObject({
      caAddress: 'citadel.citadel-system.svc:15012',
      rootCert: './var/run/secrets/istio/root-cert.pem',
      tokenFile: './var/run/secrets/tokens/istio-token',
      sdsSocket: './var/run/secrets/workload-spiffe-uds/socket',
      trustDomain: 'cluster.local',
      certTtl: 24 * 3_600_000,
      graceRatio: 0.5,
      keyType: 'ecdsa-p256',
      statusAddress: { kind: 'tcp', host: '0.0.0.0', port: 15020 },
    });
    expect(c.caServerName).toBeUndefined();
    expect(c.namespace).toBeUndefined();
    expect(c.serviceAccount).toBeUndefined();
    expect(c.fileCerts).toBeUndefined();
  });

  it("reads Istio's environment variables, and flags win over them", () => {
    const env = { CA_ADDR: 'istiod.istio-system.svc:15012', ISTIOD_SAN: 'istiod.istio-system.svc', TRUST_DOMAIN: 'example.org', POD_NAMESPACE: 'shop', SERVICE_ACCOUNT: 'cart', SECRET_TTL: '12h', SECRET_GRACE_PERIOD_RATIO: '0.3' };
    const c = parseConfig(agentFlags, ['--cert-ttl', '40s'], env);
    expect(c).toMatchObject({ caAddress: env.CA_ADDR, caServerName: env.ISTIOD_SAN, trustDomain: 'example.org', namespace: 'shop', serviceAccount: 'cart', certTtl: 40_000, graceRatio: 0.3 });
  });

  it('rejects bad values, naming the flag', () => {
    expect(() => parseConfig(agentFlags, ['--grace-ratio', '1'], {})).toThrow(/--grace-ratio \(SECRET_GRACE_PERIOD_RATIO\)/);
    expect(() => parseConfig(agentFlags, ['--grace-ratio', '0'], {})).toThrow(/grace-ratio/);
    expect(() => parseConfig(agentFlags, ['--key-type', 'dsa'], {})).toThrow(/--key-type: must be one of/);
    expect(() => parseConfig(agentFlags, ['--cert-ttl', 'soon'], {})).toThrow(/--cert-ttl \(SECRET_TTL\)/);
    expect(() => parseConfig(agentFlags, ['--status-address', 'nope'], {})).toThrow(/--status-address/);
  });

  it('documents every flag with its env var in --help', () => {
    const help = helpText('citadel agent [flags]', 'x', agentFlags);
    for (const needle of ['--ca-address', 'env CA_ADDR', 'env ISTIOD_SAN', 'env POD_NAMESPACE', 'env SERVICE_ACCOUNT', 'env SECRET_TTL', 'env SECRET_GRACE_PERIOD_RATIO', '--sds-socket', '--file-certs']) {
      expect(help).toContain(needle);
    }
  });

  it('refuses flags that contradict each other, naming the flag', () => {
    const check = (argv: string[]) => () => checkAgentConfig(parseConfig(agentFlags, argv, {}));
    expect(check(['--pod-certificate-bundle', 'b.pem', '--file-certs', 'dir'])).toThrow('invalid configuration: --pod-certificate-bundle: cannot be combined with --file-certs');
    expect(check(['--pod-trust-bundle', 't.pem'])).toThrow('invalid configuration: --pod-trust-bundle: needs --pod-certificate-bundle');
    expect(check(['--pod-certificate-bundle', 'b.pem', '--pod-trust-bundle', 't.pem'])).not.toThrow();
    expect(check([])).not.toThrow();
  });

  it('takes the server name from the CA address host', () => {
    expect(hostOfAddress('citadel.citadel-system.svc:15012')).toBe('citadel.citadel-system.svc');
    expect(hostOfAddress('[::1]:15012')).toBe('::1');
    expect(hostOfAddress('10.0.0.1:15012')).toBe('10.0.0.1');
  });
});
