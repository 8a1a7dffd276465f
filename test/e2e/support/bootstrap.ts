/**
 * Envoy bootstraps for the agent e2e tests: a sidecar whose certificate (`default`) and trust bundle (`ROOTCA`)
 * come from the agent over SDS on a Unix socket, with an inbound mTLS listener in front of a local app and an
 * outbound plain listener that originates mTLS to a peer. Shaped after the minimal bootstrap in
 * shared/reference/envoy-sds.md section 3, as a JSON object (so there are no YAML anchors: the sds_config is one
 * object serialised identically everywhere, which keeps Envoy's per-ConfigSource dedup of SDS providers stable).
 */

export interface SidecarBootstrapOptions {
  /** node.id (SDS needs node.id and node.cluster). */
  nodeId: string;
  nodeCluster?: string;
  /** The agent's SDS socket (absolute, or relative to Envoy's cwd); at most 107 bytes. */
  sdsSocketPath: string;
  /** Inbound: 127.0.0.1:<port>, mTLS required, the client's SPIFFE ID must be one of `allowedClientIds`; forwards to 127.0.0.1:<appPort>. */
  inbound?: { port: number; appPort: number; allowedClientIds: readonly string[] };
  /** Outbounds: plain TCP on 127.0.0.1:<port>, mTLS to 127.0.0.1:<upstreamPort>, whose SPIFFE ID must be `serverId`. */
  outbounds?: ReadonlyArray<{ port: number; upstreamPort: number; serverId: string }>;
  /** SDS reconnect backoff (default 0.2 s .. 2 s, so agent restarts heal quickly in tests). */
  sdsRetry?: { baseSeconds: number; maxSeconds: number };
}

const TLS_SOCKET = 'envoy.transport_sockets.tls';
const exactUris = (ids: readonly string[]) => ids.map((id) => ({ san_type: 'URI', matcher: { exact: id } }));
const seconds = (s: number) => `${s}s`;

/** Builds the bootstrap object (pass it to the harness's startEnvoy). */
export function sidecarBootstrap(opts: SidecarBootstrapOptions): object {
  const retry = opts.sdsRetry ?? { baseSeconds: 0.2, maxSeconds: 2 };
  const sdsConfig = {
    resource_api_version: 'V3',
    initial_fetch_timeout: '0s', // Istio's choice for workload certificates: wait for the agent
    api_config_source: {
      api_type: 'GRPC',
      transport_api_version: 'V3',
      grpc_services: [{
        envoy_grpc: {
          cluster_name: 'sds-grpc',
          retry_policy: { retry_back_off: { base_interval: seconds(retry.baseSeconds), max_interval: seconds(retry.maxSeconds) } },
        },
      }],
    },
  };
  const certificateSds = [{ name: 'default', sds_config: sdsConfig }];
  const validation = (ids: readonly string[]) => ({
    default_validation_context: { match_typed_subject_alt_names: exactUris(ids) },
    validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: sdsConfig },
  });

  const clusters: object[] = [{
    name: 'sds-grpc',
    type: 'STATIC',
    connect_timeout: '1s',
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        explicit_http_config: { http2_protocol_options: {} },
      },
    },
    load_assignment: { cluster_name: 'sds-grpc', endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: opts.sdsSocketPath } } } }] }] },
  }];
  const listeners: object[] = [];
  const staticCluster = (name: string, port: number) => ({
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }] },
  });
  const tcpProxy = (statPrefix: string, cluster: string) => ({
    name: 'envoy.filters.network.tcp_proxy',
    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: statPrefix, cluster },
  });

  if (opts.inbound) {
    clusters.push(staticCluster('local-app', opts.inbound.appPort));
    listeners.push({
      name: 'inbound',
      address: { socket_address: { address: '127.0.0.1', port_value: opts.inbound.port } },
      filter_chains: [{
        transport_socket: {
          name: TLS_SOCKET,
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
            require_client_certificate: true,
            // Every new handshake must show the current certificate (rotation tests).
            disable_stateless_session_resumption: true,
            disable_stateful_session_resumption: true,
            common_tls_context: { tls_certificate_sds_secret_configs: certificateSds, combined_validation_context: validation(opts.inbound.allowedClientIds) },
          },
        },
        filters: [tcpProxy('inbound', 'local-app')],
      }],
    });
  }
  (opts.outbounds ?? []).forEach((out, i) => {
    const cluster = `outbound-${i}`;
    clusters.push({
      ...staticCluster(cluster, out.upstreamPort),
      transport_socket: {
        name: TLS_SOCKET,
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
          max_session_keys: 0,
          common_tls_context: { tls_certificate_sds_secret_configs: certificateSds, combined_validation_context: validation([out.serverId]) },
        },
      },
    });
    listeners.push({
      name: cluster,
      address: { socket_address: { address: '127.0.0.1', port_value: out.port } },
      filter_chains: [{ filters: [tcpProxy(cluster, cluster)] }],
    });
  });
  return {
    node: { id: opts.nodeId, cluster: opts.nodeCluster ?? 'citadel-e2e' },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: { clusters, listeners },
  };
}
