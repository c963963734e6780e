//! What the analyzers look things up in: services by host, workloads by
//! labels, gateways by name, destination rules by host.

use std::collections::BTreeMap;

use crate::model::istio::{DestinationRule, Gateway, PeerAuthentication};
use crate::model::k8s::ServiceSpec;
use crate::resource::{Kind, Resource, Spec};

/// The DNS suffix of Kubernetes services.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";
/// Istio's root namespace: mesh-wide policies live here.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The FQDN of `host` as written in namespace `ns`: short names (no dot)
/// are expanded to `host.ns.svc.cluster.local`, as Istio does.
pub fn fqdn(host: &str, ns: &str) -> String {
    if host.contains('.') || host.contains('*') || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_ascii_lowercase()
    } else {
        format!("{}.{ns}.{CLUSTER_DOMAIN}", host.to_ascii_lowercase())
    }
}

/// Whether hosts `a` and `b` overlap (either may be a wildcard).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    fn covers(wild: &str, h: &str) -> bool {
        match wild.strip_prefix('*') {
            Some("") => true,
            Some(suffix) => {
                h.ends_with(suffix) || h.strip_prefix('*').is_some_and(|hs| hs.ends_with(suffix))
            }
            None => wild == h,
        }
    }
    covers(a, b) || covers(b, a)
}

/// Whether every label of `selector` is in `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Kubernetes Service.
pub struct ServiceInfo<'a> {
    /// The resource.
    pub res: &'a Resource,
    /// Its spec.
    pub spec: &'a ServiceSpec,
}

/// A workload: a Deployment's pods or a WorkloadEntry.
pub struct Workload<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its (pod) labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// Lookup tables over one set of resources.
#[derive(Default)]
pub struct Index<'a> {
    /// Services by FQDN.
    pub services: BTreeMap<String, ServiceInfo<'a>>,
    /// Hosts declared by ServiceEntries (may be wildcards).
    pub entry_hosts: Vec<String>,
    /// Workloads.
    pub workloads: Vec<Workload<'a>>,
    /// Gateways by `namespace/name`.
    pub gateways: BTreeMap<String, (&'a Resource, &'a Gateway)>,
    /// DestinationRules with their host's FQDN.
    pub destination_rules: Vec<(&'a Resource, &'a DestinationRule, String)>,
    /// PeerAuthentications.
    pub peer_authns: Vec<(&'a Resource, &'a PeerAuthentication)>,
}

impl<'a> Index<'a> {
    /// Build the index.
    pub fn new(resources: &'a [Resource]) -> Self {
        let mut ix = Index::default();
        for r in resources {
            let ns = r.namespace();
            match &r.spec {
                Spec::Service(s) => {
                    ix.services
                        .insert(fqdn(r.name(), ns), ServiceInfo { res: r, spec: s });
                }
                Spec::ServiceEntry(se) => {
                    ix.entry_hosts
                        .extend(se.hosts.iter().map(|h| h.to_ascii_lowercase()));
                }
                Spec::Deployment(d) => ix.workloads.push(Workload {
                    namespace: ns,
                    labels: &d.template.metadata.labels,
                }),
                Spec::WorkloadEntry(we) => ix.workloads.push(Workload {
                    namespace: ns,
                    labels: &we.labels,
                }),
                Spec::Gateway(g) => {
                    ix.gateways.insert(format!("{ns}/{}", r.name()), (r, g));
                }
                Spec::DestinationRule(dr) => {
                    ix.destination_rules.push((r, dr, fqdn(&dr.host, ns)));
                }
                Spec::PeerAuthentication(pa) => ix.peer_authns.push((r, pa)),
                _ => {}
            }
            debug_assert!(r.kind != Kind::Namespace || ns.is_empty());
        }
        ix
    }

    /// Whether `host` (an FQDN, maybe a wildcard) names a known service.
    pub fn host_known(&self, host: &str) -> bool {
        self.services.contains_key(host)
            || self.entry_hosts.iter().any(|h| hosts_overlap(h, host))
            || (host.starts_with('*') && self.services.keys().any(|s| hosts_overlap(host, s)))
    }

    /// The workloads a Service selects.
    pub fn service_workloads(&self, svc: &ServiceInfo<'_>) -> Vec<&Workload<'a>> {
        if svc.spec.selector.is_empty() {
            return Vec::new();
        }
        let ns = svc.res.namespace();
        self.workloads
            .iter()
            .filter(|w| w.namespace == ns && selects(&svc.spec.selector, w.labels))
            .collect()
    }

    /// The Gateway a VirtualService in `ns` refers to as `name`
    /// (`name`, `namespace/name`, or a legacy `name.namespace.svc…`).
    pub fn gateway(&self, name: &str, ns: &str) -> Option<&(&'a Resource, &'a Gateway)> {
        let key = match name.split_once('/') {
            Some((gns, gname)) => format!("{gns}/{gname}"),
            None => match name.split_once('.') {
                Some((gname, rest)) => format!("{}/{gname}", rest.split('.').next().unwrap_or(ns)),
                None => format!("{ns}/{name}"),
            },
        };
        self.gateways.get(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_helpers() {
        assert_eq!(
            fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(fqdn("www.example.com", "default"), "www.example.com");
        assert!(hosts_overlap("*", "a.b"));
        assert!(hosts_overlap("*.example.com", "a.example.com"));
        assert!(hosts_overlap("a.example.com", "*.example.com"));
        assert!(!hosts_overlap("*.example.com", "a.example.org"));
        assert!(!hosts_overlap("a.com", "b.com"));
    }
}
