/**
 * pino JSON logs, one child logger per component. Redaction is a backstop: code never passes keys or tokens
 * to a logger in the first place.
 */
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import { CitadelError } from './errors.js';

export type { Logger };

export function createLogger(opts: { level?: LevelWithSilent; name?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      name: opts.name,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: serializeError },
      redact: {
        paths: ['token', '*.token', 'authorization', '*.authorization', 'privateKey', '*.privateKey', 'key', '*.keyPem', 'keyPem'],
        censor: '[redacted]',
      },
    },
    opts.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/**
 * The `err` field: always an Error in code, an object in the log. A CitadelError is an expected failure with a
 * code and a detail, so no stack; anything else may be a bug, so pino's standard form with the stack. The first
 * line of the message only: API errors carry whole response bodies.
 */
export function serializeError(err: unknown): Record<string, unknown> {
  if (err instanceof CitadelError) return { type: 'CitadelError', code: err.code, message: err.message, ...(err.detail ? { detail: err.detail } : {}) };
  if (err instanceof Error) return { ...pino.stdSerializers.err(err), message: err.message.split('\n')[0] };
  return { message: String(err) };
}

/** A logger that drops everything; for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
