/**
 * The example's Envoy bootstraps (deploy/examples/mtls/envoy/*.yaml): the real Envoy accepts each one as written
 * for the cluster and as rewritten for a local run, the rewrite touches only what the files' headers list, and the
 * SPIFFE IDs in them encode the seed's policy (frontend -> backend -> datastore, never frontend -> datastore).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTools } from '../harness/index.js';
import { bootstrapPath, localBootstrap } from '../../scripts/mtls-example.js';

const WORKLOADS = { 'photo-frontend': 'photo', 'photo-backend': 'photo', datastore: 'datastore' } as const;
const id = (name: keyof typeof WORKLOADS) => `spiffe://cluster.local/ns/${WORKLOADS[name]}/sa/${name}`;
const PEERS = {
  'photo-backend.photo.svc.cluster.local': '127.31.0.12',
  'datastore.datastore.svc.cluster.local': '127.31.0.11',
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-bootstrap-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function validate(file: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(loadTools().envoy, ['--mode', 'validate', '-c', file, '--disable-hot-restart', '-l', 'warn'], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` });
    });
  });
}

/** The exact SAN matchers in the inbound listener (allowed callers) and in each upstream cluster (expected server). */
function policy(text: string): { inbound: string[]; upstreams: Record<string, string[]> } {
  const exact = (chunk: string) => [...chunk.matchAll(/matcher: \{ exact: "([^"]+)" \}/g)].map((m) => m[1]!);
  const [clusters, listeners = ''] = text.split(/^ {2}listeners:$/m);
  const upstreams: Record<string, string[]> = {};
  for (const block of clusters!.split(/^ {2}- name: /m).slice(1)) {
    const name = block.split('\n')[0]!.trim();
    if (block.includes('UpstreamTlsContext')) upstreams[name] = exact(block);
  }
  const inbound = listeners.split(/^ {2}- name: /m).find((b) => b.startsWith('inbound')) ?? '';
  return { inbound: exact(inbound), upstreams };
}

describe.each(Object.keys(WORKLOADS) as Array<keyof typeof WORKLOADS>)('envoy/%s.yaml', (name) => {
  const text = fs.readFileSync(bootstrapPath(name), 'utf8');

  it('is accepted by the real Envoy as written for the cluster', async () => {
    const res = await validate(bootstrapPath(name));
    expect(res.out).toMatch(/OK/);
    expect(res.code).toBe(0);
  });

  it('is accepted after the local rewrite, which changes only addresses and the socket path', async () => {
    const local = localBootstrap(text, { self: '127.31.0.99', peers: PEERS, sdsSocket: '/tmp/cp-x/socket' });
    const file = path.join(tmp, `${name}.yaml`);
    fs.writeFileSync(file, local);
    const res = await validate(file);
    expect(res.code, res.out).toBe(0);
    const ports = (s: string) => [...s.matchAll(/port_value: (\d+)/g)].map((m) => m[1]);
    expect(ports(local)).toEqual(ports(text));
    const before = text.split('\n');
    const changed = local.split('\n').filter((line, i) => line !== before[i]);
    for (const line of changed) expect(line).toMatch(/127\.31\.0\.\d+|\/tmp\/cp-x\/socket/);
  });

});

describe('the local rewrite', () => {
  it('refuses to leave an in-cluster peer address in place', () => {
    const frontend = fs.readFileSync(bootstrapPath('photo-frontend'), 'utf8');
    expect(() => localBootstrap(frontend, { self: '127.31.0.99', peers: {}, sdsSocket: '/s' })).toThrow(/photo-backend\.photo\.svc\.cluster\.local/);
    const datastore = fs.readFileSync(bootstrapPath('datastore'), 'utf8');
    expect(localBootstrap(datastore, { self: '127.31.0.99', peers: {}, sdsSocket: '/s' })).toMatch(/address: 127\.31\.0\.99, port_value: 15006/);
  });
});

describe('the policy in the bootstraps', () => {
  const p = Object.fromEntries(Object.keys(WORKLOADS).map((n) => [n, policy(fs.readFileSync(bootstrapPath(n), 'utf8'))]));

  it('datastore accepts only photo-backend; photo-backend accepts only photo-frontend; photo-frontend takes no mesh traffic', () => {
    expect(p.datastore!.inbound).toEqual([id('photo-backend')]);
    expect(p['photo-backend']!.inbound).toEqual([id('photo-frontend')]);
    expect(p['photo-frontend']!.inbound).toEqual([]);
  });

  it('every client checks the server it dials (secure naming)', () => {
    expect(p['photo-frontend']!.upstreams).toEqual({ 'photo-backend': [id('photo-backend')], datastore: [id('datastore')] });
    expect(p['photo-backend']!.upstreams).toEqual({ datastore: [id('datastore')] });
    expect(p.datastore!.upstreams).toEqual({});
  });

  it('asks for every secret over one byte-identical SDS config (one anchor per file)', () => {
    for (const n of Object.keys(WORKLOADS)) {
      const text = fs.readFileSync(bootstrapPath(n), 'utf8');
      expect(text.match(/sds_config: &sds$/gm)).toHaveLength(1);
      expect(text.match(/sds_config: \*sds$/gm)!.length).toBeGreaterThanOrEqual(1);
      expect(text).toMatch(/initial_fetch_timeout: 0s/);
    }
  });
});
