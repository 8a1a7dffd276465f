/**
 * `citadel agent`: the start of the workload agent. The SDS socket is listened on before anything else loads, then
 * agent-run.ts (the composition root: secret sources, the agent's socket, status server, shutdown) takes over.
 *
 * Relative paths (Istio's `./var/run/secrets/...` defaults) resolve against the working directory, so several
 * agents can run side by side, each in its own pod root.
 */
import { agentFlags, checkAgentConfig } from '../config/agent.js';
import { listenUnixSocket } from '../grpc/unix-listener.js';
import { defineCommand } from './command.js';

export const agentCommand = defineCommand({
  name: 'agent',
  usage: 'citadel agent [flags]',
  summary: 'Workload agent: key + CSR to the CA, Envoy SDS (default, ROOTCA, file-cert:, file-root:) and ECDS (RBAC from AuthorizationPolicies) over a Unix socket, rotation.',
  flags: agentFlags,
  async run(config, io) {
    checkAgentConfig(config);
    // The SDS socket first, with nothing but node:net loaded: Envoy starting beside the agent connects at once
    // instead of backing off, and its requests wait in the socket until the servers in agent-run.ts are up.
    const sdsListener = await listenUnixSocket(config.sdsSocket);
    try {
      const { runAgent } = await import('./agent-run.js');
      return await runAgent(config, io, sdsListener);
    } finally {
      await sdsListener.close();
    }
  },
});
