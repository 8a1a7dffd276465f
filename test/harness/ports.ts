/**
 * Free loopback ports for the real components the tests start (etcd, kube-apiserver, Envoy, our servers).
 * The kernel picks an unused port for a listener on port 0; we close it and hand the number out. Another
 * process could take it in between, so callers that bind a port they got here should expect a rare
 * EADDRINUSE and retry with a fresh one (the control plane does).
 */
import net from 'node:net';

/** One free TCP port on `host` (default 127.0.0.1). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [port] = await freePorts(1, host);
  return port!;
}

/**
 * `count` distinct free TCP ports on `host`. All listeners stay open until every port is known, so the
 * numbers never repeat within one call.
 */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port: 0, exclusive: true }, () => resolve());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
