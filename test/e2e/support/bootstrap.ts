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
  /**
   * Inbound: 127.0.0.1:<port>, mTLS required, the client's SPIFFE ID must be one of `allowedClientIds` (or, with
   * `allowedClientPrefix`, start with it); forwards to 127.0.0.1:<appPort>. With `authz`, an HTTP listener whose
   * RBAC filters (DENY, then ALLOW) come from the agent over ECDS, named for `authz.workloadPort` when given.
   */
  inbound?: { port: number; appPort: number; allowedClientIds: readonly string[]; allowedClientPrefix?: string; authz?: { workloadPort?: number } };
  /** Outbounds: plain TCP on 127.0.0.1:<port>, mTLS to 127.0.0.1:<upstreamPort>, whose SPIFFE ID must be `serverId`. */
  outbounds?: ReadonlyArray<{ port: number; upstreamPort: number; serverId: string }>;
  /** SDS reconnect backoff (default 0.2 s .. 2 s, so agent restarts heal quickly in tests). */
  sdsRetry?: { baseSeconds: number; maxSeconds: number };
}

const TLS_SOCKET = 'envoy.transport_sockets.tls';
const HTTP_RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
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
  const validation = (ids: readonly string[], prefix?: string) => ({
    default_validation_context: { match_typed_subject_alt_names: prefix ? [{ san_type: 'URI', matcher: { prefix } }] : exactUris(ids) },
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

  // The RBAC filters as docs/authorization.md describes them: ECDS on the SDS socket, Envoy waits for the first
  // config (initial_fetch_timeout 0s), and deny-all defaults should a first delivery fail.
  const authzFilter = (action: 'deny' | 'allow', port: number | undefined) => ({
    name: `citadel-authz-${action}${port ? `-${port}` : ''}`,
    config_discovery: {
      config_source: sdsConfig,
      type_urls: [HTTP_RBAC],
      default_config: action === 'allow'
        ? { '@type': HTTP_RBAC, rules_stat_prefix: 'allow_', rules: { action: 'ALLOW', policies: {} } }
        : { '@type': HTTP_RBAC, rules_stat_prefix: 'deny_', rules: { action: 'DENY', policies: { 'deny-all': { permissions: [{ any: true }], principals: [{ any: true }] } } } },
    },
  });
  const authzHttp = (port: number | undefined) => ({
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
      stat_prefix: 'inbound',
      normalize_path: true,
      merge_slashes: true,
      forward_client_cert_details: 'SANITIZE_SET',
      set_current_client_cert_details: { uri: true },
      route_config: { name: 'inbound', virtual_hosts: [{ name: 'app', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'local-app' } }] }] },
      http_filters: [
        authzFilter('deny', port),
        authzFilter('allow', port),
        { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
      ],
    },
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
            common_tls_context: { tls_certificate_sds_secret_configs: certificateSds, combined_validation_context: validation(opts.inbound.allowedClientIds, opts.inbound.allowedClientPrefix) },
          },
        },
        filters: [opts.inbound.authz ? authzHttp(opts.inbound.authz.workloadPort) : tcpProxy('inbound', 'local-app')],
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
