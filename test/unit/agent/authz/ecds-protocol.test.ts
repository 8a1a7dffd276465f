/**
 * The agent's ECDS over a real Unix socket with grpc-js playing Envoy: the RBAC config Envoy gets (decoded from
 * the wire, so a field protobufjs does not know would show up as lost), waiting until the files exist, pushes on
 * file changes, no answer to an ACK, and no resend of a config Envoy rejected.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { watchAuthzFiles, type AuthzFiles } from '../../../../src/agent/authz/config-source.js';
import { createEcdsService, TYPED_EXTENSION_CONFIG_TYPE_URL, type EcdsService } from '../../../../src/agent/authz/ecds-service.js';
import { compileNamespace } from '../../../../src/authz/compile.js';
import { systemClock } from '../../../../src/clock.js';
import { ecdsClientConstructor, ecdsPackageDefinition } from '../../../../src/grpc/protos.js';
import { startAgentSocket, type AgentSocket } from '../../../../src/cli/agent-socket.js';
import { SecretStore } from '../../../../src/agent/secret-store.js';
import { silentLogger } from '../../../../src/log.js';
import { expectNothingSent, Queue, type Traffic } from '../sds/sds-client.js';
import { captureLogs, type CapturedLogs } from '../../../support/log-capture.js';
import { waitFor } from '../../../support/wait.js';
import { writeFileAtomic } from '../../../harness/kubelet.js';

interface Any { type_url: string; value: Buffer }
interface Wire { version_info: string; resources: Any[]; type_url: string; nonce: string }

const decode = (name: string, buf: Buffer) => (ecdsPackageDefinition()[name] as MessageTypeDefinition<unknown, unknown>).deserialize(buf) as Record<string, unknown>;
const policyDoc = (methods: string[]) => JSON.stringify(compileNamespace({
  namespace: 'ns', trustDomain: 'cluster.local',
  policies: [{ metadata: { name: 'p', namespace: 'ns' }, spec: { selector: { matchLabels: { app: 'api' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/ns/sa/fe', '*'] } }], to: [{ operation: { methods, notPaths: ['/x*'], ports: ['8080'] } }] }] } }],
}).document);

let dir: string;
let files: AuthzFiles;
let service: EcdsService;
let server: AgentSocket;
let logs: CapturedLogs;
let traffic: Traffic;
/** The server has handled every request sent so far and sent nothing the test has not taken. */
const nothingSent = () => expectNothingSent(traffic, logs, { request: 'ECDS request', response: 'pushing authorization config' });
/** Waits for the file watcher to have read a file change (`msg`, e.g. "loaded pod labels") `times` times in all. */
const fileRead = (msg: string, times: number) => waitFor(`"${msg}" ×${times}`, () => logs.matching(msg).length >= times);
let client: grpc.Client & Record<string, (...a: unknown[]) => unknown>;
const policyFile = () => path.join(dir, 'authz', 'authz.json');
const labelsFile = () => path.join(dir, 'pod', 'labels');

function open(names: string[]) {
  const call = client.StreamExtensionConfigs!() as grpc.ClientDuplexStream<unknown, Wire>;
  const responses = new Queue<Wire>(traffic);
  call.on('data', (r: Wire) => responses.push(r));
  call.on('error', () => undefined);
  const send = (req: object) => {
    traffic.requests++;
    call.write({ node: { id: 'envoy' }, type_url: TYPED_EXTENSION_CONFIG_TYPE_URL, resource_names: names, ...req });
  };
  send({});
  return { responses, send };
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ecds-'));
  fs.mkdirSync(path.dirname(policyFile()), { recursive: true });
  fs.mkdirSync(path.dirname(labelsFile()), { recursive: true });
  logs = captureLogs();
  traffic = { requests: 0, taken: 0 };
  files = watchAuthzFiles({ policyFile: policyFile(), labelsFile: labelsFile(), clock: systemClock, log: logs.log, pollMs: 100 });
  await files.start();
  service = createEcdsService({ source: files, log: logs.log });
  server = await startAgentSocket({
    socketPath: path.join(dir, 'socket'), store: new SecretStore({ clock: systemClock, log: silentLogger }), log: silentLogger,
    ecds: { service, log: silentLogger },
  });
  const Ctor = ecdsClientConstructor();
  client = new Ctor(`unix:${server.socketPath}`, grpc.credentials.createInsecure()) as never;
});

afterEach(async () => {
  client.close();
  service.close();
  files.stop();
  await server.stop(100);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('ECDS on the SDS socket', () => {
  it('waits for both files, then serves the workload RBAC config, which decodes field for field', async () => {
    const stream = open(['citadel-authz-allow-8080']);
    await nothingSent();
    writeFileAtomic(policyFile(), policyDoc(['GET']));
    await fileRead('loaded authorization policy', 1);
    await nothingSent(); // labels still missing
    writeFileAtomic(labelsFile(), 'app="api"\n');
    const res = await stream.responses.next();
    expect(res.type_url).toBe(TYPED_EXTENSION_CONFIG_TYPE_URL);
    expect(res.resources).toHaveLength(1);
    expect(res.resources[0]!.type_url).toBe(TYPED_EXTENSION_CONFIG_TYPE_URL);
    const tec = decode('envoy.config.core.v3.TypedExtensionConfig', res.resources[0]!.value) as { name: string; typed_config: Any };
    expect(tec.name).toBe('citadel-authz-allow-8080');
    expect(tec.typed_config.type_url).toBe('type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC');
    const rbac = decode('envoy.extensions.filters.http.rbac.v3.RBAC', tec.typed_config.value) as { rules_stat_prefix: string; rules: { action: string; policies: Record<string, unknown> } };
    expect(rbac.rules_stat_prefix).toBe('allow_');
    expect(rbac.rules.action).toBe('ALLOW');
    const policy = JSON.stringify(rbac.rules.policies['ns[ns]-policy[p]-rule[0]']);
    for (const part of ['"exact":"spiffe://cluster.local/ns/ns/sa/fe"', '"regex":".+"', '"prefix":"/x"', '"name":":method"', '"exact":"GET"', '"not_rule"', '"any":true']) {
      expect(policy).toContain(part);
    }
  });

  it('pushes on a policy change, never answers an ACK, and never resends a config Envoy rejected', async () => {
    writeFileAtomic(labelsFile(), 'app="api"\n');
    writeFileAtomic(policyFile(), policyDoc(['GET']));
    await files.start();
    const stream = open(['citadel-authz-allow', 'citadel-authz-deny']);
    const first = await stream.responses.next();
    expect(first.resources).toHaveLength(2);
    stream.send({ version_info: first.version_info, response_nonce: first.nonce });
    await nothingSent();
    writeFileAtomic(policyFile(), policyDoc(['POST']));
    const second = await stream.responses.next();
    expect(second.version_info).not.toBe(first.version_info);
    stream.send({ version_info: first.version_info, response_nonce: second.nonce, error_detail: { code: 13, message: 'rejected' } });
    await nothingSent();
    // The labels change but the workload's configs do not: still nothing to send.
    writeFileAtomic(labelsFile(), 'app="api"\nextra="1"\n');
    await fileRead('loaded pod labels', 2);
    await nothingSent();
    writeFileAtomic(policyFile(), policyDoc(['PUT']));
    expect((await stream.responses.next()).version_info).not.toBe(second.version_info);
  });

  it('keeps the last good config when the file turns bad; ends a stream that asks for a foreign type', async () => {
    writeFileAtomic(labelsFile(), 'app="api"\n');
    writeFileAtomic(policyFile(), policyDoc(['GET']));
    await files.start();
    const stream = open(['citadel-authz-allow']);
    const first = await stream.responses.next();
    stream.send({ version_info: first.version_info, response_nonce: first.nonce });
    writeFileAtomic(policyFile(), '{not json');
    await fileRead('authorization policy file is not valid; keeping the last good one', 1);
    await nothingSent();
    expect(files.get('citadel-authz-allow')?.version).toBe(first.version_info);
    const foreign = client.StreamExtensionConfigs!() as grpc.ClientDuplexStream<unknown, Wire>;
    const status = new Promise<number>((resolve) => foreign.on('status', (s: grpc.StatusObject) => resolve(s.code)));
    foreign.on('error', () => undefined);
    foreign.write({ type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret', resource_names: ['default'] });
    expect(await status).toBe(grpc.status.INVALID_ARGUMENT);
  });
});
