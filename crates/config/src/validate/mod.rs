//! Validation equal to Istio's: the CRD schema (structure, ranges, CEL
//! rules) on the parsed tree, then Istio's semantic checks on the typed
//! spec. Each finding names the field path and the line.

mod common;
mod meta;
mod networking;
mod routes;
mod security;
mod traffic;

pub use common::{MAX_REGEX_LEN, validate_regex};
pub use routes::GRPC_STATUS;

use crate::diag::{Diagnostic, Level, codes};
use crate::node::FieldPath;
use crate::resource::{Resource, Spec};
use crate::schema;

/// Findings of the semantic checks, before they get lines and a resource.
#[derive(Debug, Default)]
pub struct Issues {
    list: Vec<(Level, FieldPath, String)>,
}

impl Issues {
    /// Report an error at `path`.
    pub fn err(&mut self, path: &FieldPath, msg: impl Into<String>) {
        self.list.push((Level::Error, path.clone(), msg.into()));
    }

    /// Report a warning at `path`.
    pub fn warn(&mut self, path: &FieldPath, msg: impl Into<String>) {
        self.list.push((Level::Warning, path.clone(), msg.into()));
    }

    /// Report `result`'s error, if any, at `path`.
    pub fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(e) = result {
            self.err(path, e);
        }
    }
}

/// Structural checks of a document: metadata, and for Istio kinds the CRD
/// schema. Runs before the spec is decoded.
pub fn validate_document(res: &Resource) -> Vec<Diagnostic> {
    let mut issues = Issues::default();
    meta::validate_meta(res, &mut issues);
    let mut out = to_diags(res, issues);
    if res.kind.is_istio() {
        let set = schema::schemas();
        if let Some(kind) = set.get(&res.api_version, res.kind.name()) {
            let mut found = Vec::new();
            schema::validate_spec(set, kind, res.node.get("spec"), &mut found);
            for issue in found {
                let code = if issue.unknown {
                    codes::SCHEMA_WARNING
                } else {
                    codes::SCHEMA_VALIDATION_ERROR
                };
                out.push(res.diag(code, &issue.path, issue.message));
            }
        }
    }
    out
}

/// Istio's semantic checks on a decoded resource.
pub fn validate_resource(res: &Resource) -> Vec<Diagnostic> {
    let mut issues = Issues::default();
    let spec = FieldPath::root().key("spec");
    match &res.spec {
        Spec::VirtualService(vs) => routes::virtual_service(vs, &spec, &mut issues),
        Spec::DestinationRule(dr) => traffic::destination_rule(dr, &spec, &mut issues),
        Spec::Gateway(gw) => networking::gateway(gw, &spec, &mut issues),
        Spec::ServiceEntry(se) => networking::service_entry(se, &spec, &mut issues),
        Spec::WorkloadEntry(we) => networking::workload_entry(we, &spec, &mut issues),
        Spec::WorkloadGroup(wg) => networking::workload_group(wg, &spec, &mut issues),
        Spec::Sidecar(sc) => networking::sidecar(sc, &spec, &mut issues),
        Spec::ProxyConfig(pc) => {
            if let Some(sel) = &pc.selector {
                common::labels(
                    &sel.match_labels,
                    &spec.key("selector").key("matchLabels"),
                    &mut issues,
                );
            }
        }
        Spec::PeerAuthentication(pa) => security::peer_authentication(pa, &spec, &mut issues),
        Spec::RequestAuthentication(ra) => security::request_authentication(ra, &spec, &mut issues),
        Spec::AuthorizationPolicy(ap) => security::authorization_policy(ap, &spec, &mut issues),
        Spec::Telemetry(t) => security::telemetry(t, &spec, &mut issues),
        Spec::Service(svc) => meta::service(svc, &spec, &mut issues),
        Spec::Deployment(d) => meta::deployment(d, &spec, &mut issues),
        Spec::Namespace(_) | Spec::ServiceAccount(_) => {}
    }
    to_diags(res, issues)
}

fn to_diags(res: &Resource, issues: Issues) -> Vec<Diagnostic> {
    issues
        .list
        .into_iter()
        .map(|(level, path, msg)| {
            let code = if level == Level::Error {
                codes::SCHEMA_VALIDATION_ERROR
            } else {
                codes::SCHEMA_WARNING
            };
            res.diag(code, &path, msg)
        })
        .collect()
}
