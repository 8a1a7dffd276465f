/**
 * A "pod" for the agent e2e tests: a pod root dir, `citadel agent` running in it, and a real Envoy whose
 * secrets come from that agent over SDS, with the inbound/outbound listeners of support/bootstrap.ts.
 */
import path from 'node:path';
import { freePorts, startEnvoy, startPod, type EnvoyCerts, type EnvoyProcess, type SimulatedPod, type TestCluster } from '../../harness/index.js';
import { startAgent, startLineApp, type LineApp, type RunningAgent } from './agent-env.js';
import { sidecarBootstrap } from './bootstrap.js';

export interface SidecarOptions {
  name: string;
  /** The pod root (agent cwd); the SDS socket is <root>/var/run/secrets/workload-spiffe-uds/socket. */
  root: string;
  logDir: string;
  agentArgs?: readonly string[];
  agentEnv?: NodeJS.ProcessEnv;
  /** Run the agent image's bundle (dist/bundle/agent.mjs) rather than dist/src. */
  bundled?: boolean;
  /** Inbound mTLS listener in front of 127.0.0.1:<appPort>, accepting only these client SPIFFE IDs. */
  inbound?: { appPort: number; allowedClientIds: readonly string[]; allowedClientPrefix?: string; authz?: { workloadPort?: number } };
  /** Outbound listeners originating mTLS to `upstreamPort`, expecting `serverId` (Envoy cluster `outbound-<i>`). */
  outbounds?: ReadonlyArray<{ upstreamPort: number; serverId: string }>;
}

export interface Sidecar {
  readonly name: string;
  readonly root: string;
  readonly sdsSocketPath: string;
  agent: RunningAgent;
  envoy: EnvoyProcess;
  readonly inboundPort: number;
  /** Ports of the outbound listeners, in the order of `outbounds`. */
  readonly outboundPorts: readonly number[];
  /** Restarts the agent with the same flags (Envoy keeps running). */
  restartAgent(): Promise<void>;
  /** Restarts Envoy with the same bootstrap (the agent keeps running). */
  restartEnvoy(): Promise<void>;
  stop(): Promise<void>;
}

export const SDS_SOCKET = 'var/run/secrets/workload-spiffe-uds/socket';

/** The serials of the certificates Envoy uses for its TLS contexts (cert_chain leaf), deduplicated. */
export function leafSerials(certs: EnvoyCerts): string[] {
  return [...new Set(certs.certificates.flatMap((c) => (c.cert_chain?.[0]?.serial_number ? [c.cert_chain[0].serial_number] : [])))];
}

/** The serials of every CA certificate Envoy trusts, deduplicated. */
export function caSerials(certs: EnvoyCerts): string[] {
  return [...new Set(certs.certificates.flatMap((c) => (c.ca_cert ?? []).map((d) => d.serial_number ?? '')))].filter(Boolean);
}

/** Starts agent + Envoy; waits until the agent is ready and Envoy is LIVE. */
export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  const [inboundPort, ...outboundPorts] = await freePorts(1 + (opts.outbounds?.length ?? 0));
  const sdsSocketPath = path.join(opts.root, SDS_SOCKET);
  if (Buffer.byteLength(sdsSocketPath) > 107) throw new Error(`SDS socket path too long for sun_path: ${sdsSocketPath}`);
  const bootstrap = sidecarBootstrap({
    nodeId: opts.name,
    sdsSocketPath,
    ...(opts.inbound ? { inbound: { port: inboundPort!, ...opts.inbound } } : {}),
    outbounds: (opts.outbounds ?? []).map((o, i) => ({ port: outboundPorts[i]!, ...o })),
  });
  const launchAgent = () => startAgent({ name: opts.name, cwd: opts.root, args: opts.agentArgs ?? [], env: opts.agentEnv, logDir: opts.logDir, bundled: opts.bundled });
  const launchEnvoy = () => startEnvoy({ bootstrap, name: opts.name, cwd: opts.root, logLevel: 'info', componentLogLevel: 'secret:debug,config:debug,rbac:debug' });
  const agent = await launchAgent();
  let envoy: EnvoyProcess | undefined;
  try {
    await agent.waitReady();
    envoy = await launchEnvoy();
    await envoy.waitReady();
  } catch (err) {
    await envoy?.stop();
    await agent.stop();
    throw new Error(`${(err as Error).message}\n--- agent log ---\n${agent.proc.tail(40)}`);
  }
  const sidecar: Sidecar = {
    name: opts.name,
    root: opts.root,
    sdsSocketPath,
    agent,
    envoy,
    inboundPort: inboundPort!,
    outboundPorts,
    async restartAgent() {
      await sidecar.agent.stop();
      sidecar.agent = await launchAgent();
      await sidecar.agent.waitReady();
    },
    async restartEnvoy() {
      await sidecar.envoy.stop();
      sidecar.envoy = await launchEnvoy();
      await sidecar.envoy.waitReady();
    },
    async stop() {
      await sidecar.envoy.stop();
      await sidecar.agent.stop();
    },
  };
  return sidecar;
}

export interface MtlsPair {
  readonly client: Sidecar;
  readonly server: Sidecar;
  /** The client Envoy's outbound port to the server; the app behind the server answers `x` with `server-app:x`. */
  readonly port: number;
  readonly pods: readonly SimulatedPod[];
  stop(): Promise<void>;
}

/**
 * Two simulated pods in `namespace` (ServiceAccounts `client` and `server`) whose root-cert.pem comes from the
 * namespace's istio-ca-root-cert ConfigMap (the CA's controllers must write it), each with agent + Envoy: the
 * client's outbound listener reaches a line app behind the server's inbound listener over mTLS, each side
 * checking the other's SPIFFE ID.
 */
export async function startMtlsPair(opts: { cluster: TestCluster; namespace: string; logDir: string; agentArgs: readonly string[]; rootCertLagMs?: number }): Promise<MtlsPair> {
  const pods: SimulatedPod[] = [];
  const started: Array<{ stop(): Promise<void> }> = [];
  let app: LineApp | undefined;
  const stop = async () => {
    for (const s of started.reverse()) await s.stop();
    await app?.close();
    for (const p of pods) await p.delete().catch(() => undefined);
  };
  try {
    for (const serviceAccount of ['client', 'server']) {
      const pod = await startPod(opts.cluster, { namespace: opts.namespace, serviceAccount, ...(opts.rootCertLagMs ? { rootCertLagMs: opts.rootCertLagMs } : {}) });
      pods.push(pod);
      await pod.waitForRootCert({ timeoutMs: 60_000 });
    }
    app = await startLineApp('server-app');
    const id = (sa: string) => `spiffe://cluster.local/ns/${opts.namespace}/sa/${sa}`;
    const server = await startSidecar({ name: 'server', root: pods[1]!.root, logDir: opts.logDir, agentArgs: opts.agentArgs, inbound: { appPort: app.port, allowedClientIds: [id('client')] } });
    started.push(server);
    const client = await startSidecar({ name: 'client', root: pods[0]!.root, logDir: opts.logDir, agentArgs: opts.agentArgs, outbounds: [{ upstreamPort: server.inboundPort, serverId: id('server') }] });
    started.push(client);
    return { client, server, port: client.outboundPorts[0]!, pods, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
