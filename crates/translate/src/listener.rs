//! Sidecar listeners (LDS): `0.0.0.0_<port>` per outbound service port,
//! `virtualOutbound` on 15001 and `virtualInbound` on 15006.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use meshwork_registry::{Protocol, Service};
use meshwork_xds::pack;

use crate::Generated;
use crate::authn::{InboundMtls, Mtls};
use crate::meta::ProxyMeta;
use crate::names::{
    BLACK_HOLE, INBOUND_CAPTURE, INBOUND_PASSTHROUGH, OUTBOUND_CAPTURE, PASSTHROUGH,
    inbound_cluster, outbound_cluster,
};
use crate::pb::{
    HCM_NAME, bool_value, chain, hcm_rds, network_filter, router_filter, socket, tcp_proxy,
    u32_value,
};
use crate::scope::Scope;
use crate::snapshot::MeshSnapshot;
use crate::tls::INBOUND_MTLS_ALPNS;
use crate::vs::default_route;

/// What protocol detection reports for HTTP/1 and cleartext HTTP/2.
pub(crate) const SNIFFED_HTTP: [&str; 2] = ["http/1.1", "h2c"];

/// A sidecar's outbound listeners: `0.0.0.0_<port>` and `virtualOutbound`.
pub(crate) fn outbound(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    scope: &Scope<'_>,
    out: &mut Generated,
) {
    let fallthrough = if scope.allow_any {
        PASSTHROUGH
    } else {
        BLACK_HOLE
    };
    for (port, services) in ports(scope) {
        if port == OUTBOUND_CAPTURE || port == INBOUND_CAPTURE {
            continue;
        }
        let l = outbound_listener(snap, proxy, port, &services, fallthrough);
        out.listeners.insert(l.name.clone(), pack(&l));
    }
    let vo = virtual_outbound(fallthrough);
    out.listeners.insert(vo.name.clone(), pack(&vo));
    crate::sidecar_listeners::egress(snap, proxy, scope, out);
}

/// A sidecar's `virtualInbound` listener for its own `ports` (from
/// [`crate::cluster::inbound_ports`]), with PeerAuthentication's `mtls`.
pub(crate) fn inbound(ports: &[(u16, Protocol)], mtls: &InboundMtls, out: &mut Generated) {
    let vi = virtual_inbound(ports, mtls);
    out.listeners.insert(vi.name.clone(), pack(&vi));
}

/// Visible services by port, with that port's protocol.
fn ports<'a>(scope: &Scope<'a>) -> BTreeMap<u16, Vec<(&'a Service, Protocol)>> {
    let mut out: BTreeMap<u16, Vec<(&Service, Protocol)>> = BTreeMap::new();
    for svc in &scope.services {
        for p in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            out.entry(p.port).or_default().push((svc, p.protocol));
        }
    }
    out
}

/// An address or CIDR as a range.
pub(crate) fn cidr(address: &str) -> Option<CidrRange> {
    let (ip, len) = match address.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u32>().ok()?),
        None => {
            let ip = address.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return None;
    }
    Some(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: u32_value(len),
    })
}

fn http_chain(name: &str, port: u16, matcher: Option<FilterChainMatch>) -> FilterChain {
    outbound_http_chain(name, "0.0.0.0", port, &port.to_string(), matcher)
}

/// An outbound HTTP chain on `bind:port` with RDS `rds` (Istio's `<port>`;
/// see [`crate::sidecar_listeners`] for Sidecar egress listeners).
pub(crate) fn outbound_http_chain(
    name: &str,
    bind: &str,
    port: u16,
    rds: &str,
    matcher: Option<FilterChainMatch>,
) -> FilterChain {
    let mut hcm = hcm_rds(&format!("outbound_{bind}_{port}"), rds);
    crate::policy::add_route_filters(&mut hcm);
    chain(name, matcher, network_filter(HCM_NAME, pack(&hcm)))
}

/// `0.0.0.0_<port>`: one HTTP chain (RDS `<port>`) for the HTTP services,
/// a chain per TCP service with a VIP (matched on it), and for services
/// without one the first TCP service, as Istio resolves such conflicts.
fn outbound_listener(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    port: u16,
    services: &[(&Service, Protocol)],
    fallthrough: &str,
) -> Listener {
    let explicit_http = services.iter().any(|(_, p)| p.is_http());
    let mut chains = Vec::new();
    let mut seen_vips = HashSet::new();
    let mut plain_tcp: Option<(String, Option<Filter>)> = None;
    let mut sniffed_plain = false;
    for (svc, protocol) in services {
        if protocol.is_http() {
            continue;
        }
        let cluster = outbound_cluster(port, "", &svc.hostname);
        let vips: Vec<CidrRange> = svc
            .addresses
            .iter()
            .filter_map(|a| cidr(a))
            .filter(|c| seen_vips.insert((c.address_prefix.clone(), c.prefix_len)))
            .collect();
        if vips.is_empty() {
            sniffed_plain |= protocol.is_unsupported();
            if plain_tcp.is_none() {
                let routed = crate::tcp_route::default_filter(snap, proxy, svc, port);
                plain_tcp = Some((cluster, routed));
            }
            continue;
        }
        if protocol.is_unsupported() {
            let m = FilterChainMatch {
                prefix_ranges: vips.clone(),
                application_protocols: SNIFFED_HTTP.map(String::from).to_vec(),
                ..Default::default()
            };
            chains.push(http_chain(&format!("{cluster}-http"), port, Some(m)));
        }
        if let Some(routed) = crate::tcp_route::chains(snap, proxy, svc, port, *protocol, &vips) {
            chains.extend(routed);
        }
        let m = FilterChainMatch {
            prefix_ranges: vips,
            ..Default::default()
        };
        chains.push(chain(&cluster, Some(m), tcp_proxy(&cluster, &cluster)));
    }
    let mut default_chain = None;
    if explicit_http {
        chains.push(http_chain("http", port, None));
    } else {
        if sniffed_plain {
            let m = FilterChainMatch {
                application_protocols: SNIFFED_HTTP.map(String::from).to_vec(),
                ..Default::default()
            };
            chains.push(http_chain("http", port, Some(m)));
        }
        default_chain = Some(match plain_tcp {
            Some((c, Some(routed))) => chain(&c, None, routed),
            Some((c, None)) => chain(&c, None, tcp_proxy(&c, &c)),
            None => chain(
                "PassthroughFilterChain",
                None,
                tcp_proxy(fallthrough, fallthrough),
            ),
        });
    }
    Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(socket("0.0.0.0", port)),
        bind_to_port: bool_value(false),
        traffic_direction: 2, // OUTBOUND
        filter_chains: chains,
        default_filter_chain: default_chain,
        ..Default::default()
    }
}

/// `virtualOutbound`: hands connections to the listener of their original
/// destination; loops back to 15001 are dropped, the rest pass through.
fn virtual_outbound(fallthrough: &str) -> Listener {
    let blackhole = FilterChainMatch {
        destination_port: u32_value(u32::from(OUTBOUND_CAPTURE)),
        ..Default::default()
    };
    Listener {
        name: "virtualOutbound".into(),
        address: Some(socket("0.0.0.0", OUTBOUND_CAPTURE)),
        use_original_dst: bool_value(true),
        traffic_direction: 2, // OUTBOUND
        filter_chains: vec![chain(
            "virtualOutbound-blackhole",
            Some(blackhole),
            tcp_proxy(BLACK_HOLE, BLACK_HOLE),
        )],
        default_filter_chain: Some(chain(
            "PassthroughFilterChain",
            None,
            tcp_proxy(fallthrough, fallthrough),
        )),
        ..Default::default()
    }
}

fn on_port(port: u16, application_protocols: &[&str]) -> Option<FilterChainMatch> {
    Some(FilterChainMatch {
        destination_port: u32_value(u32::from(port)),
        application_protocols: application_protocols
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    })
}

/// An inbound HTTP chain with its inline route to `inbound|<port>||`.
fn inbound_http_chain(port: u16, app: &[&str]) -> FilterChain {
    let cluster = inbound_cluster(port);
    let rc = RouteConfiguration {
        name: cluster.clone(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![default_route(&cluster)],
            ..Default::default()
        }],
        validate_clusters: bool_value(false),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: format!("inbound_0.0.0.0_{port}"),
        route_specifier: Some(RouteSpecifier::RouteConfig(rc)),
        http_filters: vec![router_filter()],
        ..Default::default()
    };
    chain(
        &format!("0.0.0.0_{port}"),
        on_port(port, app),
        network_filter(HCM_NAME, pack(&hcm)),
    )
}

/// `virtualInbound`: chains per port of this proxy's workload (matched on
/// the original destination port) as PeerAuthentication says — mTLS chains
/// (TLS with Istio's ALPN, client certificate required) and/or plaintext
/// ones; a STRICT port drops plaintext. Loops to 15006 are dropped, other
/// traffic passes through to its original destination (over mTLS too,
/// unless DISABLE; only over mTLS when the workload is STRICT).
fn virtual_inbound(ports: &[(u16, Protocol)], mtls: &InboundMtls) -> Listener {
    let mut chains = vec![chain(
        "virtualInbound-blackhole",
        on_port(INBOUND_CAPTURE, &[]),
        tcp_proxy(BLACK_HOLE, BLACK_HOLE),
    )];
    for &(port, protocol) in ports {
        if port == INBOUND_CAPTURE || port == OUTBOUND_CAPTURE {
            continue;
        }
        chains.extend(inbound_port_chains(port, protocol, mtls.for_port(port)));
    }
    if mtls.workload != Mtls::Disable {
        let mut c = chain(
            "virtualInbound-catchall-mtls",
            Some(FilterChainMatch {
                transport_protocol: "tls".into(),
                application_protocols: INBOUND_MTLS_ALPNS.map(String::from).to_vec(),
                ..Default::default()
            }),
            tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH),
        );
        c.transport_socket = Some(crate::tls::inbound_socket(&[
            "istio-peer-exchange",
            "h2",
            "http/1.1",
        ]));
        chains.push(c);
    }
    let passthrough = if mtls.workload == Mtls::Strict {
        chain(
            "virtualInbound-plaintext-refused",
            None,
            tcp_proxy(BLACK_HOLE, BLACK_HOLE),
        )
    } else {
        chain(
            "InboundPassthroughFilterChain",
            None,
            tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH),
        )
    };
    let original_dst = ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    };
    Listener {
        name: "virtualInbound".into(),
        address: Some(socket("0.0.0.0", INBOUND_CAPTURE)),
        traffic_direction: 1, // INBOUND
        listener_filters: vec![original_dst],
        filter_chains: chains,
        default_filter_chain: Some(passthrough),
        ..Default::default()
    }
}

/// The chains of one inbound port as PeerAuthentication's `mode` says
/// (matched on the destination port): an mTLS chain unless DISABLE, then
/// plaintext chains, or a refusing one when STRICT. `virtualInbound` holds
/// them for every port; a bound Sidecar ingress listener for its own port.
pub(crate) fn inbound_port_chains(port: u16, protocol: Protocol, mode: Mtls) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    let cluster = inbound_cluster(port);
    if mode != Mtls::Disable {
        let (mut c, alpn) = if protocol.is_http() {
            (
                inbound_http_chain(port, &INBOUND_MTLS_ALPNS),
                &["h2", "http/1.1"][..],
            )
        } else {
            let c = chain(
                &format!("0.0.0.0_{port}-tcp"),
                on_port(port, &INBOUND_MTLS_ALPNS),
                tcp_proxy(&cluster, &cluster),
            );
            (c, &["istio-peer-exchange", "h2", "http/1.1"][..])
        };
        c.name = format!("{}-mtls", c.name);
        if let Some(m) = &mut c.filter_chain_match {
            m.transport_protocol = "tls".into();
        }
        c.transport_socket = Some(crate::tls::inbound_socket(alpn));
        chains.push(c);
    }
    if mode == Mtls::Strict {
        // Whatever is not mTLS on this port is dropped.
        chains.push(chain(
            &format!("0.0.0.0_{port}-plaintext-refused"),
            on_port(port, &[]),
            tcp_proxy(BLACK_HOLE, BLACK_HOLE),
        ));
        return chains;
    }
    if protocol.is_http() {
        chains.push(inbound_http_chain(port, &[]));
    } else {
        if protocol.is_unsupported() {
            chains.push(inbound_http_chain(port, &SNIFFED_HTTP));
        }
        chains.push(chain(
            &format!("0.0.0.0_{port}-tcp"),
            on_port(port, &[]),
            tcp_proxy(&cluster, &cluster),
        ));
    }
    chains
}
