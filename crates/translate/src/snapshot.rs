//! The mesh-wide input of translation, indexed once per change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meshwork_config::model::istio::{DestinationRule, Sidecar, VirtualService};
use meshwork_config::{Resource, Spec};
use meshwork_registry::{Registry, Service, fqdn};

use crate::change::{Change, virtual_services_only};

/// Istio's root namespace: a Sidecar there without a selector is the mesh default.
pub(crate) const ROOT_NAMESPACE: &str = "istio-system";

/// Configuration + registry + indexes, built once per change so that
/// generating one proxy's resources is cheap.
#[derive(Debug)]
pub struct MeshSnapshot {
    version: u64,
    /// Unique among the snapshots of this process (caches key on it).
    id: u64,
    /// Proxy label keys that some configuration consults (Sidecar and
    /// DestinationRule workload selectors, VirtualService source labels).
    consulted_labels: Vec<String>,
    resources: Vec<Resource>,
    /// Shared with the next snapshot when its registry inputs are unchanged.
    registry: Arc<Registry>,
    /// How this snapshot differs from the one it was derived from, when
    /// the generation cache may keep what that change cannot affect.
    change: Option<Change>,
    /// Host names of the services with a workload selector, by namespace
    /// (the candidates for a proxy's inbound ports), in registry order.
    selecting: HashMap<String, Vec<String>>,
    /// Mesh VirtualServices by resolved host (exact hosts).
    vs_by_host: HashMap<String, Vec<usize>>,
    /// Mesh VirtualServices with wildcard hosts: (suffix after `*`, index).
    vs_wildcard: Vec<(String, usize)>,
    /// DestinationRules by resolved host.
    dr_by_host: HashMap<String, Vec<usize>>,
    /// DestinationRules with wildcard hosts: (suffix after `*`, index).
    dr_wildcard: Vec<(String, usize)>,
    /// Sidecars by namespace.
    sidecars_by_ns: HashMap<String, Vec<usize>>,
}

/// A VirtualService with the namespace it lives in.
pub(crate) struct VsRef<'a> {
    pub vs: &'a VirtualService,
    pub namespace: &'a str,
}

/// Whether a resource exported to `export_to` from `owner` is visible in `ns`.
pub(crate) fn exported(export_to: &[String], owner: &str, ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == ns || (e == "." && owner == ns))
}

fn applies_to_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

impl MeshSnapshot {
    /// Indexes `resources` (VirtualServices and DestinationRules by host,
    /// Sidecars by namespace) next to `registry`.
    pub fn new(version: u64, resources: Vec<Resource>, registry: Registry) -> Self {
        Self::with_registry(version, resources, Arc::new(registry))
    }

    /// As [`MeshSnapshot::new`], with a registry that may be shared with
    /// other snapshots.
    pub fn with_registry(version: u64, resources: Vec<Resource>, registry: Arc<Registry>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let selecting = selecting(&registry);
        let mut snap = MeshSnapshot {
            version,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            consulted_labels: consulted_labels(&resources),
            resources,
            registry,
            change: None,
            selecting,
            vs_by_host: HashMap::new(),
            vs_wildcard: Vec::new(),
            dr_by_host: HashMap::new(),
            dr_wildcard: Vec::new(),
            sidecars_by_ns: HashMap::new(),
        };
        for (i, r) in snap.resources.iter().enumerate() {
            let ns = r.namespace();
            match &r.spec {
                Spec::VirtualService(vs) if applies_to_mesh(&vs.gateways) => {
                    for h in &vs.hosts {
                        index(&mut snap.vs_by_host, &mut snap.vs_wildcard, h, ns, i);
                    }
                }
                Spec::DestinationRule(dr) => {
                    index(&mut snap.dr_by_host, &mut snap.dr_wildcard, &dr.host, ns, i);
                }
                Spec::Sidecar(_) => snap
                    .sidecars_by_ns
                    .entry(ns.to_string())
                    .or_default()
                    .push(i),
                _ => {}
            }
        }
        snap
    }

    /// The snapshot after this one: as [`MeshSnapshot::with_registry`],
    /// also noting how it differs from `self` so that a
    /// [`crate::GenerationCache`] that last served `self` re-translates
    /// only what the change can affect. Pass this snapshot's own registry
    /// ([`MeshSnapshot::shared_registry`]) when its inputs are unchanged:
    /// only then is any work kept. The output is the same either way.
    pub fn next(&self, version: u64, resources: Vec<Resource>, registry: Arc<Registry>) -> Self {
        let mut next = Self::with_registry(version, resources, registry);
        if Arc::ptr_eq(&self.registry, &next.registry)
            && self.consulted_labels == next.consulted_labels
        {
            next.change = virtual_services_only(self.id, &self.resources, &next.resources);
        }
        next
    }

    /// The registry, shared: pass it to [`MeshSnapshot::next`] when the
    /// registry's inputs did not change.
    pub fn shared_registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// How this snapshot differs from the one it was derived from, if
    /// caches may keep what the change cannot affect.
    pub(crate) fn change(&self) -> Option<&Change> {
        self.change.as_ref()
    }

    /// The services of namespace `ns` that select workloads by label, in
    /// registry order.
    pub(crate) fn selecting(&self, ns: &str) -> impl Iterator<Item = &Service> {
        self.selecting
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|h| self.registry.service(h))
    }

    /// The configuration version this snapshot was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The service registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// An id no other snapshot of this process has.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The proxy label keys any configuration consults when choosing what a
    /// proxy's outbound configuration is, sorted.
    pub(crate) fn consulted_labels(&self) -> &[String] {
        &self.consulted_labels
    }

    /// Every resource.
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The VirtualService for `host` as seen from `proxy_ns`: exact hosts
    /// before wildcards, the proxy's namespace first, then configuration order.
    pub(crate) fn virtual_service(&self, host: &str, proxy_ns: &str) -> Option<VsRef<'_>> {
        let pick = |candidates: &mut dyn Iterator<Item = usize>| -> Option<VsRef<'_>> {
            let list: Vec<VsRef<'_>> = candidates
                .filter_map(|i| {
                    let r = &self.resources[i];
                    match &r.spec {
                        Spec::VirtualService(vs)
                            if exported(&vs.export_to, r.namespace(), proxy_ns) =>
                        {
                            Some(VsRef {
                                vs,
                                namespace: r.namespace(),
                            })
                        }
                        _ => None,
                    }
                })
                .collect();
            let own = list.iter().position(|v| v.namespace == proxy_ns);
            let mut list = list;
            match own {
                Some(p) => Some(list.swap_remove(p)),
                None => list.into_iter().next(),
            }
        };
        if let Some(found) = self
            .vs_by_host
            .get(host)
            .and_then(|l| pick(&mut l.iter().copied()))
        {
            return Some(found);
        }
        pick(&mut wildcard_matches(&self.vs_wildcard, host))
    }

    /// The DestinationRule for `host` as seen from `proxy_ns`: the proxy's
    /// namespace first, then the service's, then any other exported to it.
    pub(crate) fn destination_rule(
        &self,
        host: &str,
        proxy_ns: &str,
        service_ns: &str,
    ) -> Option<&DestinationRule> {
        let mut list: Vec<(&str, &DestinationRule)> = self
            .dr_by_host
            .get(host)
            .into_iter()
            .flatten()
            .copied()
            .chain(wildcard_matches(&self.dr_wildcard, host))
            .filter_map(|i| {
                let r = &self.resources[i];
                match &r.spec {
                    Spec::DestinationRule(dr)
                        if dr.workload_selector.is_none()
                            && exported(&dr.export_to, r.namespace(), proxy_ns) =>
                    {
                        Some((r.namespace(), &**dr))
                    }
                    _ => None,
                }
            })
            .collect();
        let rank = |ns: &str| {
            if ns == proxy_ns {
                0
            } else if ns == service_ns {
                1
            } else {
                2
            }
        };
        list.sort_by_key(|(ns, _)| rank(ns));
        list.first().map(|(_, dr)| *dr)
    }

    /// Sidecar resources of a namespace.
    pub(crate) fn sidecars(&self, ns: &str) -> impl Iterator<Item = &Sidecar> {
        self.sidecars_by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|i| match &self.resources[*i].spec {
                Spec::Sidecar(s) => Some(&**s),
                _ => None,
            })
    }
}

/// Host names of services with a workload selector, by namespace.
fn selecting(registry: &Registry) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for svc in registry.services().filter(|s| !s.selector.is_empty()) {
        out.entry(svc.namespace.clone())
            .or_default()
            .push(svc.hostname.clone());
    }
    out
}

/// Label keys of Sidecar and DestinationRule workload selectors and of
/// VirtualService `sourceLabels` (HTTP, TCP and TLS matches).
fn consulted_labels(resources: &[Resource]) -> Vec<String> {
    let mut keys: BTreeSet<&String> = BTreeSet::new();
    for r in resources {
        match &r.spec {
            Spec::Sidecar(s) => {
                keys.extend(s.workload_selector.iter().flat_map(|w| w.labels.keys()))
            }
            Spec::DestinationRule(dr) => keys.extend(
                dr.workload_selector
                    .iter()
                    .flat_map(|w| w.match_labels.keys()),
            ),
            Spec::VirtualService(vs) => {
                let http = vs
                    .http
                    .iter()
                    .flat_map(|h| &h.r#match)
                    .map(|m| &m.source_labels);
                let tcp = vs
                    .tcp
                    .iter()
                    .flat_map(|t| &t.r#match)
                    .map(|m| &m.source_labels);
                let tls = vs
                    .tls
                    .iter()
                    .flat_map(|t| &t.r#match)
                    .map(|m| &m.source_labels);
                keys.extend(http.chain(tcp).chain(tls).flat_map(BTreeMap::keys));
            }
            _ => {}
        }
    }
    keys.into_iter().cloned().collect()
}

fn index(
    exact: &mut HashMap<String, Vec<usize>>,
    wildcard: &mut Vec<(String, usize)>,
    host: &str,
    ns: &str,
    i: usize,
) {
    let host = fqdn(host, ns).to_ascii_lowercase();
    if let Some(suffix) = host.strip_prefix('*') {
        wildcard.push((suffix.to_string(), i));
    } else if !host.is_empty() {
        exact.entry(host).or_default().push(i);
    }
}

fn wildcard_matches<'a>(
    list: &'a [(String, usize)],
    host: &'a str,
) -> impl Iterator<Item = usize> + 'a {
    let mut hits: Vec<(usize, usize)> = list
        .iter()
        .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
        .map(|(suffix, i)| (suffix.len(), *i))
        .collect();
    // The most specific wildcard first, then configuration order.
    hits.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    hits.into_iter().map(|(_, i)| i)
}
