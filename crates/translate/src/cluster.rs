//! Clusters (CDS) and their endpoints (EDS): `outbound|port|subset|host`
//! per visible service port and DestinationRule subset, `inbound|port||`
//! for the proxy's own ports, and Istio's `BlackHoleCluster`,
//! `PassthroughCluster` and `InboundPassthroughCluster`.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions, Locality,
    Metadata,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig, explicit_http_config,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};
use meshwork_config::model::istio::{H2UpgradePolicy, SimpleLb};
use meshwork_registry::{Port, Protocol, Resolution, Service, ServiceEndpoint, TargetPort};
use meshwork_xds::pack;

use crate::Generated;
use crate::cache::Memo;
use crate::dr::{self, Policy};
use crate::meta::ProxyMeta;
use crate::names::{
    BLACK_HOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, inbound_cluster, outbound_cluster,
    workload_metadata,
};
use crate::pb::{ads, parse_duration, seconds, socket, u32_value};
use crate::scope::Scope;
use crate::snapshot::MeshSnapshot;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Istio's mesh-wide default connect timeout.
const DEFAULT_CONNECT_TIMEOUT_S: i64 = 10;

/// Outbound clusters shared by the proxies of one snapshot: the cluster and
/// its EDS assignment by (cluster name, proxyless, address of the
/// DestinationRule in force, subset index or `usize::MAX`). The name fixes
/// the service, port and subset name; the rule fixes the policy and the
/// subset's labels.
pub(crate) type ClusterMemo = Memo<(String, bool, usize, usize), Built>;

/// A built cluster and, for EDS clusters, its assignment.
pub(crate) type Built = (Arc<Any>, Option<Arc<Any>>);

/// Clusters (and EDS assignments) for every visible service port; `memo`
/// shares the work between proxies of the same snapshot.
pub(crate) fn outbound(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    scope: &Scope<'_>,
    grpc: bool,
    memo: Option<&ClusterMemo>,
    out: &mut Generated,
) {
    for svc in &scope.services {
        let dr = snap.destination_rule(&svc.hostname, &proxy.namespace, &svc.namespace);
        let dr_id = dr.map_or(0, |d| std::ptr::from_ref(d) as usize);
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let endpoints = snap.registry().endpoints(&svc.hostname, port.port);
            let mut base = Policy::default();
            base.apply(dr.and_then(|d| d.traffic_policy.as_ref()), port.port);
            let name = outbound_cluster(port.port, "", &svc.hostname);
            let here = dr::failover_locality(&base, &proxy.locality);
            let build = || {
                let eps = endpoints.iter().collect();
                emit(&name, svc, port, &base, eps, grpc, here)
            };
            let built = match memo {
                Some(m) => {
                    m.get_or_init((format!("{name}@{here}"), grpc, dr_id, usize::MAX), build)
                }
                None => build(),
            };
            put(out, name, built);
            let subsets = dr.map(|d| d.subsets.as_slice()).unwrap_or_default();
            for (i, subset) in subsets.iter().enumerate() {
                if subset.name.is_empty() {
                    continue;
                }
                let name = outbound_cluster(port.port, &subset.name, &svc.hostname);
                let mut policy = base.clone();
                policy.apply(subset.traffic_policy.as_ref(), port.port);
                let here = dr::failover_locality(&policy, &proxy.locality);
                let build = || {
                    let selected = endpoints
                        .iter()
                        .filter(|e| e.matches(&subset.labels))
                        .collect();
                    emit(&name, svc, port, &policy, selected, grpc, here)
                };
                let built = match memo {
                    Some(m) => m.get_or_init((format!("{name}@{here}"), grpc, dr_id, i), build),
                    None => build(),
                };
                put(out, name, built);
            }
        }
    }
    if !grpc {
        for (name, kind) in [
            (BLACK_HOLE, DiscoveryType::Static),
            (PASSTHROUGH, DiscoveryType::OriginalDst),
            (INBOUND_PASSTHROUGH, DiscoveryType::OriginalDst),
        ] {
            let c = Cluster {
                name: name.into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
                lb_policy: if kind == DiscoveryType::OriginalDst {
                    LbPolicy::ClusterProvided as i32
                } else {
                    LbPolicy::RoundRobin as i32
                },
                connect_timeout: Some(seconds(DEFAULT_CONNECT_TIMEOUT_S)),
                ..Default::default()
            };
            out.clusters.insert(name.into(), pack(&c));
        }
    }
}

/// Adds a built cluster (and its assignment) to `out`.
fn put(out: &mut Generated, name: String, (cluster, cla): Built) {
    if let Some(cla) = cla {
        out.endpoints.insert(name.clone(), cla);
    }
    out.clusters.insert(name, cluster);
}

/// Builds one outbound cluster and, for EDS clusters, its assignment.
fn emit(
    name: &str,
    svc: &Service,
    port: &Port,
    policy: &Policy,
    endpoints: Vec<&ServiceEndpoint>,
    grpc: bool,
    here: &str,
) -> Built {
    let simple = policy.lb.as_ref().and_then(|lb| lb.simple);
    let passthrough =
        svc.resolution == Resolution::Passthrough || simple == Some(SimpleLb::Passthrough);
    let kind = match svc.resolution {
        _ if grpc => DiscoveryType::Eds,
        _ if passthrough => DiscoveryType::OriginalDst,
        Resolution::DnsLb => DiscoveryType::StrictDns,
        Resolution::DnsRoundRobinLb => DiscoveryType::LogicalDns,
        Resolution::ClientSideLb | Resolution::Passthrough => DiscoveryType::Eds,
    };
    let lb_policy = match simple {
        _ if grpc => LbPolicy::RoundRobin,
        _ if kind == DiscoveryType::OriginalDst => LbPolicy::ClusterProvided,
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        // Istio's default (and LEAST_CONN's replacement) is LEAST_REQUEST.
        _ => LbPolicy::LeastRequest,
    };
    let tcp = policy.pool.as_ref().and_then(|p| p.tcp.as_ref());
    let http = policy.pool.as_ref().and_then(|p| p.http.as_ref());
    let mut c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        lb_policy: lb_policy as i32,
        connect_timeout: Some(
            tcp.and_then(|t| t.connect_timeout.as_deref())
                .and_then(parse_duration)
                .unwrap_or(seconds(DEFAULT_CONNECT_TIMEOUT_S)),
        ),
        ..Default::default()
    };
    let mut cla = None;
    match kind {
        DiscoveryType::Eds => {
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name.into(),
            });
            let mut la = assignment(name, endpoints.into_iter(), true);
            dr::apply_failover(&mut la, policy, here);
            cla = Some(Arc::new(pack(&la)));
        }
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            c.load_assignment = Some(assignment(name, endpoints.into_iter(), false));
        }
        _ => {}
    }
    if !grpc {
        let h2_upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
        let use_client = http.and_then(|h| h.use_client_protocol) == Some(true);
        let upstream = if port.protocol.is_http2() || (h2_upgrade && port.protocol.is_http()) {
            Some(Upstream::Http2)
        } else if port.protocol.is_unsupported() || (use_client && port.protocol.is_http()) {
            Some(Upstream::Downstream)
        } else if port.protocol.is_http() {
            Some(Upstream::Http1)
        } else {
            None
        };
        let idle = http
            .and_then(|h| h.idle_timeout.as_deref())
            .and_then(parse_duration);
        let common = CommonHttpOptions {
            idle_timeout: idle,
            max_requests_per_connection: dr::max_requests_per_connection(policy)
                .and_then(u32_value),
            ..Default::default()
        };
        set_protocol(
            &mut c,
            upstream,
            Some(common).filter(|o| *o != Default::default()),
        );
        let h2 = matches!(upstream, Some(Upstream::Http2));
        crate::tls::apply_client(&mut c, policy.tls.as_ref(), kind, h2);
    }
    if kind != DiscoveryType::OriginalDst {
        dr::apply(&mut c, policy, grpc);
    }
    (Arc::new(pack(&c)), cla)
}

#[derive(Clone, Copy)]
enum Upstream {
    Http1,
    Http2,
    Downstream,
}

fn set_protocol(c: &mut Cluster, upstream: Option<Upstream>, common: Option<CommonHttpOptions>) {
    let Some(upstream) = upstream else { return };
    let explicit = |p| {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(p),
            },
        ))
    };
    let opts = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: match upstream {
            Upstream::Http1 => explicit(explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )),
            Upstream::Http2 => {
                explicit(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                ))
            }
            Upstream::Downstream => Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig::default(),
            )),
        },
        ..Default::default()
    };
    c.typed_extension_protocol_options
        .insert(HTTP_PROTOCOL_OPTIONS.into(), pack(&opts));
}

/// A load assignment grouping endpoints by locality; `ip_only` drops
/// host-name endpoints (EDS needs addresses).
fn assignment<'a>(
    name: &str,
    endpoints: impl Iterator<Item = &'a ServiceEndpoint>,
    ip_only: bool,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for e in endpoints {
        if ip_only && e.address.parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        let workload = workload_metadata(&e.workload, &e.namespace, &e.labels);
        let istio = Struct {
            fields: [(
                "workload".to_string(),
                Value {
                    kind: Some(value::Kind::StringValue(workload)),
                },
            )]
            .into_iter()
            .collect(),
        };
        by_locality
            .entry(&e.locality)
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(&e.address, e.port)),
                    ..Default::default()
                })),
                // HEALTHY = 1, UNHEALTHY = 2.
                health_status: if e.healthy { 1 } else { 2 },
                metadata: Some(Metadata {
                    filter_metadata: crate::tls::sorted_metadata(
                        [("istio".to_string(), istio)]
                            .into_iter()
                            .chain(e.has_sidecar.then(crate::tls::endpoint_tls_mode))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                load_balancing_weight: u32_value(e.weight.max(1)),
            });
    }
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, lb_endpoints)| {
                let mut parts = locality.splitn(3, '/').map(str::to_string);
                let weight = lb_endpoints
                    .iter()
                    .filter_map(|e| e.load_balancing_weight.as_ref())
                    .fold(0u32, |sum, w| sum.saturating_add(w.value));
                LocalityLbEndpoints {
                    // Always present, empty when unknown (as Istio sends it):
                    // gRPC rejects a LocalityLbEndpoints without a locality.
                    locality: Some(Locality {
                        region: parts.next().unwrap_or_default(),
                        zone: parts.next().unwrap_or_default(),
                        sub_zone: parts.next().unwrap_or_default(),
                    }),
                    lb_endpoints,
                    // gRPC ignores localities without a weight.
                    load_balancing_weight: u32_value(weight.max(1)),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// The proxy's own ports: target ports of the services that select its
/// workload, with their protocol (the first service naming a port wins).
pub(crate) fn inbound_ports(snap: &MeshSnapshot, proxy: &ProxyMeta) -> Vec<(u16, Protocol)> {
    let mut ports: BTreeMap<u16, Protocol> = BTreeMap::new();
    // Only services of the proxy's namespace with a selector can select it.
    for svc in snap.selecting(&proxy.namespace) {
        if !svc
            .selector
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        {
            continue;
        }
        for p in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let target = match &p.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(_) => snap
                    .registry()
                    .endpoints(&svc.hostname, p.port)
                    .iter()
                    .find(|e| {
                        e.namespace == proxy.namespace
                            && (e.workload == proxy.workload
                                || proxy.ip.is_some_and(|ip| e.address == ip.to_string()))
                    })
                    .map(|e| e.port),
            };
            if let Some(t) = target {
                ports.entry(t).or_insert(p.protocol);
            }
        }
    }
    ports.into_iter().collect()
}

/// `inbound|port||` clusters to the local application on `ports` (from
/// [`inbound_ports`]).
pub(crate) fn inbound(proxy: &ProxyMeta, ports: &[(u16, Protocol)], out: &mut Generated) {
    for &(port, protocol) in ports {
        inbound_to(proxy, port, protocol, ("127.0.0.1", port), out);
    }
}

/// `inbound|port||` to the application at `to` (address, port): the local
/// application on loopback, or a Sidecar ingress listener's `defaultEndpoint`.
pub(crate) fn inbound_to(
    proxy: &ProxyMeta,
    port: u16,
    protocol: Protocol,
    to: (&str, u16),
    out: &mut Generated,
) {
    let name = inbound_cluster(port);
    let local = ServiceEndpoint {
        address: to.0.into(),
        port: to.1,
        labels: proxy.labels.clone(),
        workload: proxy.workload.clone(),
        namespace: proxy.namespace.clone(),
        service_account: proxy.service_account.clone(),
        has_sidecar: true,
        healthy: true,
        locality: String::new(),
        weight: 1,
    };
    let mut c = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        lb_policy: LbPolicy::RoundRobin as i32,
        connect_timeout: Some(seconds(DEFAULT_CONNECT_TIMEOUT_S)),
        load_assignment: Some(assignment(&name, std::iter::once(&local), true)),
        ..Default::default()
    };
    let upstream = if protocol.is_http2() {
        Some(Upstream::Http2)
    } else if protocol.is_unsupported() {
        Some(Upstream::Downstream)
    } else if protocol.is_http() {
        Some(Upstream::Http1)
    } else {
        None
    };
    set_protocol(&mut c, upstream, None);
    out.clusters.insert(name, pack(&c));
}
