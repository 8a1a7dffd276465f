/**
 * The two ends of a long-lived stream, free of any transport. A discovery service (src/agent: SDS, ECDS) opens a
 * StreamHandle per stream and writes to a ResponseSink; its adapter (src/grpc) implements the sink and feeds the
 * handle. Both sides import these shapes from here so that neither imports the other (docs/development.md).
 */
import type { CitadelError } from './errors.js';

/** Where a stream's responses go (implemented by the adapter). */
export interface ResponseSink<T> {
  send(message: T): void;
  /** Ends the stream with status OK. */
  end(): void;
  /** Ends the stream with the error's status and safe message. */
  fail(err: CitadelError): void;
}

/** What the adapter calls for one open stream. */
export interface StreamHandle<Req> {
  onRequest(req: Req): void;
  /** The client went away (half-close, cancel or transport error). Idempotent. */
  onClose(): void;
}

/** Opens one stream of a service: responses go to `sink`; `peer` names the client for logs. */
export type OpenStream<Req, Res> = (sink: ResponseSink<Res>, peer: string) => StreamHandle<Req>;
