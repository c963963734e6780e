//! Sidecar `egress` and `ingress` listeners that name a port: Istio's
//! listeners for workloads whose traffic is not captured (`captureMode:
//! NONE`, as on VMs without iptables, and Meshwork's explicit local mesh).
//!
//! - An egress listener becomes `<bind>_<port>` on `bind:port` (bound only
//!   for `captureMode: NONE`; `127.0.0.1` when NONE names no bind): HTTP
//!   through a route configuration holding only the services its `hosts`
//!   admit on that port (Istio scopes each egress listener's routes to its
//!   own hosts), TCP to the one service they admit on that port (the first
//!   by host name when several; reported by [`warnings`]). When the
//!   Sidecar has no port-less (catch-all) egress listener, the egress
//!   listeners are the only outbound listeners.
//! - The route configuration is Istio's `<port>` when one egress listener
//!   names the port (Istio resolves `<port>` to the first egress listener
//!   on it, `GetEgressListenerForRDS`). When several do (different binds),
//!   Istio would serve them all the first one's routes; Meshwork names
//!   each `<bind>:<port>` instead (Istio's form for a route of one bound
//!   listener, as for Unix socket binds and sniffed `<host>:<port>`).
//! - A bound listener whose hosts admit exactly one HTTP service on the
//!   port is that service's address as the workload sees it: its virtual
//!   host also answers `<bind>` and `<bind>:<port>`, as Istio lists a
//!   service's VIP among its domains, so a client that sends the address
//!   it dialled as Host (`curl http://$ORDER_SERVICE_HOST:…`) reaches it.
//! - An ingress listener sets the inbound port: `inbound|<port>||` goes to
//!   its `defaultEndpoint`; with `captureMode: NONE` it is a listener
//!   `<bind>_<port>` of its own (`0.0.0.0` when no bind is given) with
//!   the port's PeerAuthentication chains. With ingress
//!   listeners, they alone are the inbound ports.
//! - Without capture there is no `virtualOutbound` / `virtualInbound`: on
//!   a host shared by several sidecars they would all bind 15001/15006.

use std::collections::HashSet;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
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

/// One port-named egress listener, resolved for a proxy.
struct Egress<'a> {
    bind: String,
    port: u16,
    bound: bool,
    declared: Option<Protocol>,
    /// Its route configuration's name.
    rds: String,
    /// The services its `hosts` admit on the port, with that port's protocol.
    services: Vec<(&'a Service, Protocol)>,
}

/// The port-named egress listeners of `sidecar` for `proxy` (Unix socket
/// binds left out: reported by [`warnings`]).
fn resolve<'a>(sidecar: &Sidecar, proxy: &ProxyMeta, scope: &Scope<'a>) -> Vec<Egress<'a>> {
    let listeners = egress_with_port(sidecar);
    let mut out = Vec::new();
    for &(e, port) in &listeners {
        let bound = uncaptured(e.capture_mode);
        let bind = match ip_bind(e.bind.as_deref()) {
            Some(Ok(ip)) => ip,
            Some(Err(())) => continue,
            None if bound => "127.0.0.1".into(),
            None => "0.0.0.0".into(),
        };
        let shared = listeners.iter().filter(|(_, p)| *p == port).count() > 1;
        let rds = if shared {
            format!("{bind}:{port}")
        } else {
            port.to_string()
        };
        let services = scope
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
        out.push(Egress {
            bind,
            port,
            bound,
            declared: declared(e.port.as_ref()),
            rds,
            services,
        });
    }
    out
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
    if egress_with_port(sidecar).is_empty() {
        return;
    }
    if sidecar.egress.iter().all(|e| e.port.is_some()) {
        out.listeners
            .retain(|name, _| !name.starts_with("0.0.0.0_"));
    }
    if sidecar.egress.iter().all(|e| uncaptured(e.capture_mode)) {
        out.listeners.remove("virtualOutbound");
    }
    for e in resolve(sidecar, proxy, scope) {
        // A bound listener is its own destination: passing through would loop.
        let fallthrough = if scope.allow_any && !e.bound {
            PASSTHROUGH
        } else {
            BLACK_HOLE
        };
        let l = e.listener(snap, proxy, fallthrough);
        out.listeners.insert(l.name.clone(), pack(&l));
    }
}

/// Adds the route configurations of `proxy`'s Sidecar's port-named egress
/// listeners that carry HTTP (called after the scope's `<port>` tables,
/// which a listener's own `<port>` replaces).
pub(crate) fn routes(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    scope: &Scope<'_>,
    out: &mut Generated,
) {
    let Some(sidecar) = sidecar_for(snap, proxy) else {
        return;
    };
    let resolved = resolve(sidecar, proxy, scope);
    if resolved.is_empty() {
        return;
    }
    if sidecar.egress.iter().all(|e| e.port.is_some()) {
        // No `0.0.0.0_<port>` listener is left to use the scope-wide tables.
        let used: HashSet<String> = resolved.iter().map(|e| e.rds.clone()).collect();
        out.routes.retain(|name, _| used.contains(name));
        out.virtual_hosts.retain(|name, _| {
            name.split_once('/')
                .is_some_and(|(rc, _)| used.contains(rc))
        });
    }
    for e in resolved {
        if !e.carries_http() {
            continue;
        }
        let http: Vec<&Service> = e
            .services
            .iter()
            .filter(|(_, p)| p.is_http() || p.is_unsupported())
            .map(|(s, _)| *s)
            .collect();
        let mut taken = HashSet::new();
        let mut virtual_hosts: Vec<_> = http
            .iter()
            .filter_map(|svc| crate::route::virtual_host(snap, proxy, svc, e.port, &mut taken))
            .collect();
        let unspecified = e.bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if let ([_], [vh]) = (http.as_slice(), virtual_hosts.as_mut_slice())
            && e.bound
            && !unspecified
        {
            for d in [e.bind.clone(), format!("{}:{}", e.bind, e.port)] {
                if taken.insert(d.clone()) {
                    vh.domains.push(d);
                }
            }
        }
        if !taken.contains("*") {
            virtual_hosts.push(crate::route::fallback(scope.allow_any && !e.bound));
        }
        // Replace whatever the scope-wide tables put under this name.
        out.routes.remove(&e.rds);
        let prefix = crate::vhds::resource_name(&e.rds, "");
        out.virtual_hosts.retain(|k, _| !k.starts_with(&prefix));
        let rc = RouteConfiguration {
            name: e.rds.clone(),
            virtual_hosts,
            validate_clusters: bool_value(false),
            ..Default::default()
        };
        crate::vhds::emit(rc, proxy.vhds, out);
    }
}

impl Egress<'_> {
    /// Whether a protocol test holds for the declared protocol, else for
    /// any admitted service's.
    fn any(&self, f: fn(Protocol) -> bool) -> bool {
        match self.declared {
            Some(p) => f(p),
            None => self.services.iter().any(|(_, p)| f(*p)),
        }
    }

    /// Whether the listener has an HTTP chain (explicit or sniffed).
    fn carries_http(&self) -> bool {
        self.any(Protocol::is_http) || self.any(Protocol::is_unsupported)
    }

    fn listener(&self, snap: &MeshSnapshot, proxy: &ProxyMeta, fallthrough: &str) -> Listener {
        let (bind, port) = (self.bind.as_str(), self.port);
        let mut chains = Vec::new();
        let mut default_chain = None;
        if self.any(Protocol::is_http) {
            chains.push(crate::listener::outbound_http_chain(
                "http", bind, port, &self.rds, None,
            ));
        } else {
            if self.any(Protocol::is_unsupported) {
                let m = FilterChainMatch {
                    application_protocols: crate::listener::SNIFFED_HTTP.map(String::from).to_vec(),
                    ..Default::default()
                };
                chains.push(crate::listener::outbound_http_chain(
                    "http",
                    bind,
                    port,
                    &self.rds,
                    Some(m),
                ));
            }
            let tcp = self.services.iter().find(|(_, p)| !p.is_http());
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
