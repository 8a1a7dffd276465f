import { afterEach, describe, expect, it } from 'vitest';
import { createAgentMetrics } from '../../src/agent/metrics.js';
import { startStatusServer, type StatusServer } from '../../src/status-server.js';
import { silentLogger } from '../../src/log.js';
import { FakeClock } from '../support/fake-clock.js';

describe('status server', () => {
  let server: StatusServer | undefined;
  afterEach(async () => server?.close());

  it('answers /healthz, /readyz by the readiness reason, and /metrics with the agent metrics', async () => {
    const clock = new FakeClock(1_000_000);
    const metrics = createAgentMetrics({ clock });
    metrics.setCertExpiry('default', 1_000_000 + 90_000);
    metrics.outgoingRequests.inc({ request_type: 'csr' });
    let reason: string | undefined = 'no workload certificate (default) yet';
    server = await startStatusServer({ address: { kind: 'tcp', host: '127.0.0.1', port: 0 }, registry: metrics.registry, notReadyReason: () => reason, metricsPaths: ['/metrics', '/stats/prometheus'], log: silentLogger });
    const base = `http://127.0.0.1:${server.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const notReady = await fetch(`${base}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.text()).toContain('no workload certificate');
    reason = undefined;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    for (const p of ['/metrics', '/stats/prometheus']) {
      const text = await (await fetch(`${base}${p}`)).text();
      expect(text).toContain('istio_agent_cert_expiry_seconds{resource_name="default"} 90');
      expect(text).toContain('istio_agent_num_outgoing_requests{request_type="csr"} 1');
    }
    await clock.advance(100_000);
    expect(await (await fetch(`${base}/metrics`)).text()).toContain('istio_agent_cert_expiry_seconds{resource_name="default"} -10');
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect((await fetch(`${base}/healthz`, { method: 'POST' })).status).toBe(405);
  });
});
