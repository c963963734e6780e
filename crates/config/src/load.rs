//! Loading: files, directories (recursively), stdin; multi-document YAML
//! and JSON. Every document keeps its file and line; a broken or invalid
//! document is reported and skipped, the others still load.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, codes};
use crate::model::meta::ObjectMeta;
use crate::node::{FieldPath, Node, Value};
use crate::resource::{Kind, Resource, Spec};
use crate::validate;
use crate::yaml;

/// What loading produced: the resources that are valid, and every finding.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Resources that parsed and validated without errors.
    pub resources: Vec<Resource>,
    /// Findings (errors for skipped documents, warnings for the rest).
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Append another load's results.
    pub fn extend(&mut self, other: Loaded) {
        self.resources.extend(other.resources);
        self.diagnostics.extend(other.diagnostics);
    }
}

/// Files a directory walk picks up.
fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Load every path: `-` is stdin, a directory is walked recursively
/// (`.yaml`, `.yml`, `.json` files, in name order).
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut out = Loaded::default();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => out.extend(load_str(p, &text)),
                Err(e) => out.diagnostics.push(read_error(p, &e)),
            }
        } else {
            load_path(p, &mut out, 0);
        }
    }
    out
}

fn read_error(p: &Path, e: &dyn std::fmt::Display) -> Diagnostic {
    let mut d = Diagnostic::new(codes::READ_ERROR, format!("cannot read: {e}"));
    d.file = Some(p.to_path_buf());
    d
}

fn load_path(p: &Path, out: &mut Loaded, depth: usize) {
    if p.is_dir() {
        if depth > 64 {
            out.diagnostics
                .push(read_error(p, &"directory nesting too deep"));
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                out.diagnostics.push(read_error(p, &e));
                return;
            }
        };
        entries.sort();
        for e in entries {
            if e.is_dir() || is_manifest(&e) {
                load_path(&e, out, depth + 1);
            }
        }
        return;
    }
    match std::fs::read(p) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => out.extend(load_str(p, &text)),
            Err(_) => out.diagnostics.push(read_error(p, &"not UTF-8 text")),
        },
        Err(e) => out.diagnostics.push(read_error(p, &e)),
    }
}

/// Load the documents of one file's text; `file` names it in findings.
pub fn load_str(file: &Path, text: &str) -> Loaded {
    let mut out = Loaded::default();
    for doc in yaml::parse_stream(text) {
        match doc.content {
            Ok(node) => load_node(file, node, &mut out),
            Err(e) => out.diagnostics.push(
                Diagnostic::new(codes::PARSE_ERROR, format!("invalid YAML: {}", e.message))
                    .at(file.to_path_buf(), e.line),
            ),
        }
    }
    out
}

/// Load one parsed document (a `List` is expanded into its items).
pub fn load_node(file: &Path, node: Node, out: &mut Loaded) {
    let parse_error = |line: u32, msg: &str| {
        Diagnostic::new(codes::PARSE_ERROR, msg).at(file.to_path_buf(), line)
    };
    if node.entries().is_none() {
        out.diagnostics.push(parse_error(
            node.line,
            "document is not a mapping (a Kubernetes object)",
        ));
        return;
    }
    let kind_name = node.get("kind").and_then(Node::as_str).unwrap_or_default();
    let api_version = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .unwrap_or_default();
    if kind_name.is_empty() || api_version.is_empty() {
        out.diagnostics
            .push(parse_error(node.line, "document has no apiVersion or kind"));
        return;
    }
    if kind_name.ends_with("List")
        && let Some(Value::Seq(items)) = node.get("items").map(|n| &n.value)
    {
        for item in items.clone() {
            load_node(file, item, out);
        }
        return;
    }
    let Some(kind) = Kind::from_name(kind_name) else {
        out.diagnostics.push(
            Diagnostic::new(
                codes::UNSUPPORTED_KIND,
                format!("{api_version} {kind_name} is not a kind Meshwork reads; skipped"),
            )
            .at(file.to_path_buf(), node.line),
        );
        return;
    };
    if !kind.accepts(api_version) {
        out.diagnostics.push(
            Diagnostic::new(
                codes::SCHEMA_VALIDATION_ERROR,
                format!("apiVersion {api_version:?} does not serve kind {kind_name}"),
            )
            .at(
                file.to_path_buf(),
                node.line_of(&FieldPath::root().key("apiVersion")),
            )
            .field("apiVersion"),
        );
        return;
    }
    let meta: ObjectMeta = match node.get("metadata").map(json_of) {
        Some(j) => match serde_json::from_value(j) {
            Ok(m) => m,
            Err(e) => {
                out.diagnostics.push(
                    Diagnostic::new(
                        codes::SCHEMA_VALIDATION_ERROR,
                        format!("invalid metadata: {e}"),
                    )
                    .at(
                        file.to_path_buf(),
                        node.line_of(&FieldPath::root().key("metadata")),
                    )
                    .field("metadata"),
                );
                return;
            }
        },
        None => ObjectMeta::default(),
    };
    // Structural validation runs on the tree first, so that typed decoding
    // only sees documents whose shapes are right.
    let mut resource = Resource {
        api_version: api_version.to_string(),
        kind,
        meta,
        spec: Spec::Namespace(Default::default()),
        file: file.to_path_buf(),
        line: node.line,
        node,
    };
    let mut diags = validate::validate_document(&resource);
    let structural_errors = diags.iter().any(|d| d.level == crate::diag::Level::Error);
    if !structural_errors {
        match decode_spec(kind, &resource.node) {
            Ok(spec) => {
                resource.spec = spec;
                diags.extend(validate::validate_resource(&resource));
            }
            Err(e) => diags.push(resource.diag(
                codes::SCHEMA_VALIDATION_ERROR,
                &FieldPath::root().key("spec"),
                format!("cannot decode: {e}"),
            )),
        }
    }
    let failed = diags.iter().any(|d| d.level == crate::diag::Level::Error);
    out.diagnostics.extend(diags);
    if !failed {
        out.resources.push(resource);
    }
}

/// JSON of a node with null-valued fields removed (absent and null mean the
/// same to Kubernetes and to our models).
fn json_of(node: &Node) -> serde_json::Value {
    fn prune(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, prune(v)))
                    .collect(),
            ),
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(prune).collect())
            }
            other => other,
        }
    }
    prune(node.to_json())
}

fn decode<T: DeserializeOwned + Default>(node: Option<&Node>) -> Result<T, serde_json::Error> {
    match node {
        Some(n) if !n.is_null() => serde_json::from_value(json_of(n)),
        _ => Ok(T::default()),
    }
}

/// Decode the typed spec of `kind` from a document.
fn decode_spec(kind: Kind, doc: &Node) -> Result<Spec, serde_json::Error> {
    let spec = doc.get("spec");
    Ok(match kind {
        Kind::VirtualService => Spec::VirtualService(decode(spec)?),
        Kind::DestinationRule => Spec::DestinationRule(decode(spec)?),
        Kind::Gateway => Spec::Gateway(decode(spec)?),
        Kind::ServiceEntry => Spec::ServiceEntry(decode(spec)?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(decode(spec)?),
        Kind::WorkloadGroup => Spec::WorkloadGroup(decode(spec)?),
        Kind::Sidecar => Spec::Sidecar(decode(spec)?),
        Kind::ProxyConfig => Spec::ProxyConfig(decode(spec)?),
        Kind::PeerAuthentication => Spec::PeerAuthentication(decode(spec)?),
        Kind::RequestAuthentication => Spec::RequestAuthentication(decode(spec)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(decode(spec)?),
        Kind::Telemetry => Spec::Telemetry(decode(spec)?),
        Kind::Namespace => Spec::Namespace(decode(spec)?),
        Kind::Service => Spec::Service(decode(spec)?),
        Kind::Deployment => Spec::Deployment(decode(spec)?),
        Kind::ServiceAccount => {
            let mut rest = json_of(doc);
            if let Some(m) = rest.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata"] {
                    m.remove(k);
                }
            }
            Spec::ServiceAccount(serde_json::from_value(rest)?)
        }
    })
}
