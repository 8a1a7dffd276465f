/**
 * A real logger (src/log.ts, pino) whose JSON lines are kept in memory, so a test can wait for what a component
 * says it did (e.g. the SDS server processing an ACK) instead of sleeping.
 */
import { createLogger, type Logger } from '../../src/log.js';

export interface CapturedLogs {
  readonly log: Logger;
  /** Every line so far, parsed. */
  lines(): Array<Record<string, unknown>>;
  /** Lines whose `msg` is `msg` and whose fields include `fields`. */
  matching(msg: string, fields?: Record<string, unknown>): Array<Record<string, unknown>>;
}

export function captureLogs(level: 'debug' | 'info' = 'debug'): CapturedLogs {
  const lines: Array<Record<string, unknown>> = [];
  // pino writes each line with one synchronous write() call.
  const destination = { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) } as unknown as NodeJS.WritableStream;
  return {
    log: createLogger({ level, destination }),
    lines: () => lines,
    matching: (msg, fields = {}) => lines.filter((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v)),
  };
}
