//! Outbound route configurations (RDS), one per HTTP port, named by the
//! port, with a virtual host `host:port` per service.

use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, VirtualHost,
};
use meshwork_registry::Service;

use crate::Generated;
use crate::meta::ProxyMeta;
use crate::names::{PASSTHROUGH, domains, outbound_cluster};
use crate::pb::bool_value;
use crate::scope::Scope;
use crate::snapshot::MeshSnapshot;
use crate::vs::{default_outbound_route, default_route, http_routes};

/// The services with an HTTP (or detected) port `port`, by port.
pub(crate) fn http_ports<'a>(scope: &Scope<'a>) -> BTreeMap<u16, Vec<&'a Service>> {
    let mut out: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    for svc in &scope.services {
        for p in &svc.ports {
            if p.protocol.is_http() || p.protocol.is_unsupported() {
                out.entry(p.port).or_default().push(svc);
            }
        }
    }
    out
}

/// The virtual host of one service port, its routes from the service's
/// VirtualService or the default route. Domains already taken by an
/// earlier virtual host are left out (Envoy rejects duplicates).
pub(crate) fn virtual_host(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    svc: &Service,
    port: u16,
    taken: &mut HashSet<String>,
) -> Option<VirtualHost> {
    let domains: Vec<String> = domains(svc, port, &proxy.namespace)
        .into_iter()
        .filter(|d| taken.insert(d.to_ascii_lowercase()))
        .collect();
    if domains.is_empty() {
        return None;
    }
    let routes = match snap.virtual_service(&svc.hostname, &proxy.namespace) {
        Some(vs) => http_routes(snap, &vs, port, proxy),
        None => vec![default_outbound_route(&outbound_cluster(
            port,
            "",
            &svc.hostname,
        ))],
    };
    let mut vh = VirtualHost {
        name: format!("{}:{port}", svc.hostname),
        domains,
        routes,
        include_request_attempt_count: true,
        ..Default::default()
    };
    // DestinationRule consistentHash keys the route's clusters.
    crate::dr::add_hash_policies(snap, &proxy.namespace, &mut vh);
    Some(vh)
}

/// Route configurations `<port>` for every HTTP port a sidecar listens on,
/// then those of its Sidecar's port-named egress listeners.
pub(crate) fn outbound(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    scope: &Scope<'_>,
    out: &mut Generated,
) {
    for (port, services) in http_ports(scope) {
        let mut taken = HashSet::new();
        let mut virtual_hosts: Vec<VirtualHost> = services
            .iter()
            .filter_map(|svc| virtual_host(snap, proxy, svc, port, &mut taken))
            .collect();
        if !taken.contains("*") {
            virtual_hosts.push(fallback(scope.allow_any));
        }
        let rc = RouteConfiguration {
            name: port.to_string(),
            virtual_hosts,
            validate_clusters: bool_value(false),
            ..Default::default()
        };
        crate::vhds::emit(rc, proxy.vhds, out);
    }
    crate::sidecar_listeners::routes(snap, proxy, scope, out);
}

/// Istio's catch-all virtual host: `allow_any` passes unknown hosts through,
/// `block_all` answers 502.
pub(crate) fn fallback(allow_any: bool) -> VirtualHost {
    let (name, route) = if allow_any {
        let mut r = default_route(PASSTHROUGH);
        r.name = "allow_any".into();
        ("allow_any", r)
    } else {
        let r = Route {
            name: "block_all".into(),
            r#match: default_route(PASSTHROUGH).r#match,
            action: Some(Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            })),
            ..Default::default()
        };
        ("block_all", r)
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![route],
        include_request_attempt_count: true,
        ..Default::default()
    }
}
