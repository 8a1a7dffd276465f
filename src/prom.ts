/**
 * prom-client's metric classes, loaded file by file. Its index also loads the default process metrics (and through
 * them @opentelemetry/api), cluster aggregation, the Pushgateway client and Summary's t-digest, none of which
 * citadel uses: ~115 ms of CPU and ~17 MiB of RSS at every start of every sidecar. The classes are the same
 * objects the index exports (one CommonJS module cache), so a Registry from either works with both.
 */
import { createRequire } from 'node:module';
import type * as prom from 'prom-client';

const require = createRequire(import.meta.url);

export const Registry = require('prom-client/lib/registry') as typeof prom.Registry;
export const Counter = require('prom-client/lib/counter') as typeof prom.Counter;
export const Gauge = require('prom-client/lib/gauge') as typeof prom.Gauge;
export const Histogram = require('prom-client/lib/histogram') as typeof prom.Histogram;
export type Registry = prom.Registry;
export type Counter<T extends string = string> = prom.Counter<T>;
export type Gauge<T extends string = string> = prom.Gauge<T>;
export type Histogram<T extends string = string> = prom.Histogram<T>;
