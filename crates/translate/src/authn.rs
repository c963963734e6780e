//! PeerAuthentication → the mTLS mode of each inbound port, with Istio's
//! precedence: a workload-selector policy in the workload's namespace (its
//! `portLevelMtls` for the port first), else the namespace-wide policy,
//! else the mesh-wide policy in the root namespace (`istio-system`), else
//! PERMISSIVE. `UNSET` inherits from the level above. When several policies
//! tie, the first one in the configuration wins (Istio: the oldest).

use std::collections::BTreeMap;

use meshwork_config::Spec;
use meshwork_config::model::istio::{MutualTls, MutualTlsMode, PeerAuthentication};

use crate::meta::ProxyMeta;
use crate::snapshot::{MeshSnapshot, ROOT_NAMESPACE};

/// How an inbound port treats TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mtls {
    /// mTLS only; plaintext is refused.
    Strict,
    /// mTLS and plaintext on the same port.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// A workload's inbound modes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InboundMtls {
    /// The workload's mode (ports without their own, passthrough traffic).
    pub workload: Mtls,
    /// Per-port modes (`portLevelMtls`), by target port.
    pub ports: BTreeMap<u16, Mtls>,
}

impl InboundMtls {
    /// The mode for `port`.
    pub fn for_port(&self, port: u16) -> Mtls {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

impl Default for InboundMtls {
    fn default() -> Self {
        InboundMtls {
            workload: Mtls::Permissive,
            ports: BTreeMap::new(),
        }
    }
}

fn mode(m: Option<&MutualTls>) -> Option<Mtls> {
    match m.and_then(|m| m.mode) {
        Some(MutualTlsMode::Strict) => Some(Mtls::Strict),
        Some(MutualTlsMode::Permissive) => Some(Mtls::Permissive),
        Some(MutualTlsMode::Disable) => Some(Mtls::Disable),
        Some(MutualTlsMode::Unset) | None => None,
    }
}

/// The PeerAuthentication-derived modes for `proxy`'s workload.
pub(crate) fn inbound_mtls(snap: &MeshSnapshot, proxy: &ProxyMeta) -> InboundMtls {
    let mut mesh = None;
    let mut namespace = None;
    let mut workload: Option<&PeerAuthentication> = None;
    for r in snap.resources() {
        let Spec::PeerAuthentication(pa) = &r.spec else {
            continue;
        };
        let ns = r.namespace();
        match &pa.selector {
            None => {
                if ns == ROOT_NAMESPACE && mesh.is_none() {
                    mesh = Some(pa);
                }
                if ns == proxy.namespace && namespace.is_none() {
                    namespace = Some(pa);
                }
            }
            Some(sel) => {
                let selects = ns == proxy.namespace
                    && !sel.match_labels.is_empty()
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| proxy.labels.get(k) == Some(v));
                if selects && workload.is_none() {
                    workload = Some(pa);
                }
            }
        }
    }
    let mesh_mode = mesh
        .and_then(|p| mode(p.mtls.as_ref()))
        .unwrap_or(Mtls::Permissive);
    let ns_mode = namespace
        .and_then(|p| mode(p.mtls.as_ref()))
        .unwrap_or(mesh_mode);
    let wl_mode = workload
        .and_then(|p| mode(p.mtls.as_ref()))
        .unwrap_or(ns_mode);
    let ports = workload
        .map(|p| {
            p.port_level_mtls
                .iter()
                .filter_map(|(port, m)| Some((port.parse::<u16>().ok()?, mode(Some(m))?)))
                .collect()
        })
        .unwrap_or_default();
    InboundMtls {
        workload: wl_mode,
        ports,
    }
}
