//! Structural validation against Istio's CRD schemas (embedded from
//! `schema/istio-crds.json`, generated from Istio's `crd-all.gen.yaml`):
//! types, required fields, enums, patterns, ranges, sizes, oneOf, list
//! keys, unknown fields and the `x-kubernetes-validations` CEL rules.

pub mod cel;
mod walk;

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as J;

pub use walk::{SchemaIssue, validate_spec};

/// The schema of one kind at one version.
#[derive(Debug)]
pub struct KindSchema {
    /// The schema of `spec`.
    pub spec: J,
    /// Whether the CRD requires `spec`.
    pub spec_required: bool,
}

/// Every embedded schema, with its regex patterns and CEL rules compiled.
pub struct SchemaSet {
    kinds: HashMap<String, usize>,
    schemas: Vec<KindSchema>,
    patterns: HashMap<String, Result<Regex, String>>,
    rules: HashMap<String, Result<cel::Expr, String>>,
}

static EMBEDDED: &str = include_str!("../../schema/istio-crds.json");

static SCHEMAS: LazyLock<SchemaSet> = LazyLock::new(|| SchemaSet::load(EMBEDDED));

/// The embedded schema set.
pub fn schemas() -> &'static SchemaSet {
    &SCHEMAS
}

impl SchemaSet {
    fn load(text: &str) -> Self {
        let mut set = SchemaSet {
            kinds: HashMap::new(),
            schemas: Vec::new(),
            patterns: HashMap::new(),
            rules: HashMap::new(),
        };
        let Ok(root) = serde_json::from_str::<J>(text) else {
            return set;
        };
        let mut ids = HashMap::new();
        if let Some(schemas) = root.get("schemas").and_then(J::as_object) {
            for (id, entry) in schemas {
                let spec = entry.get("spec").cloned().unwrap_or(J::Null);
                set.compile(&spec);
                ids.insert(id.clone(), set.schemas.len());
                set.schemas.push(KindSchema {
                    spec,
                    spec_required: entry.get("specRequired").and_then(J::as_bool) == Some(true),
                });
            }
        }
        if let Some(kinds) = root.get("kinds").and_then(J::as_object) {
            for (key, id) in kinds {
                if let Some(i) = id.as_str().and_then(|id| ids.get(id)) {
                    set.kinds.insert(key.clone(), *i);
                }
            }
        }
        set
    }

    fn compile(&mut self, s: &J) {
        match s {
            J::Object(map) => {
                if let Some(p) = map.get("pattern").and_then(J::as_str) {
                    self.patterns
                        .entry(p.to_string())
                        .or_insert_with(|| Regex::new(p).map_err(|e| e.to_string()));
                }
                if let Some(rules) = map.get("x-kubernetes-validations").and_then(J::as_array) {
                    for r in rules {
                        if let Some(rule) = r.get("rule").and_then(J::as_str) {
                            self.rules
                                .entry(rule.to_string())
                                .or_insert_with(|| cel::parse(rule));
                        }
                    }
                }
                for v in map.values() {
                    self.compile(v);
                }
            }
            J::Array(items) => items.iter().for_each(|i| self.compile(i)),
            _ => {}
        }
    }

    /// The schema for `apiVersion` (`group/version`) and `kind`.
    pub fn get(&self, api_version: &str, kind: &str) -> Option<&KindSchema> {
        self.kinds
            .get(&format!("{api_version}/{kind}"))
            .map(|i| &self.schemas[*i])
    }

    /// Every `group/version/Kind` with a schema.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    pub(crate) fn pattern(&self, p: &str) -> Option<&Result<Regex, String>> {
        self.patterns.get(p)
    }

    pub(crate) fn rule(&self, r: &str) -> Option<&Result<cel::Expr, String>> {
        self.rules.get(r)
    }

    /// Every CEL rule in the schemas, with its parse result.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Result<cel::Expr, String>)> {
        self.rules.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every regex pattern in the schemas, with its compile result.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, &Result<Regex, String>)> {
        self.patterns.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_version_is_embedded() {
        let s = schemas();
        for (gv, kind) in [
            ("networking.istio.io/v1", "VirtualService"),
            ("networking.istio.io/v1alpha3", "DestinationRule"),
            ("networking.istio.io/v1beta1", "Gateway"),
            ("networking.istio.io/v1", "ServiceEntry"),
            ("networking.istio.io/v1", "WorkloadEntry"),
            ("networking.istio.io/v1alpha3", "WorkloadGroup"),
            ("networking.istio.io/v1beta1", "Sidecar"),
            ("networking.istio.io/v1beta1", "ProxyConfig"),
            ("security.istio.io/v1", "PeerAuthentication"),
            ("security.istio.io/v1beta1", "RequestAuthentication"),
            ("security.istio.io/v1", "AuthorizationPolicy"),
            ("telemetry.istio.io/v1alpha1", "Telemetry"),
            ("telemetry.istio.io/v1", "Telemetry"),
        ] {
            assert!(s.get(gv, kind).is_some(), "{gv}/{kind}");
        }
        assert!(s.get("networking.istio.io/v9", "VirtualService").is_none());
    }

    #[test]
    fn every_rule_parses_and_every_pattern_compiles() {
        let s = schemas();
        assert!(s.rules().count() >= 25);
        for (rule, parsed) in s.rules() {
            assert!(parsed.is_ok(), "{rule}: {parsed:?}");
        }
        for (p, compiled) in s.patterns() {
            assert!(compiled.is_ok(), "{p}: {compiled:?}");
        }
    }
}
