/**
 * Our own SDS client for protocol tests: plays Envoy over a real Unix socket with grpc-js, recording responses
 * in a queue so a test can await the next one, and counting what it sent and took from the queues so a test can
 * check against the server's log that nothing else was sent (expectNothingSent).
 */
import * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';
import { expect } from 'vitest';
import { sdsClientConstructor, sdsPackageDefinition } from '../../../../src/grpc/protos.js';
import { SECRET_TYPE_URL } from '../../../../src/agent/sds/xds-types.js';
import type { CapturedLogs } from '../../../support/log-capture.js';
import { waitFor } from '../../../support/wait.js';

export interface Any {
  type_url: string;
  value: Buffer;
}
export interface WireResponse {
  version_info: string;
  resources: Any[];
  type_url: string;
  nonce: string;
}
export interface WireDeltaResponse {
  system_version_info: string;
  resources: Array<{ name: string; version: string; resource: Any }>;
  type_url: string;
  removed_resources: string[];
  nonce: string;
}

/** Decodes an Any holding an Envoy Secret into name + PEM text (what tests compare). */
export function decodeSecret(any: Any): { name: string; chain?: string; key?: string; trustedCa?: string } {
  expect(any.type_url).toBe(SECRET_TYPE_URL);
  const type = sdsPackageDefinition()['envoy.extensions.transport_sockets.tls.v3.Secret'] as MessageTypeDefinition<unknown, unknown>;
  const msg = type.deserialize(any.value) as {
    name: string;
    tls_certificate?: { certificate_chain?: { inline_bytes?: Uint8Array }; private_key?: { inline_bytes?: Uint8Array } } | null;
    validation_context?: { trusted_ca?: { inline_bytes?: Uint8Array } } | null;
  };
  const text = (b?: Uint8Array) => (b && b.length ? Buffer.from(b).toString('utf8') : undefined);
  return {
    name: msg.name,
    chain: text(msg.tls_certificate?.certificate_chain?.inline_bytes),
    key: text(msg.tls_certificate?.private_key?.inline_bytes),
    trustedCa: text(msg.validation_context?.trusted_ca?.inline_bytes),
  };
}

/** Requests written and responses taken by a test, over all of a client's streams. */
export interface Traffic {
  requests: number;
  taken: number;
}

export class Queue<T> {
  private items: T[] = [];
  private waiters: Array<(v: T) => void> = [];
  constructor(private readonly traffic: Traffic = { requests: 0, taken: 0 }) {}
  push(v: T): void {
    const w = this.waiters.shift();
    if (w) w(v);
    else this.items.push(v);
  }
  get length(): number {
    return this.items.length;
  }
  next(timeoutMs = 5000): Promise<T> {
    const v = this.items.shift();
    if (v !== undefined) {
      this.traffic.taken++;
      return Promise.resolve(v);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no message within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (x: T) => {
        clearTimeout(timer);
        this.traffic.taken++;
        resolve(x);
      };
      this.waiters.push(waiter);
    });
  }
}

/**
 * Asserts the server sent nothing the test has not taken: once the server has logged handling every request sent
 * (`requestMsg`; it logs each in one step with the answer it causes), its count of responses (`responseMsg`
 * lines) must equal the responses taken. A change made in the store is handled at once, so it needs no wait.
 */
export async function expectNothingSent(traffic: Traffic, logs: CapturedLogs, messages: { request: string; response: string }): Promise<void> {
  await waitFor(`the server to handle ${traffic.requests} requests`, () => logs.matching(messages.request).length >= traffic.requests, { intervalMs: 5 });
  expect(logs.matching(messages.response).length, 'responses sent').toBe(traffic.taken);
}

export interface StatusEvent {
  code: number;
  details: string;
}

export class SdsTestClient {
  /** Over all of this client's streams (see expectNothingSent). */
  readonly traffic: Traffic = { requests: 0, taken: 0 };
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  constructor(socketPath: string) {
    const Ctor = sdsClientConstructor();
    this.client = new Ctor(`unix:${socketPath}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'sds-grpc' }) as never;
  }

  stream(): SotwStream {
    return new SotwStream(this.client.StreamSecrets!() as grpc.ClientDuplexStream<unknown, WireResponse>, this.traffic);
  }

  delta(): DeltaStream {
    return new DeltaStream(this.client.DeltaSecrets!() as grpc.ClientDuplexStream<unknown, WireDeltaResponse>, this.traffic);
  }

  fetch(names: string[], typeUrl = SECRET_TYPE_URL): Promise<WireResponse> {
    return new Promise((resolve, reject) => {
      (this.client.FetchSecrets as (req: unknown, cb: (err: grpc.ServiceError | null, res: WireResponse) => void) => void)(
        { node: { id: 'test', cluster: 'test' }, resource_names: names, type_url: typeUrl },
        (err, res) => (err ? reject(err) : resolve(res)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

abstract class BaseStream<Res> {
  readonly responses: Queue<Res>;
  readonly status: Promise<StatusEvent>;
  constructor(protected readonly call: grpc.ClientDuplexStream<unknown, Res>, protected readonly traffic: Traffic) {
    this.responses = new Queue<Res>(traffic);
    call.on('data', (r: Res) => this.responses.push(r));
    this.status = new Promise((resolve) => {
      call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
    });
    call.on('error', () => undefined);
  }
  protected write(req: object): void {
    this.traffic.requests++;
    this.call.write(req);
  }
  cancel(): void {
    this.call.cancel();
  }
  halfClose(): void {
    this.call.end();
  }
}

export class SotwStream extends BaseStream<WireResponse> {
  send(req: { resource_names?: string[]; version_info?: string; response_nonce?: string; error_detail?: { code: number; message: string }; type_url?: string }): void {
    this.write({ node: { id: 'sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local', cluster: 'demo' }, type_url: SECRET_TYPE_URL, version_info: '', response_nonce: '', ...req });
  }
  /** Behaves as Envoy: ACK a response. */
  ack(res: WireResponse, names: string[]): void {
    this.send({ resource_names: names, version_info: res.version_info, response_nonce: res.nonce });
  }
  nack(res: WireResponse, names: string[], keptVersion: string, message = 'Failed to load private key from <inline>, Cause: KEY_VALUES_MISMATCH'): void {
    this.send({ resource_names: names, version_info: keptVersion, response_nonce: res.nonce, error_detail: { code: 13, message } });
  }
}

export class DeltaStream extends BaseStream<WireDeltaResponse> {
  send(req: { resource_names_subscribe?: string[]; resource_names_unsubscribe?: string[]; initial_resource_versions?: Record<string, string>; response_nonce?: string; error_detail?: { code: number; message: string } }): void {
    this.write({ node: { id: 'sidecar', cluster: 'demo' }, type_url: SECRET_TYPE_URL, ...req });
  }
  ack(res: WireDeltaResponse): void {
    this.send({ response_nonce: res.nonce });
  }
  nack(res: WireDeltaResponse, message = 'rejected'): void {
    this.send({ response_nonce: res.nonce, error_detail: { code: 13, message } });
  }
}
