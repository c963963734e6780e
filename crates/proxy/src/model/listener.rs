//! Listeners (LDS): addresses, filter chains and their network filters.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType as ListenerFilterConfig;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::google::protobuf::Any;

use super::cluster::socket_addr;
use super::route::{ClusterChoice, RouteTable};
use super::{CompileError, optional_duration};

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ORIGINAL_DST_FILTER: &str = "envoy.filters.listener.original_dst";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Default bounded wait for the first bytes when a listener needs protocol
/// detection: server-first protocols (MySQL, SMTP) wait this long at most.
pub const DEFAULT_DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// A compiled listener.
#[derive(Debug)]
pub struct ListenerModel {
    /// Its name, e.g. `0.0.0.0_8080` or `virtualOutbound`.
    pub name: String,
    /// The address it stands for.
    pub address: SocketAddr,
    /// Whether it owns a socket (`bind_to_port`, default true); listeners
    /// that do not are reached from a `use_original_dst` listener.
    pub bind: bool,
    /// Hand connections to the listener matching their original destination.
    pub use_original_dst: bool,
    /// Filter chains, matched as Envoy does.
    pub chains: Vec<FilterChainModel>,
    /// Used when no chain matches.
    pub default_chain: Option<FilterChainModel>,
    /// Whether any chain needs the first bytes (TLS SNI/ALPN, HTTP detection).
    pub needs_detection: bool,
    /// Bounded wait for detection.
    pub detection_timeout: Duration,
    /// Traffic direction INBOUND: this proxy reports as the destination.
    pub inbound: bool,
    /// The `envoy.filters.listener.original_dst` listener filter: chains
    /// match on the original destination, without handing the connection
    /// to another listener (Istio's `virtualInbound`).
    pub original_dst_filter: bool,
}

/// A compiled filter chain.
#[derive(Debug)]
pub struct FilterChainModel {
    /// The chain's name.
    pub name: String,
    /// Match criteria.
    pub matcher: ChainMatch,
    /// The terminal network filter.
    pub filter: NetworkFilter,
    /// TLS terminated on this chain (`DownstreamTlsContext`), if any.
    pub tls: Option<Arc<crate::tls::server::ChainTls>>,
}

/// Envoy's `FilterChainMatch`, compiled.
#[derive(Debug, Default)]
pub struct ChainMatch {
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Destination address ranges.
    pub prefix_ranges: Vec<(IpAddr, u8)>,
    /// TLS SNI names (`*.example.com` allowed).
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: Option<String>,
    /// ALPN or detected protocol (`http/1.1`, `h2c`, `h2`, ...).
    pub application_protocols: Vec<String>,
    /// Source address ranges.
    pub source_prefix_ranges: Vec<(IpAddr, u8)>,
}

/// What the proxy learned about a connection before choosing a chain.
#[derive(Clone, Debug, Default)]
pub struct ConnFacts {
    /// Original (or local) destination.
    pub destination: Option<SocketAddr>,
    /// Peer address.
    pub source: Option<SocketAddr>,
    /// `tls` or `raw_buffer`.
    pub transport: &'static str,
    /// Detected application protocol.
    pub application: Option<String>,
    /// TLS SNI.
    pub server_name: Option<String>,
}

/// The terminal network filter of a chain.
#[derive(Debug)]
pub enum NetworkFilter {
    /// HTTP connection manager.
    Http(Arc<HttpManager>),
    /// TCP proxy.
    Tcp(Arc<TcpProxyModel>),
}

/// Where an HTTP connection manager gets its routes.
#[derive(Debug)]
pub enum RouteSource {
    /// By name from RDS.
    Rds(String),
    /// Inline.
    Inline(Arc<RouteTable>),
}

/// A compiled HTTP connection manager.
#[derive(Debug)]
pub struct HttpManager {
    /// Stat prefix (for logs).
    pub stat_prefix: String,
    /// Route source.
    pub routes: RouteSource,
    /// Strip any `:port` from Host before matching domains.
    pub strip_any_host_port: bool,
    /// Per-stream idle timeout (Envoy default 5 min).
    pub stream_idle_timeout: Option<Duration>,
    /// Connection idle timeout (Envoy default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Time allowed to receive request headers.
    pub request_headers_timeout: Option<Duration>,
    /// Request header size limit in bytes.
    pub max_request_headers_bytes: Option<usize>,
    /// Request header count limit.
    pub max_headers_count: Option<usize>,
}

/// A compiled TCP proxy.
#[derive(Debug)]
pub struct TcpProxyModel {
    /// Stat prefix (for logs).
    pub stat_prefix: String,
    /// Destination cluster(s).
    pub clusters: ClusterChoice,
    /// Close after this long without bytes (Envoy default 1 h).
    pub idle_timeout: Option<Duration>,
}

impl ListenerModel {
    /// Compiles an LDS `Listener`.
    pub fn compile(l: &Listener) -> Result<Self, CompileError> {
        if l.name.is_empty() {
            return Err("listener without a name".into());
        }
        let address = socket_addr(l.address.as_ref())?;
        let chains = l
            .filter_chains
            .iter()
            .enumerate()
            .map(|(i, c)| {
                FilterChainModel::compile(c)
                    .map_err(|e| format!("filter chain {i} ({:?}): {e}", c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let default_chain = l
            .default_filter_chain
            .as_ref()
            .map(FilterChainModel::compile)
            .transpose()
            .map_err(|e| format!("default filter chain: {e}"))?;
        let use_original_dst = l.use_original_dst.as_ref().is_some_and(|b| b.value);
        if chains.is_empty() && default_chain.is_none() && !use_original_dst {
            return Err("listener has no filter chains".into());
        }
        let needs_detection = chains.iter().any(|c| {
            c.matcher.transport_protocol.is_some()
                || !c.matcher.application_protocols.is_empty()
                || !c.matcher.server_names.is_empty()
        });
        let detection_timeout = optional_duration(l.listener_filters_timeout.as_ref())?
            .map(|d| d.min(DEFAULT_DETECTION_TIMEOUT))
            .unwrap_or(DEFAULT_DETECTION_TIMEOUT);
        Ok(ListenerModel {
            name: l.name.clone(),
            address,
            bind: l.bind_to_port.as_ref().is_none_or(|b| b.value),
            use_original_dst,
            chains,
            default_chain,
            needs_detection,
            detection_timeout,
            inbound: l.traffic_direction == 1,
            original_dst_filter: l.listener_filters.iter().any(|f| {
                f.name == ORIGINAL_DST_FILTER
                    || matches!(&f.config_type, Some(ListenerFilterConfig::TypedConfig(any))
                        if any.type_url.ends_with(".OriginalDst"))
            }),
        })
    }

    /// Chooses the filter chain for a connection, stage by stage as Envoy
    /// does: destination port, destination IP (most specific), server name,
    /// transport protocol, application protocol, source IP. At each stage the
    /// chains that name the criterion and match it win over those that do not
    /// name it.
    pub fn select_chain(&self, facts: &ConnFacts) -> Option<&FilterChainModel> {
        let mut cands: Vec<&FilterChainModel> = self.chains.iter().collect();
        let port = facts.destination.map(|d| d.port());
        cands = stage(cands, |m| {
            m.destination_port.map(|p| Some(p) == port).map(u32::from)
        });
        let dst_ip = facts.destination.map(|d| d.ip());
        cands = stage(cands, |m| cidr_rank(&m.prefix_ranges, dst_ip));
        let sni = facts.server_name.as_deref();
        cands = stage(cands, |m| {
            if m.server_names.is_empty() {
                return None;
            }
            Some(
                m.server_names
                    .iter()
                    .filter_map(|n| sni_rank(n, sni))
                    .max()
                    .unwrap_or(0),
            )
        });
        cands = stage(cands, |m| {
            m.transport_protocol
                .as_ref()
                .map(|t| u32::from(t == facts.transport))
        });
        let app = facts.application.as_deref();
        cands = stage(cands, |m| {
            if m.application_protocols.is_empty() {
                return None;
            }
            Some(u32::from(
                m.application_protocols
                    .iter()
                    .any(|p| Some(p.as_str()) == app),
            ))
        });
        let src_ip = facts.source.map(|s| s.ip());
        cands = stage(cands, |m| cidr_rank(&m.source_prefix_ranges, src_ip));
        cands.into_iter().next().or(self.default_chain.as_ref())
    }

    /// Every route configuration name its HTTP chains use.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .chain(self.default_chain.iter())
            .filter_map(|c| match &c.filter {
                NetworkFilter::Http(h) => match &h.routes {
                    RouteSource::Rds(n) => Some(n.as_str()),
                    RouteSource::Inline(_) => None,
                },
                NetworkFilter::Tcp(_) => None,
            })
    }
}

/// One matching stage. `rank` returns `None` when the chain does not name
/// the criterion, `Some(0)` when it names it and does not match, and a
/// positive specificity when it matches.
fn stage(
    cands: Vec<&FilterChainModel>,
    rank: impl Fn(&ChainMatch) -> Option<u32>,
) -> Vec<&FilterChainModel> {
    let ranked: Vec<(Option<u32>, &FilterChainModel)> =
        cands.into_iter().map(|c| (rank(&c.matcher), c)).collect();
    let best = ranked
        .iter()
        .filter_map(|(r, _)| *r)
        .filter(|r| *r > 0)
        .max();
    match best {
        Some(b) => ranked
            .into_iter()
            .filter(|(r, _)| *r == Some(b))
            .map(|(_, c)| c)
            .collect(),
        None => ranked
            .into_iter()
            .filter(|(r, _)| r.is_none())
            .map(|(_, c)| c)
            .collect(),
    }
}

/// Specificity of the best matching CIDR (prefix length + 1), 0 if none matches.
fn cidr_rank(ranges: &[(IpAddr, u8)], ip: Option<IpAddr>) -> Option<u32> {
    if ranges.is_empty() {
        return None;
    }
    let Some(ip) = ip else { return Some(0) };
    Some(
        ranges
            .iter()
            .filter(|(net, len)| cidr_contains(*net, *len, ip))
            .map(|(_, len)| u32::from(*len) + 1)
            .max()
            .unwrap_or(0),
    )
}

/// Whether `ip` lies in `net/len`.
pub fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Exact names beat wildcards; longer wildcards beat shorter ones.
fn sni_rank(pattern: &str, sni: Option<&str>) -> Option<u32> {
    let sni = sni?.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if pattern == sni {
        return Some(1000);
    }
    let suffix = pattern.strip_prefix('*')?;
    (sni.ends_with(suffix) && sni.len() > suffix.len()).then_some(suffix.len() as u32 + 1)
}

fn compile_cidrs(ranges: &[CidrRange]) -> Result<Vec<(IpAddr, u8)>, CompileError> {
    ranges
        .iter()
        .map(|r| {
            let ip: IpAddr = r
                .address_prefix
                .parse()
                .map_err(|_| format!("invalid CIDR address {:?}", r.address_prefix))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.as_ref().map(|l| l.value).unwrap_or(max);
            if len > max {
                return Err(format!("prefix length {len} too long for {ip}"));
            }
            Ok((ip, len as u8))
        })
        .collect()
}

impl ChainMatch {
    fn compile(m: Option<&FilterChainMatch>) -> Result<Self, CompileError> {
        let Some(m) = m else {
            return Ok(ChainMatch::default());
        };
        let destination_port = match m.destination_port.as_ref().map(|p| p.value) {
            None => None,
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => return Err(format!("destination_port {p} out of range")),
        };
        Ok(ChainMatch {
            destination_port,
            prefix_ranges: compile_cidrs(&m.prefix_ranges)?,
            server_names: m.server_names.clone(),
            transport_protocol: (!m.transport_protocol.is_empty())
                .then(|| m.transport_protocol.clone()),
            application_protocols: m.application_protocols.clone(),
            source_prefix_ranges: compile_cidrs(&m.source_prefix_ranges)?,
        })
    }
}

impl FilterChainModel {
    fn compile(c: &FilterChain) -> Result<Self, CompileError> {
        let tls = c
            .transport_socket
            .as_ref()
            .map(crate::tls::spec::downstream_socket)
            .transpose()
            .map_err(|e| format!("transport_socket: {e}"))?
            .flatten()
            .map(|spec| Arc::new(crate::tls::server::ChainTls::new(spec)));
        let matcher = ChainMatch::compile(c.filter_chain_match.as_ref())?;
        let terminal = c.filters.last().ok_or("filter chain without filters")?;
        let Some(ConfigType::TypedConfig(any)) = &terminal.config_type else {
            return Err(format!("filter {:?} has no typed_config", terminal.name));
        };
        let filter = compile_network_filter(any)?;
        Ok(FilterChainModel {
            name: c.name.clone(),
            matcher,
            filter,
            tls,
        })
    }
}

fn compile_network_filter(any: &Any) -> Result<NetworkFilter, CompileError> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    match type_name {
        HCM => {
            let hcm: HttpConnectionManager = meshwork_xds::unpack(any)?;
            let routes = match &hcm.route_specifier {
                Some(RouteSpecifier::Rds(r)) if !r.route_config_name.is_empty() => {
                    RouteSource::Rds(r.route_config_name.clone())
                }
                Some(RouteSpecifier::RouteConfig(rc)) => {
                    RouteSource::Inline(Arc::new(RouteTable::compile(rc)?))
                }
                other => return Err(format!("unsupported route specifier {other:?}")),
            };
            let common = hcm.common_http_protocol_options.as_ref();
            Ok(NetworkFilter::Http(Arc::new(HttpManager {
                stat_prefix: hcm.stat_prefix.clone(),
                routes,
                strip_any_host_port: hcm.strip_matching_host_port || hcm.strip_port_mode.is_some(),
                stream_idle_timeout: match &hcm.stream_idle_timeout {
                    None => Some(Duration::from_secs(300)),
                    Some(t) => optional_duration(Some(t))?,
                },
                idle_timeout: match common.and_then(|c| c.idle_timeout.as_ref()) {
                    None => Some(Duration::from_secs(3600)),
                    Some(t) => optional_duration(Some(t))?,
                },
                request_headers_timeout: optional_duration(hcm.request_headers_timeout.as_ref())?,
                max_request_headers_bytes: hcm
                    .max_request_headers_kb
                    .as_ref()
                    .map(|k| k.value as usize * 1024),
                max_headers_count: common
                    .and_then(|c| c.max_headers_count.as_ref())
                    .map(|c| c.value as usize),
            })))
        }
        TCP_PROXY => {
            let tp: TcpProxy = meshwork_xds::unpack(any)?;
            let clusters = match &tp.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                    ClusterChoice::Single(c.clone())
                }
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    let list: Vec<(String, u32)> = w
                        .clusters
                        .iter()
                        .filter(|c| c.weight > 0)
                        .map(|c| (c.name.clone(), c.weight))
                        .collect();
                    let total = list.iter().map(|(_, w)| *w).sum();
                    if list.is_empty() {
                        return Err("tcp_proxy weighted clusters with no positive weight".into());
                    }
                    ClusterChoice::Weighted(list, total)
                }
                other => return Err(format!("tcp_proxy without a cluster: {other:?}")),
            };
            Ok(NetworkFilter::Tcp(Arc::new(TcpProxyModel {
                stat_prefix: tp.stat_prefix.clone(),
                clusters,
                idle_timeout: match &tp.idle_timeout {
                    None => Some(Duration::from_secs(3600)),
                    Some(t) => optional_duration(Some(t))?,
                },
            })))
        }
        other => Err(format!("network filter {other:?} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let net: IpAddr = "10.1.0.0".parse().unwrap();
        assert!(cidr_contains(net, 16, "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(net, 16, "10.2.0.1".parse().unwrap()));
        assert!(cidr_contains(net, 0, "1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn sni_ranks() {
        assert_eq!(sni_rank("a.example.com", Some("a.example.com")), Some(1000));
        assert!(sni_rank("*.example.com", Some("a.example.com")).is_some());
        assert_eq!(sni_rank("*.example.com", Some("example.com")), None);
    }
}
