//! What translation accepts but does not enforce, said out loud: each
//! VirtualService field that is valid Istio but has no effect in Meshwork's
//! generated configuration becomes a [`Warning`] naming the resource and
//! the field path, so that nothing is ignored silently.

use std::fmt;

use meshwork_config::Spec;
use meshwork_config::model::istio::VirtualService;

use crate::snapshot::MeshSnapshot;

/// A field that is accepted but not enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The resource's kind (`VirtualService`, `DestinationRule`).
    pub kind: &'static str,
    /// `namespace/name` of the resource.
    pub resource: String,
    /// The field path, e.g. `spec.http[0].fault.delay.exponentialDelay`.
    pub field: String,
    /// What happens instead.
    pub detail: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.kind, self.resource, self.field, self.detail
        )
    }
}

/// Every accepted-but-not-enforced field in the snapshot's VirtualServices.
pub fn warnings(snap: &MeshSnapshot) -> Vec<Warning> {
    let mut out = Vec::new();
    for r in snap.resources() {
        if let Spec::VirtualService(vs) = &r.spec {
            let id = format!("{}/{}", r.namespace(), r.name());
            virtual_service(&id, vs, snap, r.namespace(), &mut out);
        }
        if let Spec::DestinationRule(dr) = &r.spec {
            let id = format!("{}/{}", r.namespace(), r.name());
            crate::dr_warnings::destination_rule(&id, dr, &mut out);
        }
    }
    crate::sidecar_listeners::warnings(snap, &mut out);
    out
}

fn virtual_service(
    id: &str,
    vs: &VirtualService,
    snap: &MeshSnapshot,
    ns: &str,
    out: &mut Vec<Warning>,
) {
    let mut warn = |field: String, detail: &'static str| {
        out.push(Warning {
            kind: "VirtualService",
            resource: id.to_string(),
            field,
            detail,
        })
    };
    for (i, h) in vs.http.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        if h.retries
            .as_ref()
            .is_some_and(|r| r.retry_remote_localities == Some(true))
        {
            warn(
                format!("{at}.retries.retryRemoteLocalities"),
                "not enforced: retries may go to any locality",
            );
        }
        let on = h.retries.as_ref().and_then(|r| r.retry_on.as_deref());
        for token in on.into_iter().flat_map(|o| o.split(',')).map(str::trim) {
            if !token.is_empty()
                && token.parse::<u32>().is_err()
                && !crate::policy::RETRY_ON_SUPPORTED.contains(&token)
            {
                warn(
                    format!("{at}.retries.retryOn"),
                    "condition not enforced (left out): retries never happen for it",
                );
            }
        }
        for (j, m) in h.r#match.iter().enumerate() {
            if m.stat_prefix.is_some() {
                warn(
                    format!("{at}.match[{j}].statPrefix"),
                    "not enforced: route statistics are not kept per prefix",
                );
            }
        }
        if let Some(d) = &h.delegate {
            let name = d.name.as_deref().unwrap_or("");
            let dns = d.namespace.as_deref().unwrap_or(ns);
            let found = snap.resources().iter().any(|r| {
                matches!(r.spec, Spec::VirtualService(_))
                    && r.name() == name
                    && r.namespace() == dns
            });
            if !found {
                warn(
                    format!("{at}.delegate"),
                    "delegate VirtualService not found: the route is left out",
                );
            }
        }
    }
    for (i, t) in vs.tcp.iter().enumerate() {
        for (j, m) in t.r#match.iter().enumerate() {
            if m.source_subnet.is_some() {
                warn(
                    format!("spec.tcp[{i}].match[{j}].sourceSubnet"),
                    "not enforced on sidecars (gateways only in Istio)",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unenforced_fields_and_missing_delegate_are_reported() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{statPrefix: s, uri: {prefix: /a}}]\n    retries: {attempts: 2, retryRemoteLocalities: true, retryOn: \"5xx,envoy-ratelimited\"}\n    route: [{destination: {host: reviews}}]\n  - delegate: {name: missing}\n";
        let loaded = meshwork_config::load_str("w.yaml".as_ref(), yaml);
        assert_eq!(loaded.resources.len(), 1, "{:?}", loaded.diagnostics);
        let snap = MeshSnapshot::new(1, loaded.resources, Default::default());
        let w: Vec<String> = warnings(&snap).iter().map(ToString::to_string).collect();
        assert!(
            w.iter()
                .any(|w| w.contains("spec.http[0].match[0].statPrefix")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("spec.http[0].retries.retryRemoteLocalities")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|w| w.contains("spec.http[1].delegate")),
            "{w:?}"
        );
    }
}
