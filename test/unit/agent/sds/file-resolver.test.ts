import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../../../src/clock.js';
import { silentLogger } from '../../../../src/log.js';
import { fileSecretResolver, parseFileResourceName } from '../../../../src/agent/sds/file-resolver.js';
import { SecretStore } from '../../../../src/agent/secret-store.js';
import { makeCa, type TestCa } from '../../grpc/tls-fixtures.js';
import { FakeClock } from '../../../support/fake-clock.js';
import { captureLogs, type CapturedLogs } from '../../../support/log-capture.js';
import { waitFor } from '../../../support/wait.js';

const LOAD_FAILED = 'cannot load secret files; keeping the last good content';

const ID = 'spiffe://cluster.local/ns/app/sa/web';

/** Resolves when `name` changes in the store (or rejects after `ms`). */
function nextChange(store: SecretStore, name: string, ms = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no change of ${name} within ${ms} ms`));
    }, ms);
    const off = store.subscribe((n) => {
      if (n !== name) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

describe('file-backed secrets', () => {
  let dir: string;
  let store: SecretStore;
  let logs: CapturedLogs;
  let ca: TestCa;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sds-f-'));
    logs = captureLogs('info');
    store = new SecretStore({ clock: systemClock, log: silentLogger, resolvers: [fileSecretResolver({ clock: systemClock, log: logs.log, debounceMs: 30, pollMs: 300 })] });
    ca ??= await makeCa();
  });
  afterEach(async () => {
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('parses resource names', () => {
    expect(parseFileResourceName('file-cert:/a/c.pem~/a/k.pem')).toEqual({ kind: 'cert', certPath: '/a/c.pem', keyPath: '/a/k.pem' });
    expect(parseFileResourceName('file-root:/a/r.pem')).toEqual({ kind: 'root', path: '/a/r.pem' });
    expect(parseFileResourceName('file-root:system')).toEqual({ kind: 'system-root' });
    expect(parseFileResourceName('file-cert:/a/c.pem')).toBeUndefined();
    expect(parseFileResourceName('file-cert:~/k')).toBeUndefined();
    expect(parseFileResourceName('file-root:')).toBeUndefined();
    expect(parseFileResourceName('default')).toBeUndefined();
  });

  it('follows a Kubernetes-style ..data symlink swap', async () => {
    // <dir>/mount/root-cert.pem -> ..data/root-cert.pem, ..data -> ..v1 (then ..v2), as the kubelet lays out volumes.
    const mount = join(dir, 'mount');
    await mkdir(join(mount, '..v1'), { recursive: true });
    await writeFile(join(mount, '..v1', 'root-cert.pem'), ca.pem);
    await symlink('..v1', join(mount, '..data'));
    await symlink(join('..data', 'root-cert.pem'), join(mount, 'root-cert.pem'));
    const name = `file-root:${join(mount, 'root-cert.pem')}`;
    const loaded = nextChange(store, name);
    store.acquire(name);
    await loaded;
    expect(store.get(name)!.resource.validation_context!.trusted_ca.inline_bytes.toString()).toBe(ca.pem.trim() + '\n');

    const other = await makeCa('other');
    await mkdir(join(mount, '..v2'));
    await writeFile(join(mount, '..v2', 'root-cert.pem'), ca.pem + other.pem);
    await symlink('..v2', join(mount, '..data_tmp'));
    const changed = nextChange(store, name);
    await rename(join(mount, '..data_tmp'), join(mount, '..data'));
    await changed;
    expect(store.get(name)!.resource.validation_context!.trusted_ca.inline_bytes.toString()).toContain(other.pem.trim());
  });

  it('picks up files whose directory appears later, and stops watching on release', async () => {
    const sub = join(dir, 'later');
    const cert = join(sub, 'cert.pem');
    const key = join(sub, 'key.pem');
    const name = `file-cert:${cert}~${key}`;
    // On a fake clock: the poll that finds the directory, and no poll after the release, are steps of the test.
    const clock = new FakeClock();
    const local = new SecretStore({ clock, log: silentLogger, resolvers: [fileSecretResolver({ clock, log: logs.log, debounceMs: 30, pollMs: 300 })] });
    local.acquire(name);
    await waitFor('the first load to fail', () => logs.matching(LOAD_FAILED, { resource: name }).length === 1);
    expect(local.get(name)).toBeUndefined();
    const leaf = await ca.issue({ spiffeId: ID });
    await mkdir(sub);
    const loaded = nextChange(local, name);
    await writeFile(key, leaf.keyPem);
    await writeFile(cert, leaf.certPem);
    await clock.advance(300);
    await loaded;
    expect(local.get(name)!.resource.tls_certificate!.certificate_chain.inline_bytes.toString()).toBe(leaf.certPem.trim() + '\n');

    local.release(name);
    expect(local.get(name)).toBeUndefined();
    expect(clock.pendingTimers).toBe(0);
    const seen: string[] = [];
    local.subscribe((n) => seen.push(n));
    const next = await ca.issue({ spiffeId: ID });
    await writeFile(key, next.keyPem);
    await writeFile(cert, next.certPem);
    await clock.advance(3000);
    expect(seen).toEqual([]);
    local.close();
  });

  it('keeps the last good pair while the cert and key files disagree', async () => {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    const a = await ca.issue({ spiffeId: ID });
    await writeFile(cert, a.certPem);
    await writeFile(key, a.keyPem);
    const name = `file-cert:${cert}~${key}`;
    const loaded = nextChange(store, name);
    store.acquire(name);
    await loaded;
    const good = store.get(name)!;
    const b = await ca.issue({ spiffeId: ID });
    await writeFile(cert, b.certPem); // key not yet replaced: mismatch
    await waitFor('the mismatched pair to be refused', () => logs.matching(LOAD_FAILED, { resource: name }).length === 1);
    expect(store.get(name)).toEqual(good);
    const fixed = nextChange(store, name);
    await writeFile(key, b.keyPem);
    await fixed;
    expect(store.get(name)!.resource.tls_certificate!.certificate_chain.inline_bytes.toString()).toBe(b.certPem.trim() + '\n');
  });

  it('serves the system bundle for file-root:system', () => {
    store.acquire('file-root:system');
    const entry = store.get('file-root:system');
    expect(entry?.resource.validation_context?.trusted_ca.inline_bytes.length).toBeGreaterThan(1000);
  });
});
