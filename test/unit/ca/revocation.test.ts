import { Registry } from 'prom-client';
import { beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial, loadSelfSignedMaterial } from '../../../src/ca/material.js';
import { parseRevocationList } from '../../../src/ca/revocation-list.js';
import { createRevocationMetrics, MAX_TRACKED_PER_IDENTITY, Revocations } from '../../../src/ca/revocation.js';
import { isCitadelError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { generateKeyPair, issueCrl, parseCrls } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { openssl, opensslOk, scratch } from '../pki/openssl.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD, type TestCa } from './fixtures.js';

const START = Date.UTC(2026, 5, 1);
const HOUR = 3600_000;
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const API = `spiffe://${TD}/ns/default/sa/api`;
const tmp = scratch();

let root: TestCa;
let inter: TestCa;
let inter2: TestCa;
beforeAll(async () => {
  root = await makeRoot('Root', START - DAY, 3650 * DAY);
  inter = await makeIntermediate(root, 'Inter', START - DAY, 1000 * DAY);
  inter2 = await makeIntermediate(root, 'Inter 2', START - DAY, 1000 * DAY);
});

function setup(kind: 'self-signed' | 'plugged') {
  const clock = new FakeClock(START);
  const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: 90 * DAY });
  keyring.install(kind === 'self-signed'
    ? loadSelfSignedMaterial({ 'ca-cert.pem': root.pem, 'ca-key.pem': root.keyPem }, 'test', START)
    : loadPluggedMaterial(istioFiles(inter, root), 'test', START));
  const registry = new Registry();
  const metrics = createRevocationMetrics(registry);
  const rev = new Revocations({ keyring, clock, log: silentLogger, metrics, validityMs: DAY });
  keyring.setIssuanceGuard(rev.guard);
  let changes = 0;
  rev.onChange(() => changes++);
  const metric = async (name: string) => (await registry.getSingleMetric(name)!.get()).values.reduce((n, v) => n + v.value, 0);
  return { clock, keyring, rev, metric, changes: () => changes };
}

async function leaf(keyring: Keyring, id = WEB) {
  const { publicKey } = await generateKeyPair('ecdsa-p256');
  return keyring.issueWorkload({ publicKey, spiffeId: id, ttlMs: DAY });
}

/** openssl verify -crl_check_all of a chain against the CRL set, at `at` (ms). */
function verifyWithCrls(chain: readonly string[], crlPem: string, at: number) {
  const leafFile = tmp.file(`leaf-${Math.random()}.pem`, chain[0]!);
  const untrusted = chain.slice(1, -1).join('');
  const args = ['verify', '-crl_check_all', '-attime', String(Math.floor(at / 1000)), '-CAfile', tmp.file(`root-${Math.random()}.pem`, chain[chain.length - 1]!), '-CRLfile', tmp.file(`crl-${Math.random()}.pem`, crlPem)];
  if (untrusted) args.push('-untrusted', tmp.file(`u-${Math.random()}.pem`, untrusted));
  return openssl([...args, leafFile]);
}

describe('parseRevocationList', () => {
  it('reads serials, SPIFFE IDs, reasons and times; names the bad line', () => {
    expect(parseRevocationList('# comment\n0A:BC keyCompromise\n\nspiffe://cluster.local/ns/a/sa/b superseded 2026-01-02T03:04:05Z # why\n')).toEqual([
      { target: { kind: 'serial', serialHex: '0abc' }, reason: 'keyCompromise', line: 2 },
      { target: { kind: 'spiffe-id', id: 'spiffe://cluster.local/ns/a/sa/b' }, reason: 'superseded', revokedAt: Date.UTC(2026, 0, 2, 3, 4, 5), line: 4 },
    ]);
    expect(() => parseRevocationList('abc\nnot-a-serial\n')).toThrow(/line 2/);
    expect(() => parseRevocationList('spiffe://cluster.local/foo\n')).toThrow(/line 1: .*not a workload SPIFFE ID/);
    expect(() => parseRevocationList('abc because\n')).toThrow(/neither a reason/);
  });
});

describe('Revocations, self-signed', () => {
  it('publishes nothing until something is revoked, then one CRL openssl accepts; un-revoking clears it', async () => {
    const { keyring, rev, metric, changes } = setup('self-signed');
    expect(rev.crlPem()).toBe('');
    const baseline = changes();
    const bad = await leaf(keyring);
    const good = await leaf(keyring, API);
    expect(rev.setRevocationList(`${bad.serialHex} keyCompromise\n`)).toBe(true);
    const pem = rev.crlPem()!;
    const [crl] = parseCrls(pem);
    expect(crl!.entries.map((e) => e.serialHex)).toEqual([bad.serialHex]);
    expect(crl!.issuer).toBe(root.cert.subject);
    expect(crl!.authorityKeyId).toEqual(root.cert.subjectKeyId);
    expect(openssl(['crl', '-noout', '-verify', '-CAfile', tmp.file('root.pem', root.pem)], pem).ok).toBe(true);
    const refused = verifyWithCrls(bad.chain, pem, START + 60_000);
    expect(refused.ok).toBe(false);
    expect(refused.out).toMatch(/certificate revoked/);
    expect(verifyWithCrls(good.chain, pem, START + 60_000).ok).toBe(true);
    expect(await metric('citadel_server_crl_entries')).toBe(1);
    expect(await metric('citadel_server_crl_next_update_timestamp')).toBe((START + DAY) / 1000);
    expect(changes()).toBe(baseline + 1);

    rev.setRevocationList('');
    expect(rev.crlPem()).toBe('');
    expect(await metric('citadel_server_crl_entries')).toBe(0);
  });

  it('refuses a revoked SPIFFE ID new certificates, lists what this replica issued to it, and lets it back after un-revoking', async () => {
    const { keyring, rev, metric } = setup('self-signed');
    const earlier = await leaf(keyring);
    rev.setRevocationList(`${WEB} keyCompromise\n`);
    let err: unknown;
    try {
      await leaf(keyring);
    } catch (e) {
      err = e;
    }
    expect(isCitadelError(err, 'PERMISSION_DENIED')).toBe(true);
    expect((err as Error).message).toMatch(/spiffe:\/\/cluster.local\/ns\/default\/sa\/web is revoked \(citadel-revocations line 1, keyCompromise\)/);
    expect(await metric('citadel_server_revoked_refusal_count')).toBe(1);
    expect(parseCrls(rev.crlPem()!)[0]!.entries).toEqual([{ serialHex: earlier.serialHex, revokedAt: START, reason: 'keyCompromise' }]);
    await leaf(keyring, API);
    rev.setRevocationList('');
    await leaf(keyring);
  });

  it('remembers the newest unexpired serials per identity, within a bound a CRL can carry', async () => {
    const { keyring, rev, clock, metric } = setup('self-signed');
    const serial = (n: number) => (0x4000_0000 + n).toString(16);
    // Short-lived ones first, then more than the bound of day-long ones.
    for (let i = 0; i < 10; i++) rev.guard.recordIssued(WEB, serial(i), START + HOUR);
    expect(await metric('citadel_server_revocation_tracked_serials')).toBe(10);
    await clock.advance(HOUR);
    const extra = 6;
    for (let i = 10; i < 10 + MAX_TRACKED_PER_IDENTITY + extra; i++) rev.guard.recordIssued(WEB, serial(i), clock.now() + DAY);
    // The expired ones went on the first insert after they expired; the oldest live ones only beyond the bound.
    expect(await metric('citadel_server_revocation_tracked_serials')).toBe(MAX_TRACKED_PER_IDENTITY);
    expect(await metric('citadel_server_revocation_untracked_serials_count')).toBe(extra);
    const mine = await leaf(keyring, API);
    expect(await metric('citadel_server_revocation_tracked_serials')).toBe(MAX_TRACKED_PER_IDENTITY + 1);

    rev.setRevocationList(`${WEB}\n${API}\n`);
    const listed = parseCrls(rev.crlPem()!)[0]!.entries.map((e) => e.serialHex);
    expect(listed).toHaveLength(MAX_TRACKED_PER_IDENTITY + 1);
    expect(listed).toContain(mine.serialHex);
    expect(listed).toContain(serial(10 + MAX_TRACKED_PER_IDENTITY + extra - 1));
    expect(listed).not.toContain(serial(10 + extra - 1));
    expect(listed).toContain(serial(10 + extra));
  });

  it('re-signs at half the validity with a growing CRL number, so the list never expires while the CA runs', async () => {
    const { keyring, rev, clock } = setup('self-signed');
    const l = await leaf(keyring);
    rev.setRevocationList(`${l.serialHex}\n`);
    const first = parseCrls(rev.crlPem()!)[0]!;
    await clock.advance(12 * HOUR - 1);
    expect(parseCrls(rev.crlPem()!)[0]!.number).toBe(first.number);
    await clock.advance(1);
    const second = parseCrls(rev.crlPem()!)[0]!;
    expect(BigInt(second.number!)).toBeGreaterThan(BigInt(first.number!));
    expect(second.nextUpdate).toBe(clock.now() + DAY);
    for (let i = 0; i < 6; i++) await clock.advance(12 * HOUR);
    const later = parseCrls(rev.crlPem()!)[0]!;
    expect(later.nextUpdate!).toBeGreaterThan(clock.now());
    expect(verifyWithCrls(l.chain, rev.crlPem()!, clock.now()).out).toMatch(/certificate revoked/);
  });

  it('keeps the previous list when a new one does not parse', async () => {
    const { keyring, rev, metric } = setup('self-signed');
    const l = await leaf(keyring);
    rev.setRevocationList(`${l.serialHex}\n`);
    const before = rev.crlPem();
    expect(rev.setRevocationList('zz-not-hex\n')).toBe(false);
    expect(rev.crlPem()).toBe(before);
    expect(await metric('citadel_server_crl_refused_count')).toBe(1);
    expect(rev.serialRevoked(l.serialHex)).toMatch(/is revoked/);
  });
});

describe('Revocations, a CA without cRLSign', () => {
  it('publishes no CRL, says why, counts it, and still refuses the revoked identity', async () => {
    const keyFile = tmp.file('nocrl-key.pem', root.keyPem);
    const pem = opensslOk(['req', '-x509', '-new', '-key', keyFile, '-subj', '/O=legacy', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    const clock = new FakeClock(Date.now());
    const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: 90 * DAY });
    keyring.install(loadSelfSignedMaterial({ 'ca-cert.pem': pem, 'ca-key.pem': root.keyPem }, 'test', clock.now()));
    const registry = new Registry();
    const errors: string[] = [];
    const log = { ...silentLogger, error: (o: { reason?: string }) => errors.push(o.reason ?? ''), child: () => log } as unknown as typeof silentLogger;
    const rev = new Revocations({ keyring, clock, log, metrics: createRevocationMetrics(registry) });
    keyring.setIssuanceGuard(rev.guard);
    rev.setRevocationList(`${WEB}\nabcd\n`);
    expect(rev.crlPem()).toBe('');
    expect(errors.join('\n')).toMatch(/the signing CA "O=legacy" cannot sign CRLs: its keyUsage lacks cRLSign.*reissue it with keyUsage cRLSign/);
    expect((await registry.getSingleMetric('citadel_server_crl_refused_count')!.get()).values).toEqual([expect.objectContaining({ labels: { source: 'signing' }, value: 1 })]);
    await expect(leaf(keyring)).rejects.toThrow(/is revoked/);
  });
});

describe('Revocations, plugged-in with an intermediate', () => {
  const rootCrl = (entries: { serialHex: string; revokedAt: number }[] = [], at = START, validity = 30 * DAY) =>
    issueCrl({ signer: { cert: root.cert, key: root.key }, number: 1, thisUpdate: at - HOUR, nextUpdate: at + validity, entries }).pem;

  it('signs the intermediate\'s CRL and publishes it with the operator\'s root CRL; openssl refuses exactly the revoked leaf', async () => {
    const { keyring, rev } = setup('plugged');
    const bad = await leaf(keyring);
    const good = await leaf(keyring, API);
    expect(rev.setOperatorCrl(rootCrl(), 'test')).toBe(true);
    rev.setRevocationList(`${bad.serialHex}\n`);
    const crls = parseCrls(rev.crlPem()!);
    expect(crls.map((c) => c.issuer)).toEqual([inter.cert.subject, root.cert.subject]);
    expect(verifyWithCrls(bad.chain, rev.crlPem()!, START + 60_000).out).toMatch(/certificate revoked/);
    const ok = verifyWithCrls(good.chain, rev.crlPem()!, START + 60_000);
    expect(ok.out).toMatch(/OK/);
    expect(ok.ok).toBe(true);
  });

  it('refuses a ca-crl.pem that is garbage, misses a CA, is expired or signed by a stranger, keeping the previous CRLs', async () => {
    const { keyring, rev, metric } = setup('plugged');
    const l = await leaf(keyring);
    rev.setOperatorCrl(rootCrl(), 'test');
    rev.setRevocationList(`${l.serialHex}\n`);
    const good = rev.crlPem();
    const stranger = await makeRoot('Stranger', START - DAY);
    const cases = [
      'not a crl',
      '-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n',
      issueCrl({ signer: { cert: inter.cert, key: inter.key }, number: 1, thisUpdate: START - HOUR, nextUpdate: START + DAY, entries: [] }).pem,
      rootCrl([], START - 40 * DAY),
      issueCrl({ signer: { cert: stranger.cert, key: stranger.key }, number: 1, thisUpdate: START - HOUR, nextUpdate: START + DAY, entries: [] }).pem,
    ];
    for (const c of cases) expect(rev.setOperatorCrl(c, 'test'), c.slice(0, 30)).toBe(false);
    expect(rev.crlPem()).toBe(good);
    expect(await metric('citadel_server_crl_refused_count')).toBe(cases.length);
    // Key material rotation is not blocked by any of this.
    expect(keyring.install(loadPluggedMaterial(istioFiles(inter2, root), 'test', START))).toBe(true);
  });

  it('carries the entries of an operator CRL for the signing CA into the CRL it signs', () => {
    const { rev } = setup('plugged');
    const interCrl = issueCrl({ signer: { cert: inter.cert, key: inter.key }, number: 5, thisUpdate: START - HOUR, nextUpdate: START + DAY, entries: [{ serialHex: 'abcd', revokedAt: START - HOUR, reason: 'superseded' }] }).pem;
    expect(rev.setOperatorCrl(interCrl + rootCrl(), 'test')).toBe(true);
    const [ours, rootOne] = parseCrls(rev.crlPem()!);
    expect(ours!.issuer).toBe(inter.cert.subject);
    expect(ours!.entries).toEqual([{ serialHex: 'abcd', revokedAt: START - HOUR, reason: 'superseded' }]);
    expect(BigInt(ours!.number!)).toBeGreaterThan(5n);
    expect(rootOne!.issuer).toBe(root.cert.subject);
  });

  it('removing ca-crl.pem clears the CRLs when nothing is revoked, and publishes none it cannot complete', async () => {
    const { keyring, rev } = setup('plugged');
    rev.setOperatorCrl(rootCrl(), 'test');
    expect(parseCrls(rev.crlPem()!).map((c) => c.issuer)).toEqual([inter.cert.subject, root.cert.subject]);
    rev.setOperatorCrl(undefined, 'test');
    expect(rev.crlPem()).toBe('');
    // In-cluster revocations with an intermediate need the root's CRL: without it nothing (never an incomplete set).
    const l = await leaf(keyring);
    rev.setRevocationList(`${l.serialHex}\n`);
    expect(rev.crlPem()).toBe('');
    expect(rev.serialRevoked(l.serialHex)).toBeDefined();
  });

  it('a switch to another root keeps both chains checkable: the old signer\'s CRL is still signed, the old root\'s CRL accepted', async () => {
    const { keyring, rev, clock } = setup('plugged');
    const rootB = await makeRoot('Root B', START - DAY, 3650 * DAY);
    const interB = await makeIntermediate(rootB, 'Inter B', START - DAY, 1000 * DAY);
    rev.setOperatorCrl(rootCrl(), 'test');
    const oldLeaf = await leaf(keyring);
    keyring.install(loadPluggedMaterial(istioFiles(interB, rootB), 'test', START));
    const rootBCrl = issueCrl({ signer: { cert: rootB.cert, key: rootB.key }, number: 1, thisUpdate: START - HOUR, nextUpdate: START + 30 * DAY, entries: [] }).pem;
    expect(rev.setOperatorCrl(rootBCrl + rootCrl(), 'test')).toBe(true);
    const newLeaf = await leaf(keyring, API);
    rev.setRevocationList(`${oldLeaf.serialHex}\n`);
    expect(parseCrls(rev.crlPem()!).map((c) => c.issuer)).toEqual([interB.cert.subject, inter.cert.subject, rootB.cert.subject, root.cert.subject]);
    const at = clock.now() + 60_000;
    expect(verifyWithCrls(oldLeaf.chain.slice(0, 2).concat(root.pem), rev.crlPem()!, at).out).toMatch(/certificate revoked/);
    const ok = verifyWithCrls(newLeaf.chain, rev.crlPem()!, at);
    expect(ok.out).toMatch(/OK/);
    expect(ok.ok).toBe(true);
  });

  it('a rotation to another intermediate signs for it, keeps signing for the old one while it is retained, with the same root CRL', async () => {
    const { keyring, rev, clock } = setup('plugged');
    rev.setOperatorCrl(rootCrl(), 'test');
    keyring.install(loadPluggedMaterial(istioFiles(inter2, root), 'test', START));
    expect(parseCrls(rev.crlPem()!).map((c) => c.issuer)).toEqual([inter2.cert.subject, inter.cert.subject, root.cert.subject]);
    // The keyring drops the old intermediate after the longest workload lifetime; so does the CRL set.
    await clock.advance(91 * DAY);
    rev.setRevocationList('# touch\n');
    expect(parseCrls(rev.crlPem()!).map((c) => c.issuer)).toEqual([inter2.cert.subject, root.cert.subject]);
  });
});
