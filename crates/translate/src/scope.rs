//! Which services a proxy receives: `exportTo` and the Sidecar resource
//! that applies to it.

use meshwork_config::model::istio::{OutboundTrafficPolicyMode, Sidecar};
use meshwork_registry::{Protocol, Service};

use crate::meta::ProxyMeta;
use crate::snapshot::{MeshSnapshot, ROOT_NAMESPACE};

/// What one proxy sees of the mesh.
pub(crate) struct Scope<'a> {
    /// Visible services, ordered by host name (UDP-only ports never matter).
    pub services: Vec<&'a Service>,
    /// Unknown destinations pass through (`ALLOW_ANY`) or are refused
    /// (`REGISTRY_ONLY`).
    pub allow_any: bool,
}

/// The Sidecar that applies to a proxy: one of its namespace selecting its
/// labels, else one of its namespace without a selector, else the root
/// namespace's default.
pub(crate) fn sidecar_for<'a>(snap: &'a MeshSnapshot, proxy: &ProxyMeta) -> Option<&'a Sidecar> {
    let selects = |s: &Sidecar| {
        s.workload_selector.as_ref().is_some_and(|w| {
            !w.labels.is_empty() && w.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
    };
    let unselected = |s: &&Sidecar| {
        s.workload_selector
            .as_ref()
            .is_none_or(|w| w.labels.is_empty())
    };
    snap.sidecars(&proxy.namespace)
        .find(|s| selects(s))
        .or_else(|| snap.sidecars(&proxy.namespace).find(unselected))
        .or_else(|| snap.sidecars(ROOT_NAMESPACE).find(unselected))
}

/// Whether an egress `namespace/host` entry admits a service.
pub(crate) fn egress_admits(entry: &str, svc: &Service, proxy_ns: &str) -> bool {
    let (ns, host) = entry.split_once('/').unwrap_or(("*", entry));
    let ns_ok = match ns {
        "*" => true,
        "." => svc.namespace == proxy_ns,
        "~" => false,
        other => svc.namespace == other,
    };
    if !ns_ok {
        return false;
    }
    let host = host.to_ascii_lowercase();
    match host.strip_prefix('*') {
        Some(suffix) => svc.hostname.len() > suffix.len() && svc.hostname.ends_with(suffix),
        None => svc.hostname == host,
    }
}

impl<'a> Scope<'a> {
    /// The scope of `proxy` in `snap`.
    pub fn for_proxy(snap: &'a MeshSnapshot, proxy: &ProxyMeta) -> Scope<'a> {
        let sidecar = sidecar_for(snap, proxy);
        let hosts: Option<Vec<&str>> = sidecar.filter(|s| !s.egress.is_empty()).map(|s| {
            s.egress
                .iter()
                .flat_map(|e| e.hosts.iter().map(String::as_str))
                .collect()
        });
        let allow_any = sidecar
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
            .is_none_or(|m| m == OutboundTrafficPolicyMode::AllowAny);
        let services = snap
            .registry()
            .services()
            .filter(|s| s.visible_to(&proxy.namespace))
            .filter(|s| s.ports.iter().any(|p| p.protocol != Protocol::Udp))
            .filter(|s| {
                hosts
                    .as_ref()
                    .is_none_or(|h| h.iter().any(|e| egress_admits(e, s, &proxy.namespace)))
            })
            .collect();
        Scope {
            services,
            allow_any,
        }
    }
}
