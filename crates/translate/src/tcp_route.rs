//! VirtualService `tcp` and `tls` routes as outbound filter chains: TCP
//! routes matched on port, destination subnets and the client's labels and
//! namespace; TLS routes matched on SNI (passed through, never terminated);
//! several destinations become a weighted TCP proxy.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    ClusterSpecifier, WeightedCluster, weighted_cluster::ClusterWeight,
};
use meshwork_config::model::istio::RouteDestination;
use meshwork_registry::{Protocol, Service, fqdn};
use meshwork_xds::pack;

use crate::meta::ProxyMeta;
use crate::names::outbound_cluster;
use crate::pb::{TCP_PROXY_NAME, chain, network_filter};
use crate::snapshot::MeshSnapshot;

/// Match conditions shared by TCP and TLS matches.
struct L4<'a> {
    port: Option<i64>,
    subnets: &'a [String],
    gateways: &'a [String],
    labels: &'a std::collections::BTreeMap<String, String>,
    namespace: Option<&'a String>,
}

impl L4<'_> {
    fn applies(&self, port: u16, proxy: &ProxyMeta) -> bool {
        self.port.is_none_or(|p| p == i64::from(port))
            && (self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh"))
            && self
                .labels
                .iter()
                .all(|(k, v)| proxy.labels.get(k) == Some(v))
            && self.namespace.is_none_or(|ns| *ns == proxy.namespace)
    }

    fn ranges(&self, vips: &[CidrRange]) -> Vec<CidrRange> {
        if self.subnets.is_empty() {
            vips.to_vec()
        } else {
            self.subnets
                .iter()
                .filter_map(|s| crate::listener::cidr(s))
                .collect()
        }
    }
}

/// A TCP proxy to the route's destinations (weighted when several).
fn proxy_filter(
    snap: &MeshSnapshot,
    dests: &[RouteDestination],
    vs_ns: &str,
    port: u16,
) -> Option<(String, Filter)> {
    let clusters: Vec<(String, u32)> = dests
        .iter()
        .filter_map(|d| {
            let dest = d.destination.as_ref()?;
            let host = fqdn(&dest.host, vs_ns);
            let number = dest
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n).ok())
                .or_else(|| {
                    let svc = snap.registry().service(&host)?;
                    (svc.ports.len() == 1).then(|| svc.ports[0].port)
                })
                .unwrap_or(port);
            let w = d.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0);
            Some((
                outbound_cluster(number, dest.subset.as_deref().unwrap_or(""), &host),
                w,
            ))
        })
        .collect();
    let (name, specifier) = match clusters.as_slice() {
        [] => return None,
        [(one, _)] => (one.clone(), ClusterSpecifier::Cluster(one.clone())),
        many => {
            let positive: Vec<&(String, u32)> = many.iter().filter(|(_, w)| *w > 0).collect();
            let list: Vec<ClusterWeight> = if positive.is_empty() {
                many.iter().map(|(n, _)| weight(n, 1)).collect()
            } else {
                positive.iter().map(|(n, w)| weight(n, *w)).collect()
            };
            (
                many[0].0.clone(),
                ClusterSpecifier::WeightedClusters(WeightedCluster { clusters: list }),
            )
        }
    };
    let tp = TcpProxy {
        stat_prefix: name.clone(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    Some((name, network_filter(TCP_PROXY_NAME, pack(&tp))))
}

fn weight(name: &str, w: u32) -> ClusterWeight {
    ClusterWeight {
        name: name.into(),
        weight: w,
        ..Default::default()
    }
}

/// The filter chains of an opaque TCP or TLS service port as its
/// VirtualService's `tcp`/`tls` routes say, before the service's own chain;
/// `None` when no route applies. `vips` are the service's addresses.
pub(crate) fn chains(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    svc: &Service,
    port: u16,
    protocol: Protocol,
    vips: &[CidrRange],
) -> Option<Vec<FilterChain>> {
    let vs = snap.virtual_service(&svc.hostname, &proxy.namespace)?;
    let mut out = Vec::new();
    let mut seen: Vec<Vec<(String, Option<u32>)>> = Vec::new();
    let mut push = |out: &mut Vec<FilterChain>, m: FilterChainMatch, f: (String, Filter)| {
        let key: Vec<(String, Option<u32>)> = m
            .prefix_ranges
            .iter()
            .map(|c| {
                (
                    c.address_prefix.clone(),
                    c.prefix_len.as_ref().map(|p| p.value),
                )
            })
            .chain(m.server_names.iter().map(|s| (s.clone(), None)))
            .collect();
        if !seen.contains(&key) {
            seen.push(key);
            out.push(chain(&f.0, Some(m), f.1));
        }
    };
    if matches!(protocol, Protocol::Tls | Protocol::Https) {
        for rule in &vs.vs.tls {
            let Some(f) = proxy_filter(snap, &rule.route, vs.namespace, port) else {
                continue;
            };
            for m in &rule.r#match {
                let l4 = L4 {
                    port: m.port,
                    subnets: &m.destination_subnets,
                    gateways: &m.gateways,
                    labels: &m.source_labels,
                    namespace: m.source_namespace.as_ref(),
                };
                if !l4.applies(port, proxy) {
                    continue;
                }
                let fm = FilterChainMatch {
                    prefix_ranges: l4.ranges(vips),
                    server_names: m.sni_hosts.clone(),
                    transport_protocol: "tls".into(),
                    ..Default::default()
                };
                push(&mut out, fm, f.clone());
            }
        }
    }
    for rule in &vs.vs.tcp {
        let Some(f) = proxy_filter(snap, &rule.route, vs.namespace, port) else {
            continue;
        };
        if rule.r#match.is_empty() {
            let fm = FilterChainMatch {
                prefix_ranges: vips.to_vec(),
                ..Default::default()
            };
            push(&mut out, fm, f);
            break;
        }
        for m in &rule.r#match {
            let l4 = L4 {
                port: m.port,
                subnets: &m.destination_subnets,
                gateways: &m.gateways,
                labels: &m.source_labels,
                namespace: m.source_namespace.as_ref(),
            };
            if l4.applies(port, proxy) {
                let fm = FilterChainMatch {
                    prefix_ranges: l4.ranges(vips),
                    ..Default::default()
                };
                push(&mut out, fm, f.clone());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The TCP proxy filter for a service without addresses: the first `tcp`
/// route that applies without destination subnets.
pub(crate) fn default_filter(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    svc: &Service,
    port: u16,
) -> Option<Filter> {
    let vs = snap.virtual_service(&svc.hostname, &proxy.namespace)?;
    vs.vs.tcp.iter().find_map(|rule| {
        let applies = rule.r#match.is_empty()
            || rule.r#match.iter().any(|m| {
                m.destination_subnets.is_empty()
                    && L4 {
                        port: m.port,
                        subnets: &m.destination_subnets,
                        gateways: &m.gateways,
                        labels: &m.source_labels,
                        namespace: m.source_namespace.as_ref(),
                    }
                    .applies(port, proxy)
            });
        if !applies {
            return None;
        }
        proxy_filter(snap, &rule.route, vs.namespace, port).map(|(_, f)| f)
    })
}
