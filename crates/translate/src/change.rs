//! How a snapshot differs from the one it was derived from
//! ([`crate::MeshSnapshot::next`]), so that the generation cache can keep
//! what the change cannot affect instead of translating everything again.
//!
//! Only one kind of change is recognised, the common one: mesh
//! VirtualServices edited, added or removed, with the registry (the very
//! same `Arc`), every other resource and the consulted labels unchanged.
//! Clusters, endpoints and inbound parts then stay as they were, outbound
//! listeners too unless a changed VirtualService has TCP or TLS routes, and
//! only the route tables holding a changed host are translated again.
//! Anything else (wildcard hosts, delegation, other kinds) is no
//! [`Change`]: the cache starts over, as it always did.

use std::collections::{HashMap, HashSet};

use meshwork_config::model::istio::VirtualService;
use meshwork_config::{Kind, Resource, Spec};
use meshwork_registry::fqdn;

/// A VirtualService-only change from the snapshot `base`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    /// The id of the snapshot this one was compared with.
    pub base: u64,
    /// Hosts (lower-case FQDNs) some changed VirtualService names, before
    /// or after the change: only virtual hosts of these differ.
    pub vs_hosts: HashSet<String>,
    /// Whether a changed VirtualService has TCP or TLS routes, which the
    /// outbound listeners carry.
    pub vs_l4: bool,
}

/// What translation reads of a resource (not where it was written).
fn same(a: &Resource, b: &Resource) -> bool {
    a.kind == b.kind && a.meta == b.meta && a.spec == b.spec
}

fn virtual_service(r: &Resource) -> Option<&VirtualService> {
    match &r.spec {
        Spec::VirtualService(vs) => Some(vs),
        _ => None,
    }
}

type Key<'a> = (&'a str, &'a str);

/// The VirtualServices of `resources` by namespace and name, in order.
fn by_key(resources: &[Resource]) -> (Vec<Key<'_>>, HashMap<Key<'_>, Vec<&Resource>>) {
    let mut order = Vec::new();
    let mut map: HashMap<Key<'_>, Vec<&Resource>> = HashMap::new();
    for r in resources.iter().filter(|r| r.kind == Kind::VirtualService) {
        let key = (r.namespace(), r.name());
        order.push(key);
        map.entry(key).or_default().push(r);
    }
    (order, map)
}

/// The VirtualService-only change from `old` to `new` (`base` is the old
/// snapshot's id), or `None` when anything else changed or the change
/// reaches hosts it cannot name (wildcards, delegation).
pub(crate) fn virtual_services_only<'a>(
    base: u64,
    old: &'a [Resource],
    new: &'a [Resource],
) -> Option<Change> {
    let others = |rs: &'a [Resource]| rs.iter().filter(|r| r.kind != Kind::VirtualService);
    if others(old).count() != others(new).count()
        || others(old).zip(others(new)).any(|(a, b)| !same(a, b))
    {
        return None;
    }
    // Delegation ties a root's routes to another VirtualService by name.
    let delegates = |rs: &[Resource]| {
        rs.iter()
            .filter_map(virtual_service)
            .any(|vs| vs.hosts.is_empty() || vs.http.iter().any(|h| h.delegate.is_some()))
    };
    let ((old_order, old_map), (new_order, new_map)) = (by_key(old), by_key(new));
    let unchanged = |k: &Key<'_>| match (old_map.get(k), new_map.get(k)) {
        (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        _ => false,
    };
    // Unchanged VirtualServices keep their relative order, so a host
    // none of the changed ones names picks the same one as before.
    let same_order = old_order
        .iter()
        .filter(|k| unchanged(k))
        .eq(new_order.iter().filter(|k| unchanged(k)));
    if !same_order {
        return None;
    }
    let mut change = Change {
        base,
        vs_hosts: HashSet::new(),
        vs_l4: false,
    };
    let all_kept = |order: &[Key<'_>]| order.iter().all(&unchanged);
    if all_kept(&old_order) && all_kept(&new_order) {
        return Some(change);
    }
    if delegates(old) || delegates(new) {
        return None;
    }
    let changed = old_map
        .iter()
        .chain(&new_map)
        .filter(|(k, _)| !unchanged(k))
        .flat_map(|(_, rs)| rs.iter());
    for r in changed {
        let Some(vs) = virtual_service(r) else {
            continue;
        };
        change.vs_l4 |= !vs.tcp.is_empty() || !vs.tls.is_empty();
        for h in &vs.hosts {
            let host = fqdn(h, r.namespace()).to_ascii_lowercase();
            if host.starts_with('*') {
                return None;
            }
            change.vs_hosts.insert(host);
        }
    }
    Some(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Vec<Resource> {
        let loaded = meshwork_config::load_str("t.yaml".as_ref(), yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        loaded.resources
    }

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: ns}\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n";

    fn vs(name: &str, host: &str, weight: u32) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: a.example.com}}\n      weight: {weight}\n    - destination: {{host: b.example.com}}\n      weight: {}\n",
            100 - weight
        )
    }

    #[test]
    fn an_edited_virtual_service_names_its_hosts() {
        let old = load(&format!(
            "{SE}{}{}",
            vs("x", "a.example.com", 50),
            vs("y", "b", 50)
        ));
        let new = load(&format!(
            "{SE}{}{}",
            vs("x", "a.example.com", 90),
            vs("y", "b", 50)
        ));
        let c = virtual_services_only(7, &old, &new).expect("a VirtualService-only change");
        assert_eq!(c.base, 7);
        assert_eq!(c.vs_hosts, HashSet::from(["a.example.com".to_string()]));
        assert!(!c.vs_l4);
        let same = virtual_services_only(7, &old, &old).expect("no change");
        assert!(same.vs_hosts.is_empty());
    }

    #[test]
    fn added_removed_and_moved_virtual_services() {
        let old = load(&format!("{SE}{}", vs("x", "a.example.com", 50)));
        let new = load(&format!(
            "{SE}{}{}",
            vs("x", "a.example.com", 50),
            vs("y", "b", 50)
        ));
        let hosts = |c: Option<Change>| {
            let mut h: Vec<String> = c.expect("change").vs_hosts.into_iter().collect();
            h.sort();
            h
        };
        assert_eq!(
            hosts(virtual_services_only(1, &old, &new)),
            ["b.ns.svc.cluster.local"]
        );
        assert_eq!(
            hosts(virtual_services_only(1, &new, &old)),
            ["b.ns.svc.cluster.local"]
        );
        // Two unchanged ones swapped: their hosts may pick differently.
        let a = load(&format!("{SE}{}{}", vs("x", "c", 50), vs("y", "c", 60)));
        let b = load(&format!("{SE}{}{}", vs("y", "c", 60), vs("x", "c", 50)));
        assert_eq!(virtual_services_only(1, &a, &b), None);
    }

    #[test]
    fn anything_else_starts_over() {
        let old = load(&format!("{SE}{}", vs("x", "a.example.com", 50)));
        let other_se = SE.replace("a.example.com]", "a.example.org]");
        let new = load(&format!("{other_se}{}", vs("x", "a.example.com", 50)));
        assert_eq!(virtual_services_only(1, &old, &new), None);
        let wildcard = load(&format!("{SE}{}", vs("x", "'*.example.com'", 50)));
        assert_eq!(virtual_services_only(1, &old, &wildcard), None);
        let tcp = format!(
            "{SE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: x, namespace: ns}}\nspec:\n  hosts: [a.example.com]\n  tcp:\n  - route: [{{destination: {{host: a.example.com}}}}]\n"
        );
        let c = virtual_services_only(1, &old, &load(&tcp)).expect("change");
        assert!(c.vs_l4);
    }
}
