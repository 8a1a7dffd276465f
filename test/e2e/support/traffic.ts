/**
 * Live traffic for fault tests: a new connection (so a new mTLS handshake through the client's Envoy) every
 * `intervalMs`, plus one long-lived connection pinged every `pingIntervalMs`. Every request must come back with
 * the app's answer; anything else is a failure, recorded with when it happened and why.
 */
import { connectLines, requestOnce, type LineClient } from './agent-env.js';

export interface TrafficReport {
  /** Requests on new connections. */
  readonly requests: number;
  /** Pings on the long-lived connection. */
  readonly pings: number;
  /** `<ISO time> <what>: <why>` for each failed request or ping. */
  readonly failures: readonly string[];
}

export interface Traffic {
  /** Counts so far. */
  report(): TrafficReport;
  /** Stops both loops and returns the final counts. */
  stop(): Promise<TrafficReport>;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts both loops against an Envoy outbound listener on `port` whose app answers `x` with `<appName>:x`. */
export async function startTraffic(opts: { port: number; appName: string; intervalMs?: number; pingIntervalMs?: number; timeoutMs?: number }): Promise<Traffic> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  let requests = 0;
  let pings = 0;
  const failures: string[] = [];
  const fail = (what: string, why: string) => failures.push(`${new Date().toISOString()} ${what}: ${why}`);
  let stopped = false;

  const fresh = (async () => {
    while (!stopped) {
      const line = `r${requests++}`;
      try {
        const answer = await requestOnce(opts.port, line, timeoutMs);
        if (answer !== `${opts.appName}:${line}`) fail(line, `answer ${answer}`);
      } catch (err) {
        fail(line, (err as Error).message);
      }
      await pause(opts.intervalMs ?? 50);
    }
  })();

  let long: LineClient = await connectLines(opts.port, timeoutMs);
  const pinged = (async () => {
    while (!stopped) {
      const line = `p${pings++}`;
      try {
        const answer = await long.ask(line, timeoutMs);
        if (answer !== `${opts.appName}:${line}`) fail(line, `answer ${answer}`);
      } catch (err) {
        fail(line, `long-lived connection: ${(err as Error).message}`);
        long.close();
        long = await connectLines(opts.port, timeoutMs).catch(() => long);
      }
      await pause(opts.pingIntervalMs ?? 500);
    }
  })();

  const report = () => ({ requests, pings, failures: [...failures] });
  return {
    report,
    async stop() {
      stopped = true;
      await Promise.all([fresh, pinged]);
      long.close();
      return report();
    },
  };
}
