// The pod-certificates example's application, in one of two modes:
//
//  - With CREDENTIAL_BUNDLE set (plain-app, no sidecar): it does mTLS itself with what the kubelet projects:
//    CREDENTIAL_BUNDLE (podCertificate: the key, then the certificate chain, one file) and TRUST_BUNDLE
//    (clusterTrustBundle: citadel's roots). It serves HTTPS on LISTEN, requires a client certificate chaining to
//    TRUST_BUNDLE whose SPIFFE ID is in ALLOWED_PEERS, and calls peers over mTLS, checking the peer's SPIFFE ID
//    instead of a host name. Both files are read again when they change (the kubelet refreshes them).
//    /call/ and /healthz are served on CONTROL_LISTEN (plain HTTP, loopback: kubectl port-forward reaches it).
//  - Without it (mesh-app): plain HTTP on LISTEN; its Envoy sidecar does mTLS and tells it the caller (XFCC).
//
//   GET /            -> {"workload": APP_NAME, "caller": <the peer's verified SPIFFE ID, or null>}
//   GET /call/<peer> -> calls UPSTREAMS[<peer>] and reports the result
//   GET /healthz     -> 200
//
// Environment: APP_NAME, LISTEN (host:port), CONTROL_LISTEN (default 127.0.0.1:8080), UPSTREAMS
// ("mesh-app=https://host:15006"), PEER_IDS ("mesh-app=spiffe://..."; the SPIFFE ID each upstream must present),
// ALLOWED_PEERS (comma-separated SPIFFE IDs).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const name = process.env.APP_NAME ?? 'app';
const hostPort = (v) => v.split(/:(?=\d+$)/);
const [host, port] = hostPort(process.env.LISTEN ?? '127.0.0.1:8080');
const pairs = (v) => Object.fromEntries((v ?? '').split(',').filter(Boolean).map((p) => p.split('=', 2).map((s) => s.trim())));
const upstreams = pairs(process.env.UPSTREAMS);
const peerIds = pairs(process.env.PEER_IDS);
const allowedPeers = new Set((process.env.ALLOWED_PEERS ?? '').split(',').map((s) => s.trim()).filter(Boolean));
const bundlePath = process.env.CREDENTIAL_BUNDLE;
const trustPath = process.env.TRUST_BUNDLE;

// The credential bundle: the first PEM block is the private key, the rest is the chain (leaf first).
function credentials() {
  const text = fs.readFileSync(bundlePath, 'utf8');
  const blocks = text.match(/-----BEGIN ([A-Z ]+)-----[\s\S]*?-----END \1-----\n?/g) ?? [];
  return { key: blocks[0], cert: blocks.slice(1).join(''), ca: fs.readFileSync(trustPath, 'utf8') };
}

const spiffeIdOf = (cert) => /URI:(spiffe:\/\/[^,\s]+)/.exec(cert?.subjectaltname ?? '')?.[1] ?? null;

function callerOf(req) {
  if (bundlePath) return spiffeIdOf(req.socket.getPeerCertificate());
  const xfcc = req.headers['x-forwarded-client-cert'];
  const match = typeof xfcc === 'string' ? /URI=([^;,]+)/.exec(xfcc) : null;
  return match ? match[1] : null;
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
}

function get(url, peer) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const tls = target.protocol === 'https:'
      ? {
          ...credentials(),
          // Secure naming: the peer must present the expected SPIFFE ID (there is no DNS name in an SVID).
          checkServerIdentity: (_host, cert) => (spiffeIdOf(cert) === peerIds[peer] ? undefined : new Error(`peer presented ${spiffeIdOf(cert)}, expected ${peerIds[peer]}`)),
        }
      : {};
    const req = (target.protocol === 'https:' ? https : http).get(url, { ...tls, timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function call(peer) {
  const url = upstreams[peer];
  if (!url) return { status: 404, body: { workload: name, peer, ok: false, error: `no upstream named ${peer}` } };
  try {
    const { status, text } = await get(url, peer);
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text.trim();
    }
    const ok = status === 200;
    return { status: ok ? 200 : 502, body: { workload: name, peer, ok, status, response: body } };
  } catch (err) {
    return { status: 502, body: { workload: name, peer, ok: false, error: String(err.cause ?? err.message) } };
  }
}

function handle(req, res) {
  const path = new URL(req.url ?? '/', 'http://app').pathname;
  if (path === '/healthz') return reply(res, 200, { ok: true });
  if (path.startsWith('/call/')) {
    call(decodeURIComponent(path.slice('/call/'.length))).then(({ status, body }) => reply(res, status, body));
    return;
  }
  reply(res, 200, { workload: name, caller: callerOf(req) });
}

let server;
if (bundlePath) {
  // The mTLS port answers only "who is calling", and only to allowed peers.
  server = https.createServer({ ...credentials(), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (req, res) => {
    const caller = callerOf(req);
    if (!allowedPeers.has(caller)) return reply(res, 403, { workload: name, error: `caller ${caller} is not allowed` });
    reply(res, 200, { workload: name, caller });
  });
  // The kubelet replaces the files atomically before the certificate expires; new handshakes use the new ones.
  const reload = () => {
    try {
      server.setSecureContext({ ...credentials(), minVersion: 'TLSv1.2' });
    } catch (err) {
      console.error(`keeping the old certificate: ${err.message}`);
    }
  };
  fs.watchFile(bundlePath, { interval: 2000 }, reload);
  fs.watchFile(trustPath, { interval: 2000 }, reload);
  const [controlHost, controlPort] = hostPort(process.env.CONTROL_LISTEN ?? '127.0.0.1:8080');
  http.createServer(handle).listen(Number(controlPort), controlHost);
} else {
  server = http.createServer(handle);
}
server.listen(Number(port), host, () => console.log(`${name} listening on ${host}:${port}${bundlePath ? ' (mTLS with the projected pod certificate)' : ''}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
