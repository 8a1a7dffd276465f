/**
 * A real Envoy's StreamSecrets request (test/support/fixtures/envoy-sds-request.bin, written by
 * capture-envoy-sds-request.ts), and the same request as an ACK: protobuf messages concatenate (a scalar field
 * takes the last value), so the captured bytes followed by a version and a nonce are what Envoy sends when it ACKs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the captured bytes live (in the source tree, also when this runs from dist/). */
export const ENVOY_SDS_REQUEST_FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)).replace(/\/dist\/test\//, '/test/'), 'fixtures', 'envoy-sds-request.bin');

/** The captured request. */
export function envoySdsRequest(): Buffer {
  return fs.readFileSync(ENVOY_SDS_REQUEST_FIXTURE);
}

function stringField(field: number, value: string): Buffer {
  const bytes = Buffer.from(value);
  if (bytes.length > 127) throw new Error('short strings only');
  return Buffer.concat([Buffer.from([(field << 3) | 2, bytes.length]), bytes]);
}

/** Envoy's ACK of a response: the captured request (Node and all) with version_info (1) and response_nonce (5). */
export function envoySdsAck(request: Buffer, version: string, nonce: string): Buffer {
  return Buffer.concat([request, stringField(1, version), stringField(5, nonce)]);
}
