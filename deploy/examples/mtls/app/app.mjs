// The example's "application": a tiny HTTP server with no TLS code at all. Its Envoy sidecar does mTLS.
// Runs unchanged in the cluster (mounted from a ConfigMap into node:20-bookworm-slim) and in `npm run demo`.
//
//   GET /            -> {"workload": APP_NAME, "caller": <SPIFFE ID Envoy verified, or null>}
//   GET /call/<peer>[?method=POST&path=/apis/photos]
//                    -> sends that request (default GET /) to UPSTREAMS[<peer>] (its local Envoy's outbound port)
//                       and reports the result
//   GET /healthz     -> 200
//
// Environment: APP_NAME, LISTEN (host:port, default 127.0.0.1:8080),
// UPSTREAMS ("photo-backend=http://127.0.0.1:15101,datastore=http://127.0.0.1:15102").
import http from 'node:http';

const name = process.env.APP_NAME ?? 'app';
const [host, port] = (process.env.LISTEN ?? '127.0.0.1:8080').split(/:(?=\d+$)/);
const upstreams = Object.fromEntries(
  (process.env.UPSTREAMS ?? '')
    .split(',')
    .filter(Boolean)
    .map((pair) => pair.split('=', 2).map((s) => s.trim())),
);

// Envoy's inbound listener replaces x-forwarded-client-cert with the verified peer certificate's URI SAN.
function callerOf(req) {
  const xfcc = req.headers['x-forwarded-client-cert'];
  const match = typeof xfcc === 'string' ? /URI=([^;,]+)/.exec(xfcc) : null;
  return match ? match[1] : null;
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
}

async function call(peer, method, path) {
  const url = upstreams[peer];
  if (!url) return { status: 404, body: { workload: name, peer, ok: false, error: `no upstream named ${peer}` } };
  try {
    const res = await fetch(new URL(path, url), { method, signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text.trim();
    }
    // Envoy answers 503 with the transport failure reason when the mTLS handshake fails, and the peer's Envoy
    // 403 "RBAC: access denied" when its authorization policy refuses the request.
    return { status: res.ok ? 200 : 502, body: { workload: name, peer, ok: res.ok, status: res.status, response: body } };
  } catch (err) {
    return { status: 502, body: { workload: name, peer, ok: false, error: String(err.cause ?? err.message) } };
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://app');
  const path = url.pathname;
  if (path === '/healthz') return reply(res, 200, { ok: true });
  if (path.startsWith('/call/')) {
    const peer = decodeURIComponent(path.slice('/call/'.length));
    call(peer, url.searchParams.get('method') ?? 'GET', url.searchParams.get('path') ?? '/').then(({ status, body }) => reply(res, status, body));
    return;
  }
  reply(res, 200, { workload: name, caller: callerOf(req), method: req.method, path });
});

server.listen(Number(port), host, () => console.log(`${name} listening on ${host}:${port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
