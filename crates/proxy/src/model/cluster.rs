//! Clusters (CDS) and their endpoints (EDS or inline `load_assignment`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, HealthStatus, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::google::protobuf::value::Kind;

use super::cluster_policy::ClusterPolicy;
use super::{CompileError, duration, optional_duration};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// How a cluster finds its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Endpoints listed in the cluster itself.
    Static,
    /// Endpoints from EDS under this service name.
    Eds(String),
    /// The connection's original destination.
    OriginalDst,
    /// Resolve the hostnames of the inline endpoints.
    Dns,
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbKind {
    /// Round robin (weighted).
    RoundRobin,
    /// Least active requests among `choices` random picks.
    LeastRequest {
        /// How many random endpoints to compare (power of two choices: 2).
        choices: u32,
    },
    /// Uniformly random.
    Random,
    /// Consistent hashing on a ring of virtual nodes (Envoy's RING_HASH).
    RingHash {
        /// Least entries on the ring (Envoy default 1024).
        min_size: u64,
        /// Most entries on the ring (Envoy default 8M).
        max_size: u64,
    },
    /// Consistent hashing with a Maglev table (Envoy's MAGLEV).
    Maglev {
        /// Table size (Envoy default 65537).
        table_size: u64,
    },
}

/// Which HTTP version to speak upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge).
    Http2,
    /// Whatever the downstream spoke.
    UseDownstream,
}

/// A compiled cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterModel {
    /// Its name, e.g. `outbound|8080|v1|order.default.svc.cluster.local`.
    pub name: String,
    /// Endpoint discovery.
    pub discovery: Discovery,
    /// Load balancing.
    pub lb: LbKind,
    /// TCP connect timeout (Envoy default 5 s).
    pub connect_timeout: Duration,
    /// Upstream HTTP version.
    pub protocol: UpstreamProtocol,
    /// Close pooled connections idle this long (Envoy default 1 h).
    pub idle_timeout: Duration,
    /// Endpoints given inline (static and DNS clusters).
    pub inline_endpoints: Vec<EndpointModel>,
    /// Circuit breakers, outlier detection and the other protections.
    pub policy: ClusterPolicy,
    /// Plaintext or TLS per endpoint (`transport_socket`, `transport_socket_matches`).
    pub transport: crate::tls::spec::TransportModel,
}

/// One endpoint of a cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointModel {
    /// Address to connect to (unresolved `host:port` for DNS clusters lives in `hostname`).
    pub address: SocketAddr,
    /// Hostname, for DNS clusters.
    pub hostname: Option<(String, u16)>,
    /// Relative weight (default 1).
    pub weight: u32,
    /// Whether the platform says it may take traffic.
    pub healthy: bool,
    /// Istio workload metadata: (workload, namespace, app, version, cluster).
    pub workload: Option<WorkloadMeta>,
    /// `region/zone/sub_zone` of its locality (empty when unknown).
    pub locality: String,
    /// Weight of its locality (for locality-weighted balancing).
    pub locality_weight: u32,
    /// EDS priority: 0 is preferred, higher ones take traffic when the
    /// lower ones are not healthy enough.
    pub priority: u32,
    /// Its `envoy.transport_socket_match` metadata (Istio: `tlsMode: istio`
    /// on endpoints with a sidecar), which picks its transport socket.
    pub transport_match: BTreeMap<String, String>,
}

/// What Istio's `istio.workload` endpoint metadata says about the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadMeta {
    /// Workload name.
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// Canonical service (app label).
    pub app: String,
    /// Canonical revision (version label).
    pub version: String,
    /// Cluster id.
    pub cluster: String,
}

impl ClusterModel {
    /// Compiles a CDS `Cluster`. The deprecated `http2_protocol_options` is
    /// still what many control planes send, so it is honoured.
    #[allow(deprecated)]
    pub fn compile(c: &Cluster) -> Result<Self, CompileError> {
        if c.name.is_empty() {
            return Err("cluster without a name".into());
        }
        let kind = match &c.cluster_discovery_type {
            None => DiscoveryType::Static,
            Some(ClusterDiscoveryType::Type(t)) => {
                DiscoveryType::try_from(*t).map_err(|_| format!("unknown cluster type {t}"))?
            }
            Some(ClusterDiscoveryType::ClusterType(t)) => {
                return Err(format!("custom cluster type {:?} is not supported", t.name));
            }
        };
        let discovery = match kind {
            DiscoveryType::Static => Discovery::Static,
            DiscoveryType::Eds => Discovery::Eds(
                c.eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| c.name.clone()),
            ),
            DiscoveryType::OriginalDst => Discovery::OriginalDst,
            DiscoveryType::StrictDns | DiscoveryType::LogicalDns => Discovery::Dns,
        };
        let lb = match LbPolicy::try_from(c.lb_policy) {
            Ok(LbPolicy::RoundRobin) => LbKind::RoundRobin,
            Ok(LbPolicy::LeastRequest) => LbKind::LeastRequest { choices: 2 },
            Ok(LbPolicy::Random) => LbKind::Random,
            Ok(LbPolicy::RingHash) => {
                let cfg = match &c.lb_config {
                    Some(LbConfig::RingHashLbConfig(r)) => Some(r),
                    _ => None,
                };
                let min_size = cfg
                    .and_then(|r| r.minimum_ring_size.as_ref())
                    .map_or(1024, |v| v.value);
                let max_size = cfg
                    .and_then(|r| r.maximum_ring_size.as_ref())
                    .map_or(8 << 20, |v| v.value);
                if min_size == 0 || min_size > max_size || max_size > 8 << 20 {
                    return Err(format!(
                        "ring size {min_size}..{max_size} out of range (1..8388608)"
                    ));
                }
                LbKind::RingHash { min_size, max_size }
            }
            Ok(LbPolicy::Maglev) => {
                let table_size = match &c.lb_config {
                    Some(LbConfig::MaglevLbConfig(m)) => m.table_size.as_ref().map(|v| v.value),
                    _ => None,
                }
                .unwrap_or(65537);
                if !(1..=5_000_011).contains(&table_size) || !is_prime(table_size) {
                    return Err(format!(
                        "maglev table size {table_size} must be a prime up to 5000011"
                    ));
                }
                LbKind::Maglev { table_size }
            }
            // ORIGINAL_DST clusters use CLUSTER_PROVIDED; the policy is moot there.
            Ok(LbPolicy::ClusterProvided) if discovery == Discovery::OriginalDst => LbKind::Random,
            Ok(other) => {
                return Err(format!(
                    "load balancing policy {other:?} is not supported yet"
                ));
            }
            Err(_) => return Err(format!("unknown lb_policy {}", c.lb_policy)),
        };
        let inline_endpoints = match &c.load_assignment {
            Some(la) if discovery != Discovery::OriginalDst => {
                compile_assignment(la, discovery == Discovery::Dns)?
            }
            _ => Vec::new(),
        };
        if matches!(discovery, Discovery::Static | Discovery::Dns) && inline_endpoints.is_empty() {
            // An empty static cluster is legal (Istio's BlackHoleCluster).
        }
        let mut protocol = if c.http2_protocol_options.is_some() {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        };
        let mut idle_timeout = Duration::from_secs(3600);
        let mut policy = ClusterPolicy::compile(c)?;
        if let Some(opts) = c
            .typed_extension_protocol_options
            .get(HTTP_PROTOCOL_OPTIONS)
        {
            let opts: HttpProtocolOptions = meshwork_xds::unpack(opts)?;
            protocol = match &opts.upstream_protocol_options {
                Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                    Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
                    other => return Err(format!("unsupported upstream protocol {other:?}")),
                },
                Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                    UpstreamProtocol::UseDownstream
                }
                Some(UpstreamProtocolOptions::AutoConfig(_)) => UpstreamProtocol::UseDownstream,
                None => protocol,
            };
            if let Some(t) = opts
                .common_http_protocol_options
                .as_ref()
                .and_then(|o| o.idle_timeout.as_ref())
            {
                idle_timeout = optional_duration(Some(t))?.unwrap_or(Duration::from_secs(3600));
            }
            if let Some(n) = opts
                .common_http_protocol_options
                .as_ref()
                .and_then(|o| o.max_requests_per_connection.as_ref())
                .filter(|n| n.value > 0)
            {
                policy.max_requests_per_connection = Some(n.value);
            }
        }
        Ok(ClusterModel {
            name: c.name.clone(),
            discovery,
            lb,
            connect_timeout: match &c.connect_timeout {
                Some(t) => duration(t)?,
                None => Duration::from_secs(5),
            },
            protocol,
            idle_timeout,
            inline_endpoints,
            policy,
            transport: crate::tls::spec::TransportModel::compile(c)?,
        })
    }
}

/// Compiles a `ClusterLoadAssignment` (from EDS or inline).
pub fn compile_assignment(
    la: &ClusterLoadAssignment,
    allow_hostnames: bool,
) -> Result<Vec<EndpointModel>, CompileError> {
    let mut out = Vec::new();
    for locality in &la.endpoints {
        let name = locality
            .locality
            .as_ref()
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .unwrap_or_default();
        let name = if name == "//" { String::new() } else { name };
        let locality_weight = locality
            .load_balancing_weight
            .as_ref()
            .map_or(1, |w| w.value);
        if locality.priority > 128 {
            return Err(format!("priority {} out of range", locality.priority));
        }
        for lb in &locality.lb_endpoints {
            let endpoint = match &lb.host_identifier {
                Some(HostIdentifier::Endpoint(e)) => e,
                Some(HostIdentifier::EndpointName(n)) => {
                    return Err(format!("named endpoint {n:?} is not supported"));
                }
                None => return Err("endpoint without an address".into()),
            };
            let (host, port) = socket_parts(endpoint.address.as_ref())?;
            let (address, hostname) = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => (SocketAddr::new(ip, port), None),
                Err(_) if allow_hostnames => (
                    SocketAddr::from(([0, 0, 0, 0], port)),
                    Some((host.to_string(), port)),
                ),
                Err(_) => return Err(format!("endpoint address {host:?} is not an IP")),
            };
            let health = HealthStatus::try_from(lb.health_status).unwrap_or(HealthStatus::Unknown);
            out.push(EndpointModel {
                address,
                hostname,
                weight: lb
                    .load_balancing_weight
                    .as_ref()
                    .map(|w| w.value)
                    .unwrap_or(1)
                    .max(1),
                healthy: matches!(
                    health,
                    HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded
                ),
                workload: lb.metadata.as_ref().and_then(workload_meta),
                locality: name.clone(),
                locality_weight,
                priority: locality.priority,
                transport_match: lb
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                    .map(crate::tls::spec::struct_strings)
                    .unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Whether `n` is prime (Envoy requires a prime Maglev table size).
fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Reads Istio's `filter_metadata["istio"]["workload"]`, a string
/// `name;namespace;app;version;cluster`.
fn workload_meta(m: &Metadata) -> Option<WorkloadMeta> {
    let fields = &m.filter_metadata.get("istio")?.fields;
    let Some(Kind::StringValue(s)) = fields.get("workload")?.kind.as_ref() else {
        return None;
    };
    let mut parts = s.split(';').map(str::to_string);
    Some(WorkloadMeta {
        workload: parts.next().unwrap_or_default(),
        namespace: parts.next().unwrap_or_default(),
        app: parts.next().unwrap_or_default(),
        version: parts.next().unwrap_or_default(),
        cluster: parts.next().unwrap_or_default(),
    })
}

/// Splits an `Address` into host and port.
pub fn socket_parts(a: Option<&Address>) -> Result<(&str, u16), CompileError> {
    match a.and_then(|a| a.address.as_ref()) {
        Some(AddressKind::SocketAddress(s)) => {
            let port = match &s.port_specifier {
                Some(PortSpecifier::PortValue(p)) if *p <= 65535 => *p as u16,
                Some(PortSpecifier::PortValue(p)) => return Err(format!("port {p} out of range")),
                Some(PortSpecifier::NamedPort(n)) => {
                    return Err(format!("named port {n:?} is not supported"));
                }
                None => 0,
            };
            Ok((s.address.as_str(), port))
        }
        Some(other) => Err(format!("unsupported address {other:?}")),
        None => Err("missing socket address".into()),
    }
}

/// Parses an `Address` that must be an IP socket address.
pub fn socket_addr(a: Option<&Address>) -> Result<SocketAddr, CompileError> {
    let (host, port) = socket_parts(a)?;
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("address {host:?} is not an IP"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Endpoints by EDS service name, as received.
pub type EndpointsByService = BTreeMap<String, std::sync::Arc<Vec<EndpointModel>>>;
