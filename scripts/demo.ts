/**
 * `npm run demo` (after `npm run build && npm run provision`): a local control plane, deploy/ applied to it, the
 * CA and the mTLS example's three workloads as local processes, four calls between them, and a report.
 * Keeps running until Ctrl-C; `--once` exits after the report (exit code 1 if a path misbehaved).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startControlPlane, type ControlPlane } from '../test/harness/cluster.js';
import { trackDir, untrackDir } from '../test/harness/reaper.js';
import { connectCluster } from '../test/harness/test-cluster.js';
import { loadTools } from '../test/harness/tools.js';
import { formatReport, startDemo, type RunningDemo } from './demo-run.js';

const USAGE = `Usage: npm run demo [-- --once]

Starts etcd + kube-apiserver, applies deploy/, runs citadel ca and the three-tier mTLS example
(photo-frontend -> photo-backend -> datastore) as local processes with real Envoys, and prints a report.
  --once   exit after the report (exit code 1 if a call did not go as the policy says)
`;

function progress(line: string): void {
  process.stderr.write(`[demo] ${line}\n`);
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const unknown = argv.filter((a) => a !== '--once');
  if (unknown.length) {
    process.stderr.write(`demo: unknown argument ${unknown[0]}\n\n${USAGE}`);
    return 2;
  }
  const once = argv.includes('--once');

  const tools = loadTools();
  progress(`tools: kube-apiserver ${tools.kubernetesVersion}, etcd ${tools.etcdVersion}, Envoy ${tools.envoyVersion}`);
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'citadel-demo-'));
  trackDir(workDir);

  let controlPlane: ControlPlane | undefined;
  let demo: RunningDemo | undefined;
  let shuttingDown: Promise<void> | undefined;
  const shutdown = () => (shuttingDown ??= (async () => {
    progress('stopping the workloads, the CA and the control plane');
    await demo?.stop();
    await controlPlane?.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
    untrackDir(workDir);
    progress('stopped; nothing left running');
  })());

  let interrupted = false;
  let running = false;
  const starting = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130); // a second Ctrl-C: the reaper still kills every child
    interrupted = true;
    progress(`${signal}: shutting down`);
    // While starting, the start-up path sees the abort, stops what it started and shuts down itself.
    if (running) void shutdown().then(() => process.exit(0));
    else starting.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    progress('starting the local control plane (etcd + kube-apiserver)');
    controlPlane = await startControlPlane({ tools, log: progress });
    if (starting.signal.aborted) throw new Error('interrupted');
    const cluster = connectCluster(controlPlane.info);
    demo = await startDemo({ cluster, workDir, log: progress, signal: starting.signal });
    running = true;
    progress('making the four calls');
    const report = await demo.report();
    process.stdout.write(formatReport(report));
    if (once) {
      await shutdown();
      return report.ok ? 0 : 1;
    }
    const lines = [
      'Running until Ctrl-C. Try:',
      ...demo.workloads.filter((w) => w.name === 'photo-frontend').flatMap((w) => [
        `  curl '${w.app}/call/photo-backend?path=/apis/photos'`,
        `  curl '${w.app}/call/photo-backend?method=POST&path=/apis/photos'   # 403 from photo-backend's RBAC`,
        `  curl ${w.app}/call/datastore`,
      ]),
      ...demo.workloads.filter((w) => w.name === 'photo-backend').map((w) => `  curl '${w.envoyAdmin}/stats?filter=rbac'`),
      ...demo.workloads.map((w) => `  curl ${w.envoyAdmin}/certs      # ${w.name}'s Envoy`),
      `  kubectl --kubeconfig ${controlPlane.info.kubeconfigPath} get configmap istio-ca-root-cert -A`,
      `  kubectl --kubeconfig ${controlPlane.info.kubeconfigPath} get authorizationpolicies -A   # edit one: the next request obeys it`,
      `Logs: ${path.join(workDir, 'logs')} (removed on exit)`,
      '',
    ];
    process.stdout.write(lines.join('\n'));
    // Child processes are unref'd, so keep the event loop alive ourselves until a signal arrives.
    setInterval(() => {}, 60_000);
    await new Promise(() => {});
    return 0;
  } catch (err) {
    if (!interrupted) progress(`failed: ${err instanceof Error ? err.message : String(err)}`);
    await shutdown();
    return interrupted ? 130 : 1;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
  process.stderr.write(`demo: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
