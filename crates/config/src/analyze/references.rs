//! IST0101 for VirtualServices: unknown destination hosts, gateways and
//! subsets.

use super::index::{Index, fqdn};
use crate::diag::{Diagnostic, codes};
use crate::model::istio::{Destination, VirtualService};
use crate::node::FieldPath;
use crate::resource::Resource;

/// Every destination of a VirtualService, with its field path.
pub fn destinations(vs: &VirtualService) -> Vec<(FieldPath, &Destination)> {
    let spec = FieldPath::root().key("spec");
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        let p = spec.key("http").index(i);
        for (j, d) in r.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                out.push((p.key("route").index(j).key("destination"), dest));
            }
        }
        if let Some(m) = &r.mirror {
            out.push((p.key("mirror"), m));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            if let Some(dest) = &m.destination {
                out.push((p.key("mirrors").index(j).key("destination"), dest));
            }
        }
    }
    for (field, routes) in [
        ("tcp", vs.tcp.iter().map(|t| &t.route).collect::<Vec<_>>()),
        ("tls", vs.tls.iter().map(|t| &t.route).collect()),
    ] {
        for (i, route) in routes.into_iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                if let Some(dest) = &d.destination {
                    out.push((
                        spec.key(field)
                            .index(i)
                            .key("route")
                            .index(j)
                            .key("destination"),
                        dest,
                    ));
                }
            }
        }
    }
    out
}

/// Check one VirtualService's references.
pub fn virtual_service(
    res: &Resource,
    vs: &VirtualService,
    ix: &Index<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let ns = res.namespace();
    let spec = FieldPath::root().key("spec");
    let mut gateway_refs: Vec<(FieldPath, &str)> = vs
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (spec.key("gateways").index(i), g.as_str()))
        .collect();
    for (i, r) in vs.http.iter().enumerate() {
        for (j, m) in r.r#match.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_refs.push((
                    spec.key("http")
                        .index(i)
                        .key("match")
                        .index(j)
                        .key("gateways")
                        .index(k),
                    g,
                ));
            }
        }
    }
    for (path, g) in gateway_refs {
        if g != "mesh" && ix.gateway(g, ns).is_none() {
            out.push(res.diag(
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                &path,
                format!("Referenced gateway not found: {g:?}"),
            ));
        }
    }
    for (path, dest) in destinations(vs) {
        let host = fqdn(&dest.host, ns);
        if !ix.host_known(&host) {
            out.push(res.diag(
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                &path.key("host"),
                format!("Referenced host not found: {:?}", dest.host),
            ));
            continue;
        }
        let Some(subset) = dest.subset.as_deref() else {
            continue;
        };
        let found = ix
            .destination_rules
            .iter()
            .filter(|(_, _, h)| *h == host)
            .any(|(_, dr, _)| dr.subsets.iter().any(|s| s.name == subset));
        if !found {
            out.push(res.diag(
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                &path.key("subset"),
                format!(
                    "Referenced host+subset in destinationrule not found: \"{}+{subset}\"",
                    dest.host
                ),
            ));
        }
    }
}
