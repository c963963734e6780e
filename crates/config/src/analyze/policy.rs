//! DestinationRule analyzers: subsets that no workload backs (IST0127),
//! and TLS settings that contradict a PeerAuthentication (IST0113).

use super::index::{Index, ROOT_NAMESPACE, ServiceInfo, selects};
use crate::diag::{Diagnostic, codes};
use crate::model::istio::{ClientTlsMode, DestinationRule, MutualTlsMode, PeerAuthentication};
use crate::node::FieldPath;
use crate::resource::Resource;

/// Subsets whose labels match none of the host's workloads.
pub fn subsets(
    res: &Resource,
    dr: &DestinationRule,
    host: &str,
    ix: &Index<'_>,
    out: &mut Vec<Diagnostic>,
) {
    // Only hosts we can see the workloads of: a Kubernetes Service with a selector.
    let Some(svc) = ix.services.get(host) else {
        return;
    };
    if svc.spec.selector.is_empty() {
        return;
    }
    let workloads = ix.service_workloads(svc);
    for (i, s) in dr.subsets.iter().enumerate() {
        if workloads.iter().any(|w| selects(&s.labels, w.labels)) {
            continue;
        }
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(res.diag(
            codes::NO_MATCHING_WORKLOADS_FOUND,
            &FieldPath::root().key("spec").key("subsets").index(i),
            format!(
                "No matching workloads for this resource with the following labels: {} (subset {:?} of {host})",
                labels.join(","),
                s.name
            ),
        ));
    }
}

/// The PeerAuthentication mode in force for a Service's workloads: the
/// most specific policy wins (workload selector, then namespace, then mesh).
fn effective_mode<'a>(
    svc: &ServiceInfo<'_>,
    ix: &'a Index<'_>,
) -> Option<(&'a Resource, MutualTlsMode)> {
    let ns = svc.res.namespace();
    let workloads = ix.service_workloads(svc);
    let mode_of = |pa: &PeerAuthentication| {
        pa.mtls
            .as_ref()
            .and_then(|m| m.mode)
            .filter(|m| *m != MutualTlsMode::Unset)
    };
    let workload_level = ix.peer_authns.iter().find(|(r, pa)| {
        r.namespace() == ns
            && pa.selector.as_ref().is_some_and(|s| {
                !s.match_labels.is_empty()
                    && workloads.iter().any(|w| selects(&s.match_labels, w.labels))
            })
            && mode_of(pa).is_some()
    });
    let namespace_level = || {
        ix.peer_authns.iter().find(|(r, pa)| {
            r.namespace() == ns
                && pa
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.is_empty())
                && mode_of(pa).is_some()
        })
    };
    let mesh_level = || {
        ix.peer_authns.iter().find(|(r, pa)| {
            r.namespace() == ROOT_NAMESPACE
                && pa
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.is_empty())
                && mode_of(pa).is_some()
        })
    };
    workload_level
        .or_else(namespace_level)
        .or_else(mesh_level)
        .and_then(|(r, pa)| mode_of(pa).map(|m| (*r, m)))
}

/// A DestinationRule whose TLS mode contradicts the PeerAuthentication of
/// the workloads it sends to.
pub fn mtls_conflict(
    res: &Resource,
    dr: &DestinationRule,
    host: &str,
    ix: &Index<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(svc) = ix.services.get(host) else {
        return;
    };
    let Some((pa_res, mode)) = effective_mode(svc, ix) else {
        return;
    };
    let spec = FieldPath::root().key("spec");
    let mut settings = Vec::new();
    if let Some(tp) = &dr.traffic_policy {
        if let Some(m) = tp.tls.as_ref().and_then(|t| t.mode) {
            settings.push((spec.key("trafficPolicy").key("tls").key("mode"), m));
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            if let Some(m) = pl.tls.as_ref().and_then(|t| t.mode) {
                settings.push((
                    spec.key("trafficPolicy")
                        .key("portLevelSettings")
                        .index(i)
                        .key("tls")
                        .key("mode"),
                    m,
                ));
            }
        }
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(m) = s
            .traffic_policy
            .as_ref()
            .and_then(|t| t.tls.as_ref())
            .and_then(|t| t.mode)
        {
            settings.push((
                spec.key("subsets")
                    .index(i)
                    .key("trafficPolicy")
                    .key("tls")
                    .key("mode"),
                m,
            ));
        }
    }
    for (path, tls) in settings {
        let conflict = match (tls, mode) {
            (ClientTlsMode::Disable, MutualTlsMode::Strict) => Some(false),
            (ClientTlsMode::IstioMutual, MutualTlsMode::Disable) => Some(true),
            _ => None,
        };
        if let Some(dr_wants_mtls) = conflict {
            out.push(res.diag(
                codes::MTLS_POLICY_CONFLICT,
                &path,
                format!(
                    "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The DestinationRule {:?} specifies that mTLS must be {dr_wants_mtls} but the Policy object {:?} specifies {}.",
                    format!("{}/{}", res.namespace(), res.name()),
                    format!("{}/{}", pa_res.namespace(), pa_res.name()),
                    if mode == MutualTlsMode::Strict { "STRICT" } else { "DISABLE" },
                ),
            ));
        }
    }
}
