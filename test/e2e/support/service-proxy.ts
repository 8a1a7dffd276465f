/**
 * A stand-in for a Kubernetes Service in front of several CA replicas: each new TCP connection goes to the next
 * backend in turn, and to the one after that when a backend refuses the connection (a dead pod's endpoint).
 * Established connections are piped as they are and die with their backend.
 */
import net from 'node:net';

export interface ServiceProxy {
  /** 127.0.0.1:<port> */
  readonly address: string;
  close(): Promise<void>;
}

export async function startServiceProxy(backendPorts: readonly number[]): Promise<ServiceProxy> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  let next = 0;
  const server = net.createServer((client) => {
    track(client);
    client.pause();
    client.on('error', () => undefined);
    const first = next++ % backendPorts.length;
    const tryBackend = (tried: number) => {
      if (tried === backendPorts.length || client.destroyed) return client.destroy();
      const upstream = net.connect(backendPorts[(first + tried) % backendPorts.length]!, '127.0.0.1');
      track(upstream);
      let connected = false;
      upstream.on('error', () => {
        if (connected) client.destroy();
        else tryBackend(tried + 1);
      });
      upstream.once('connect', () => {
        connected = true;
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
        client.pipe(upstream).pipe(client);
        client.resume();
      });
    };
    tryBackend(0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
