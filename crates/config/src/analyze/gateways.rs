//! IST0145: gateways that bind the same selector, port and host.

use super::index::{Index, hosts_overlap};
use crate::diag::{Diagnostic, codes};
use crate::node::FieldPath;

/// Report every server that another server (in another Gateway, or earlier
/// in the same one) already claims with the same selector, port and host.
pub fn conflicting(ix: &Index<'_>, out: &mut Vec<Diagnostic>) {
    let gws: Vec<_> = ix.gateways.values().collect();
    for (a_idx, (a_res, a)) in gws.iter().enumerate() {
        for (i, sa) in a.servers.iter().enumerate() {
            let Some(port_a) = sa.port.as_ref().and_then(|p| p.number) else {
                continue;
            };
            let mut clashes = Vec::new();
            let mut hosts = Vec::new();
            for (b_idx, (b_res, b)) in gws.iter().enumerate() {
                if a.selector != b.selector {
                    continue;
                }
                for (j, sb) in b.servers.iter().enumerate() {
                    if (b_idx, j) == (a_idx, i)
                        || sb.port.as_ref().and_then(|p| p.number) != Some(port_a)
                    {
                        continue;
                    }
                    let shared: Vec<&str> = sa
                        .hosts
                        .iter()
                        .filter(|ha| {
                            sb.hosts
                                .iter()
                                .any(|hb| hosts_overlap(strip_ns(ha), strip_ns(hb)))
                        })
                        .map(String::as_str)
                        .collect();
                    if !shared.is_empty() {
                        let name = format!("{}/{}", b_res.namespace(), b_res.name());
                        if !clashes.contains(&name) {
                            clashes.push(name);
                        }
                        hosts.extend(shared);
                    }
                }
            }
            if clashes.is_empty() {
                continue;
            }
            hosts.sort_unstable();
            hosts.dedup();
            let selector: Vec<String> =
                a.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(a_res.diag(
                codes::CONFLICTING_GATEWAYS,
                &FieldPath::root().key("spec").key("servers").index(i),
                format!(
                    "Conflict with gateways {} (workload selector {}, port {port_a}, hosts {}).",
                    clashes.join(","),
                    selector.join(","),
                    hosts.join(",")
                ),
            ));
        }
    }
}

fn strip_ns(h: &str) -> &str {
    h.split_once('/').map_or(h, |(_, host)| host)
}
