/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`) of `citadel ca` under load: where the CPU time went,
 * by category (crypto, DER/PEM building, proto, gRPC/HTTP2, TLS, TokenReview, logging, metrics, GC, idle)
 * and by hottest function (self time, file:function).
 *
 * A sample is charged to the innermost frame that says something: a native or builtin frame without a
 * script (e.g. OpenSSL's sign behind node:crypto) is charged to the category of its nearest caller that
 * has one, except for names that are known crypto or GC entry points.
 */
import fs from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  parent?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  /** Sampled time, ms (busy + idle). */
  readonly totalMs: number;
  /** Time not idle, ms. */
  readonly busyMs: number;
  /** Category -> ms, sorted descending. */
  readonly categories: { category: string; ms: number; share: number }[];
  /** Hottest functions by self time (share of busy time). */
  readonly hotFunctions: { where: string; category: string; ms: number; share: number }[];
}

const CRYPTO_NATIVE = /^(signOneShot|verifyOneShot|createPublicKey|createPrivateKey|Sign|Verify|digest|update|randomBytes|randomFillSync|Hash|KeyObjectHandle|init|exportKey|getAsymmetricKeyDetails|X509Certificate|publicKey|checkPrime|generateKeyPair.*)$/;

const GENERIC = new Set(['other node internals', 'streams/sockets (node)', 'event loop/timers (node)', 'HTTP/1 (node)', 'other JS', 'other']);

/** Categorises one script URL (or a native frame, url ''); undefined means "look at the caller". */
function categoryOf(frame: CallFrame): string | undefined {
  const { url, functionName } = frame;
  if (functionName === '(garbage collector)') return 'GC';
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(program)') return 'V8/native (unattributed)';
  if (functionName === '(root)') return undefined;
  if (!url) return CRYPTO_NATIVE.test(functionName) ? 'crypto (OpenSSL via node:crypto)' : undefined;
  if (url.includes('node:internal/crypto') || url === 'node:crypto') return 'crypto (OpenSSL via node:crypto)';
  if (/\/src\/pki\/(der|x509|oids)\.js/.test(url)) return 'DER/ASN.1 building (src/pki)';
  if (/\/src\/pki\/pem\.js/.test(url)) return 'PEM (src/pki)';
  if (/\/src\/pki\//.test(url)) return 'PKI logic (src/pki)';
  if (/protobufjs|@protobufjs|proto-loader/.test(url)) return 'proto (de)serialisation';
  if (/@grpc\/grpc-js/.test(url)) return 'gRPC (grpc-js)';
  if (/node:internal\/http2|node:http2/.test(url)) return 'HTTP/2 (node)';
  if (/node:_tls|node:tls|node:internal\/tls/.test(url)) return 'TLS (node)';
  if (/@kubernetes\/client-node|node-fetch|\/src\/kube\//.test(url)) return 'TokenReview / kube client';
  if (/node:_http|node:http|node:https|node:internal\/http/.test(url)) return 'HTTP/1 (node)';
  if (/pino|sonic-boom|thread-stream/.test(url)) return 'logging (pino)';
  if (/prom-client/.test(url)) return 'metrics (prom-client)';
  if (/\/src\/ca\//.test(url)) return 'CA service logic (src/ca)';
  if (/\/src\/grpc\//.test(url)) return 'gRPC glue (src/grpc)';
  if (/node:internal\/(streams|stream_base_commons)|node:stream|node:net|node:internal\/net/.test(url)) return 'streams/sockets (node)';
  if (/node:internal\/(timers|process\/task_queues|async_hooks)|node:events|node:internal\/event_target/.test(url)) return 'event loop/timers (node)';
  if (url.startsWith('node:')) return 'other node internals';
  return 'other JS';
}

/** Where a frame is, as file:function:line with dist/ paths mapped back to the TypeScript source name. */
function whereOf(frame: CallFrame): string {
  const fn = frame.functionName || '(anonymous)';
  if (!frame.url) return `[native] ${fn}`;
  const m = /\/dist\/(src\/.+)\.js$/.exec(frame.url);
  const file = m ? `${m[1]}.ts` : frame.url.replace(/^file:\/\/.*\/node_modules\//, '');
  return `${file}:${fn}:${frame.lineNumber + 1}${m ? ' (js line)' : ''}`;
}

/**
 * Reads and summarises one .cpuprofile file. With `windowFunction`, only the samples between the first and
 * the last one whose stack contains a function of that name count (steady state under load: start-up and
 * shutdown left out). Throws if the file is not a V8 CPU profile.
 */
export function summariseCpuProfile(file: string, topN = 15, windowFunction?: string): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  if (!Array.isArray(profile.nodes) || !Array.isArray(profile.samples)) throw new Error(`${file} is not a V8 CPU profile`);
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) {
    const child = byId.get(c);
    if (child) child.parent = n.id;
  }
  const categoryCache = new Map<number, string>();
  const categoryForNode = (id: number): string => {
    const cached = categoryCache.get(id);
    if (cached) return cached;
    // The innermost specific category wins; generic ones (node internals, streams, the event loop) only when
    // no caller says more, so e.g. pino's fs.writeSync counts as logging, not as node internals.
    let cur: ProfileNode | undefined = byId.get(id);
    let generic: string | undefined;
    let specific: string | undefined;
    while (cur && !specific) {
      const cat = categoryOf(cur.callFrame);
      if (cat && GENERIC.has(cat)) generic ??= cat;
      else if (cat) specific = cat;
      cur = cur.parent !== undefined ? byId.get(cur.parent) : undefined;
    }
    const result = specific ?? generic ?? 'other';
    categoryCache.set(id, result);
    return result;
  };
  let first = 0;
  let last = profile.samples.length - 1;
  if (windowFunction) {
    const inWindow = new Map<number, boolean>();
    const hasFunction = (id: number): boolean => {
      const known = inWindow.get(id);
      if (known !== undefined) return known;
      const node = byId.get(id);
      const result = !!node && (node.callFrame.functionName === windowFunction || (node.parent !== undefined && hasFunction(node.parent)));
      inWindow.set(id, result);
      return result;
    };
    first = profile.samples.findIndex((id) => hasFunction(id));
    for (last = profile.samples.length - 1; last > first && !hasFunction(profile.samples[last]!); last--);
    if (first < 0) throw new Error(`${file}: no sample inside ${windowFunction}`);
  }
  const catMs = new Map<string, number>();
  const selfMs = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    if (i < first || i > last) return;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    total += ms;
    const cat = categoryForNode(id);
    catMs.set(cat, (catMs.get(cat) ?? 0) + ms);
    selfMs.set(id, (selfMs.get(id) ?? 0) + ms);
  });
  const busy = total - (catMs.get('idle') ?? 0);
  const categories = [...catMs.entries()]
    .filter(([c]) => c !== 'idle')
    .map(([category, ms]) => ({ category, ms, share: busy > 0 ? ms / busy : 0 }))
    .sort((a, b) => b.ms - a.ms);
  const perWhere = new Map<string, { where: string; category: string; ms: number }>();
  for (const [id, ms] of selfMs) {
    const node = byId.get(id)!;
    const cat = categoryForNode(id);
    if (cat === 'idle') continue;
    const where = whereOf(node.callFrame);
    const entry = perWhere.get(where) ?? { where, category: cat, ms: 0 };
    entry.ms += ms;
    perWhere.set(where, entry);
  }
  const hotFunctions = [...perWhere.values()]
    .sort((a, b) => b.ms - a.ms)
    .slice(0, topN)
    .map((e) => ({ ...e, share: busy > 0 ? e.ms / busy : 0 }));
  return { totalMs: total, busyMs: busy, categories, hotFunctions };
}
