//! Bootstrap options: who the proxy is, where its control plane is, its
//! well-known ports and its protective limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The ADS form the proxy speaks (`--xds-protocol sotw|delta`).
pub use meshwork_xds::client::Protocol as XdsProtocol;

/// Protective limits against bad or abusive peers.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request header bytes (Envoy default 60 KiB); more gets 431.
    pub max_header_bytes: usize,
    /// Request header count (Envoy default 100); more gets 431.
    pub max_headers: usize,
    /// Time to receive a request's headers (slowloris); a partial head gets 408.
    pub request_header_timeout: Duration,
    /// Close a connection with no traffic for this long.
    pub idle_timeout: Duration,
    /// Accepted connections open at once, across listeners; more are refused.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams the client resets before their response starts: once
    /// this many, and half the streams it opened lately, the connection is
    /// closed (the CVE-2023-44487 "rapid reset" guard; Envoy's
    /// premature-reset rule).
    pub max_pending_accept_reset_streams: usize,
    /// Request body bytes; a larger body gets 413 (`None`: unlimited).
    pub max_request_body_bytes: Option<u64>,
    /// Time allowed for in-flight requests when draining.
    pub drain_period: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            request_header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 100_000,
            max_concurrent_streams: 1024,
            max_pending_accept_reset_streams: 100,
            max_request_body_bytes: None,
            drain_period: Duration::from_secs(5),
        }
    }
}

/// Who this proxy is (sent to the control plane as the xDS node).
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// xDS node id (Istio: `sidecar~IP~POD.NS~NS.svc.cluster.local`).
    pub node_id: String,
    /// Cluster id (Istio's `CLUSTER_ID`, e.g. `Kubernetes`).
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Workload name.
    pub workload: String,
    /// Pod labels (`app` and `version` feed metrics).
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Trust domain for principals.
    pub trust_domain: String,
}

/// Everything the proxy needs to start.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Identity.
    pub identity: Identity,
    /// Control plane ADS address (`host:port` or `http://host:port`).
    pub xds_address: String,
    /// Admin listener (loopback only): 127.0.0.1:15000.
    pub admin_address: SocketAddr,
    /// Health listener: 0.0.0.0:15021 (`/healthz/ready`).
    pub health_address: SocketAddr,
    /// Proxy metrics: 0.0.0.0:15090 (`/stats/prometheus`).
    pub stats_address: SocketAddr,
    /// Merged metrics: 0.0.0.0:15020 (`/stats/prometheus`).
    pub merged_stats_address: SocketAddr,
    /// Limits.
    pub limits: Limits,
    /// Write access logs to stdout.
    pub access_log: bool,
    /// The workload's certificate and trust bundle (SDS secrets `default`
    /// and `ROOTCA`), kept current by the identity client; `None` when the
    /// proxy runs without a CA (plaintext only).
    pub workload_certs: Option<meshwork_identity::IdentityWatch>,
    /// ADS form: delta (the default; with VHDS, announced to the control
    /// plane as node metadata `MESHWORK_VHDS: "true"`) or state of the world.
    pub xds_protocol: XdsProtocol,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            identity: Identity::default(),
            xds_address: "127.0.0.1:15010".into(),
            admin_address: ([127, 0, 0, 1], 15000).into(),
            health_address: ([0, 0, 0, 0], 15021).into(),
            stats_address: ([0, 0, 0, 0], 15090).into(),
            merged_stats_address: ([0, 0, 0, 0], 15020).into(),
            limits: Limits::default(),
            access_log: true,
            workload_certs: None,
            xds_protocol: XdsProtocol::Delta,
        }
    }
}
