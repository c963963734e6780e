//! Sidecar `egress` and `ingress` listeners that name a port: Istio's
//! listeners for workloads whose traffic is not captured (`captureMode:
//! NONE`, as on VMs without iptables, and Meshwork's explicit local mesh).
//!
//! - An egress listener becomes `<bind>_<port>` on `bind:port` (bound only
//!   for `captureMode: NONE`; `127.0.0.1` when NONE names no bind): HTTP
//!   through the route configuration `<port>` (Istio names it by port also
//!   for a bound listener), TCP to the one service its `hosts` admit on
//!   that port (the first by host name when several; reported by
//!   [`warnings`]). When the Sidecar has no port-less (catch-all) egress
//!   listener, the egress listeners are the only outbound listeners.
//! - An ingress listener sets the inbound port: `inbound|<port>||` goes to
//!   its `defaultEndpoint`; with `captureMode: NONE` it is a listener
//!   `<bind>_<port>` of its own (`0.0.0.0` when no bind is given) with
//!   the port's PeerAuthentication chains. With ingress
//!   listeners, they alone are the inbound ports.
//! - Without capture there is no `virtualOutbound` / `virtualInbound`: on
//!   a host shared by several sidecars they would all bind 15001/15006.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, Listener};
use meshwork_config::Spec;
use meshwork_config::model::istio::{CaptureMode, IstioEgressListener, Sidecar, SidecarPort};
use meshwork_registry::{Protocol, Service};
use meshwork_xds::pack;

use crate::authn::InboundMtls;
use crate::meta::ProxyMeta;
use crate::names::{BLACK_HOLE, PASSTHROUGH, outbound_cluster};
use crate::pb::{bool_value, chain, socket, tcp_proxy};
use crate::scope::{Scope, egress_admits, sidecar_for};
use crate::snapshot::MeshSnapshot;
use crate::{Generated, Warning};

/// A listener port number from a Sidecar port (0 and out-of-range: none).
fn port_of(p: Option<&SidecarPort>) -> Option<u16> {
    p?.number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

fn declared(p: Option<&SidecarPort>) -> Option<Protocol> {
    p?.protocol
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(Protocol::parse)
}

fn uncaptured(mode: Option<CaptureMode>) -> bool {
    mode == Some(CaptureMode::None)
}

/// A `bind` that is an IP address (a Unix socket or garbage is not).
fn ip_bind(bind: Option<&str>) -> Option<Result<String, ()>> {
    let b = bind.filter(|b| !b.is_empty())?;
    Some(b.parse::<IpAddr>().map(|ip| ip.to_string()).map_err(|_| ()))
}

/// The egress listeners with a port of the Sidecar that applies to `proxy`.
fn egress_with_port(sidecar: &Sidecar) -> Vec<(&IstioEgressListener, u16)> {
    sidecar
        .egress
        .iter()
        .filter_map(|e| Some((e, port_of(e.port.as_ref())?)))
        .collect()
}

/// Adds the bound egress listeners of `proxy`'s Sidecar to `out` (called
/// after the port listeners and `virtualOutbound` are in).
pub(crate) fn egress(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    scope: &Scope<'_>,
    out: &mut Generated,
) {
    let Some(sidecar) = sidecar_for(snap, proxy) else {
        return;
    };
    let listeners = egress_with_port(sidecar);
    if listeners.is_empty() {
        return;
    }
    if sidecar.egress.iter().all(|e| e.port.is_some()) {
        out.listeners
            .retain(|name, _| !name.starts_with("0.0.0.0_"));
    }
    if sidecar.egress.iter().all(|e| uncaptured(e.capture_mode)) {
        out.listeners.remove("virtualOutbound");
    }
    for (e, port) in listeners {
        let bound = uncaptured(e.capture_mode);
        let bind = match ip_bind(e.bind.as_deref()) {
            Some(Ok(ip)) => ip,
            Some(Err(())) => continue, // a Unix socket: reported by `warnings`
            None if bound => "127.0.0.1".into(),
            None => "0.0.0.0".into(),
        };
        let services: Vec<(&Service, Protocol)> = scope
            .services
            .iter()
            .filter(|s| {
                e.hosts
                    .iter()
                    .any(|h| egress_admits(h, s, &proxy.namespace))
            })
            .filter_map(|s| Some((*s, s.port(port)?.protocol)))
            .filter(|(_, p)| *p != Protocol::Udp)
            .collect();
        // A bound listener is its own destination: passing through would loop.
        let fallthrough = if scope.allow_any && !bound {
            PASSTHROUGH
        } else {
            BLACK_HOLE
        };
        let l = Egress {
            bind: &bind,
            port,
            bound,
            declared: declared(e.port.as_ref()),
        }
        .listener(snap, proxy, &services, fallthrough);
        out.listeners.insert(l.name.clone(), pack(&l));
    }
}

/// One egress listener being built.
struct Egress<'a> {
    bind: &'a str,
    port: u16,
    bound: bool,
    declared: Option<Protocol>,
}

impl Egress<'_> {
    fn listener(
        &self,
        snap: &MeshSnapshot,
        proxy: &ProxyMeta,
        services: &[(&Service, Protocol)],
        fallthrough: &str,
    ) -> Listener {
        let (bind, port) = (self.bind, self.port);
        let any = |f: fn(Protocol) -> bool| match self.declared {
            Some(p) => f(p),
            None => services.iter().any(|(_, p)| f(*p)),
        };
        let mut chains = Vec::new();
        let mut default_chain = None;
        if any(Protocol::is_http) {
            chains.push(crate::listener::outbound_http_chain(
                "http", bind, port, None,
            ));
        } else {
            if any(Protocol::is_unsupported) {
                let m = FilterChainMatch {
                    application_protocols: crate::listener::SNIFFED_HTTP.map(String::from).to_vec(),
                    ..Default::default()
                };
                chains.push(crate::listener::outbound_http_chain(
                    "http",
                    bind,
                    port,
                    Some(m),
                ));
            }
            let tcp = services.iter().find(|(_, p)| !p.is_http());
            default_chain = Some(match tcp {
                Some((svc, _)) => {
                    let c = outbound_cluster(port, "", &svc.hostname);
                    let f = crate::tcp_route::default_filter(snap, proxy, svc, port)
                        .unwrap_or_else(|| tcp_proxy(&c, &c));
                    chain(&c, None, f)
                }
                None => chain(
                    "PassthroughFilterChain",
                    None,
                    tcp_proxy(fallthrough, fallthrough),
                ),
            });
        }
        Listener {
            name: format!("{bind}_{port}"),
            address: Some(socket(bind, port)),
            bind_to_port: bool_value(self.bound),
            traffic_direction: 2, // OUTBOUND
            filter_chains: chains,
            default_filter_chain: default_chain,
            ..Default::default()
        }
    }
}

/// Where an ingress listener forwards: its `defaultEndpoint` (`IP:port`),
/// else the application on loopback at the listener's port. `None` for a
/// Unix socket or an endpoint that does not parse (reported by
/// [`warnings`]). Nothing here depends on the proxy's own address, so
/// replicas share the result (the inbound part is cached per workload).
fn default_endpoint(ep: Option<&str>, port: u16) -> Option<(String, u16)> {
    let Some(ep) = ep.filter(|e| !e.is_empty()) else {
        return Some(("127.0.0.1".into(), port));
    };
    let addr: std::net::SocketAddr = ep.parse().ok()?;
    Some((addr.ip().to_string(), addr.port()))
}

/// Applies the ingress listeners of `proxy`'s Sidecar to `out` (called
/// after the inbound clusters and `virtualInbound` are in).
pub(crate) fn ingress(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    mtls: &InboundMtls,
    out: &mut Generated,
) {
    let Some(sidecar) = sidecar_for(snap, proxy) else {
        return;
    };
    let listeners: Vec<_> = sidecar
        .ingress
        .iter()
        .filter_map(|i| Some((i, port_of(i.port.as_ref())?)))
        .collect();
    if listeners.is_empty() {
        return;
    }
    out.clusters.retain(|name, _| !name.starts_with("inbound|"));
    let mut captured = Vec::new();
    for (i, port) in listeners {
        let protocol = declared(i.port.as_ref()).unwrap_or(Protocol::Unsupported);
        let Some((ip, to)) = default_endpoint(i.default_endpoint.as_deref(), port) else {
            continue;
        };
        crate::cluster::inbound_to(proxy, port, protocol, (&ip, to), out);
        if !uncaptured(i.capture_mode) {
            captured.push((port, protocol));
            continue;
        }
        let bind = match ip_bind(i.bind.as_deref()) {
            Some(Ok(ip)) => ip,
            Some(Err(())) => continue,
            None => "0.0.0.0".into(),
        };
        let l = Listener {
            name: format!("{bind}_{port}"),
            address: Some(socket(&bind, port)),
            traffic_direction: 1, // INBOUND
            filter_chains: crate::listener::inbound_port_chains(
                port,
                protocol,
                mtls.for_port(port),
            ),
            ..Default::default()
        };
        out.listeners.insert(l.name.clone(), pack(&l));
    }
    if captured.is_empty() {
        out.listeners.remove("virtualInbound");
    } else {
        crate::listener::inbound(&captured, mtls, out);
    }
}

/// What Sidecar listeners ask for that translation cannot do: Unix socket
/// binds and endpoints, and TCP egress ports that several services share
/// (the listener forwards to the first by host name only).
pub(crate) fn warnings(snap: &MeshSnapshot, out: &mut Vec<Warning>) {
    for r in snap.resources() {
        let Spec::Sidecar(sidecar) = &r.spec else {
            continue;
        };
        let id = format!("{}/{}", r.namespace(), r.name());
        let mut warn = |field: String, detail: &'static str| {
            out.push(Warning {
                kind: "Sidecar",
                resource: id.clone(),
                field,
                detail,
            })
        };
        for (i, e) in sidecar.egress.iter().enumerate() {
            if matches!(ip_bind(e.bind.as_deref()), Some(Err(()))) {
                warn(
                    format!("spec.egress[{i}].bind"),
                    "not an IP address (Unix sockets are not supported): the listener is left out",
                );
            }
            let Some(port) = port_of(e.port.as_ref()) else {
                continue;
            };
            if declared(e.port.as_ref()).is_some_and(|p| p.is_http() || p.is_unsupported()) {
                continue;
            }
            let tcp: Vec<&Service> = snap
                .registry()
                .services()
                .filter(|s| s.visible_to(r.namespace()))
                .filter(|s| e.hosts.iter().any(|h| egress_admits(h, s, r.namespace())))
                .filter(|s| s.port(port).is_some_and(|p| !p.protocol.is_http()))
                .collect();
            if tcp.len() > 1 {
                warn(
                    format!("spec.egress[{i}].port"),
                    "several TCP services on this port: the listener forwards to the first by host name only (name one host, or give each service its own port)",
                );
            }
        }
        for (i, l) in sidecar.ingress.iter().enumerate() {
            if matches!(ip_bind(l.bind.as_deref()), Some(Err(()))) {
                warn(
                    format!("spec.ingress[{i}].bind"),
                    "not an IP address: the listener is left out",
                );
            }
            let ep = l.default_endpoint.as_deref().filter(|e| !e.is_empty());
            if ep.is_some_and(|e| e.parse::<std::net::SocketAddr>().is_err()) {
                warn(
                    format!("spec.ingress[{i}].defaultEndpoint"),
                    "not IP:port (Unix sockets are not supported): the listener is left out",
                );
            }
        }
    }
}
