import { beforeAll, describe, expect, it } from 'vitest';
import type { Caller } from '../../../src/ca/authn.js';
import { createJwtKeySet, createSpiffeBundleSource, mintJwtSvid } from '../../../src/ca/jwt-svid.js';
import { Keyring } from '../../../src/ca/keyring.js';
import { loadPluggedMaterial } from '../../../src/ca/material.js';
import { createKeyedRateLimiter } from '../../../src/rate-limit.js';
import { silentLogger } from '../../../src/log.js';
import { decodeJwtSvid, importJwks, parseSpiffeBundle, validateJwtSvid } from '../../../src/pki/index.js';
import { FakeClock } from '../../support/fake-clock.js';
import { DAY, istioFiles, makeIntermediate, makeRoot, TD, type TestCa } from './fixtures.js';

const START = Date.UTC(2026, 5, 1, 10);
const HOUR = 3600_000;
const caller: Caller = { identity: `spiffe://${TD}/ns/app/sa/web`, method: 'token', namespace: 'app', serviceAccount: 'web' };
let rootA: TestCa;
let interA: TestCa;
let rootB: TestCa;
let interB: TestCa;

beforeAll(async () => {
  rootA = await makeRoot('Root A', START - DAY, 3650 * DAY);
  interA = await makeIntermediate(rootA, 'A1', START - DAY, 1000 * DAY);
  rootB = await makeRoot('Root B', START - HOUR, 3650 * DAY);
  interB = await makeIntermediate(rootB, 'B1', START - HOUR, 1000 * DAY);
});

function setup() {
  const clock = new FakeClock(START);
  const keyring = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
  keyring.install(loadPluggedMaterial(istioFiles(interA, rootA), 'test', clock.now()));
  const keys = createJwtKeySet({ keyring, trustDomain: TD, rotationMs: 24 * HOUR, retainMs: HOUR, clock });
  const policy = { defaultTtlMs: 5 * 60_000, maxTtlMs: HOUR, maxAudiences: 4 };
  const mint = (audience: string[], validityDurationSeconds = 0) => mintJwtSvid({ keys, policy, clock, log: silentLogger }, caller, { audience, validityDurationSeconds });
  return { clock, keyring, keys, mint };
}

describe('JWT-SVID minting', () => {
  it("signs for the caller's own identity with the current period's key, default TTL, capped maximum", () => {
    const { clock, keys, mint } = setup();
    const { token, expiresAt } = mint(['db']);
    expect(expiresAt).toBe(START + 5 * 60_000);
    const { header, claims } = decodeJwtSvid(token);
    expect(header.kid).toBe(keys.signingKey(clock.now()).kid);
    expect(claims).toEqual({ sub: caller.identity, aud: 'db', iat: START / 1000, exp: START / 1000 + 300 });
    const published = new Map(keys.publishedKeys(clock.now()).map((k) => [k.kid, { ...k.publicJwk }]));
    expect(validateJwtSvid({ token, audience: 'db', keys: importJwks(published), now: clock.now() }).sub).toBe(caller.identity);
    expect(mint(['db', 'cache'], 3600).expiresAt).toBe(START + HOUR);
    expect(() => mint(['db'], 3601)).toThrow(expect.objectContaining({ code: 'TTL_INVALID' }));
    expect(() => mint([])).toThrow(expect.objectContaining({ code: 'REQUEST_INVALID', message: 'audience must be specified' }));
    expect(() => mint([''])).toThrow(expect.objectContaining({ code: 'REQUEST_INVALID' }));
    expect(() => mint(['a', 'b', 'c', 'd', 'e'])).toThrow(expect.objectContaining({ code: 'REQUEST_INVALID' }));
  });

  it('is limited per identity', () => {
    const { clock, keys } = setup();
    const rateLimiter = createKeyedRateLimiter({ qps: 1, burst: 2, clock });
    const mint = () => mintJwtSvid({ keys, policy: { defaultTtlMs: 60_000, maxTtlMs: HOUR, maxAudiences: 1 }, clock, log: silentLogger, rateLimiter }, caller, { audience: ['db'], validityDurationSeconds: 0 });
    mint();
    mint();
    expect(mint).toThrow(expect.objectContaining({ code: 'RATE_LIMITED' }));
  });

  it('is refused before the CA has key material', () => {
    const clock = new FakeClock(START);
    const keys = createJwtKeySet({ keyring: new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY }), trustDomain: TD, rotationMs: DAY, retainMs: HOUR, clock });
    expect(() => mintJwtSvid({ keys, policy: { defaultTtlMs: 1000, maxTtlMs: 1000, maxAudiences: 1 }, clock, log: silentLogger }, caller, { audience: ['x'], validityDurationSeconds: 0 })).toThrow(
      expect.objectContaining({ code: 'CA_NOT_READY' }),
    );
    expect(keys.publishedKeys(clock.now())).toEqual([]);
  });
});

describe('JWT key rotation and the SPIFFE bundle', () => {
  it('publishes the previous, current and next keys; the next one signs only after a whole period; a token outlives its key period', async () => {
    const { clock, keys, keyring, mint } = setup();
    const source = createSpiffeBundleSource({ keyring, keys, refreshHintSeconds: 300, clock, log: silentLogger });
    let changes = 0;
    source.onChange(() => changes++);
    const bundle = () => parseSpiffeBundle(source.json()!);
    const [prev, cur, next] = keys.publishedKeys(clock.now()).map((k) => k.kid);
    expect([...bundle().jwtAuthorities.keys()]).toEqual([prev, cur, next]);
    expect(bundle().x509Authorities).toEqual([rootA.cert.der]);
    expect(bundle().refreshHintSeconds).toBe(300);
    const seq0 = bundle().sequence!;
    expect(seq0).toBe(keys.periodStart(START) / 1000);

    // A token signed in the last minute of the period still validates in the next period with the new bundle.
    await clock.advance(keys.periodStart(START) + DAY - 60_000 - clock.now());
    expect(changes).toBe(0);
    const late = mint(['db'], 3600).token;
    expect(decodeJwtSvid(late).header.kid).toBe(cur);
    await clock.advance(60_000);
    expect(changes).toBe(1);
    expect([...bundle().jwtAuthorities.keys()].slice(0, 2)).toEqual([cur, next]);
    expect(bundle().sequence).toBe(seq0 + DAY / 1000);
    expect(decodeJwtSvid(mint(['db']).token).header.kid).toBe(next);
    const nowKeys = importJwks(bundle().jwtAuthorities);
    expect(validateJwtSvid({ token: late, audience: 'db', keys: nowKeys, now: clock.now() + 30 * 60_000 }).sub).toBe(caller.identity);
    source.stop();
  });

  it('changes (roots, keys and sequence) when the CA material changes, the same way in every replica', async () => {
    const { clock, keyring, keys, mint } = setup();
    const oldToken = mint(['db'], 3600).token;
    const source = createSpiffeBundleSource({ keyring, keys, refreshHintSeconds: 60, clock, log: silentLogger });
    const before = parseSpiffeBundle(source.json()!);
    // A second replica with the same material publishes the same bundle.
    const other = new Keyring({ clock, log: silentLogger, maxWorkloadTtlMs: DAY });
    other.install(loadPluggedMaterial(istioFiles(interA, rootA), 'test', clock.now()));
    const otherSource = createSpiffeBundleSource({ keyring: other, keys: createJwtKeySet({ keyring: other, trustDomain: TD, rotationMs: 24 * HOUR, retainMs: HOUR, clock }), refreshHintSeconds: 60, clock, log: silentLogger });
    expect(otherSource.json()).toBe(source.json());

    let changes = 0;
    source.onChange(() => changes++);
    keyring.install(loadPluggedMaterial(istioFiles(interB, rootB), 'test', clock.now()));
    expect(changes).toBe(1);
    const after = parseSpiffeBundle(source.json()!);
    expect(after.x509Authorities).toContainEqual(rootB.cert.der);
    expect(after.x509Authorities).toContainEqual(rootA.cert.der); // retained until its leaves expire
    // The new material signs at once; the old material's keys stay published for the longest JWT-SVID lifetime.
    const [oldPrev, oldCur] = [...before.jwtAuthorities.keys()];
    expect([...after.jwtAuthorities.keys()].slice(0, 2)).toEqual([oldPrev, oldCur]);
    expect(after.jwtAuthorities.size).toBe(5);
    expect(decodeJwtSvid(mint(['db']).token).header.kid).toBe(keys.signingKey(clock.now()).kid);
    expect(keys.signingKey(clock.now()).kid).not.toBe(oldCur);
    expect(validateJwtSvid({ token: oldToken, audience: 'db', keys: importJwks(after.jwtAuthorities), now: clock.now() }).sub).toBe(caller.identity);
    expect(after.sequence).toBeGreaterThan(before.sequence!);
    await clock.advance(HOUR + 1);
    expect(keys.publishedKeys(clock.now()).map((k) => k.kid)).not.toContain(oldCur);
    source.stop();
    otherSource.stop();
  });
});
