//! The schema walk itself.

use serde_json::Value as J;

use super::{SchemaSet, cel};
use crate::node::{FieldPath, Node, Value};

/// One schema violation. `unknown` marks a field the schema does not have
/// (a warning), every other issue is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaIssue {
    /// Where.
    pub path: FieldPath,
    /// What, in Kubernetes' words (`Required value`, `Invalid value: …`).
    pub message: String,
    /// Whether this is an unknown field rather than a violation.
    pub unknown: bool,
}

/// Validate the `spec` of a document (`spec` may be absent).
pub fn validate_spec(
    set: &SchemaSet,
    kind: &super::KindSchema,
    spec: Option<&Node>,
    out: &mut Vec<SchemaIssue>,
) {
    let path = FieldPath::root().key("spec");
    match spec {
        Some(n) if !n.is_null() => Walker { set, out }.node(&kind.spec, n, &path),
        _ if kind.spec_required => out.push(SchemaIssue {
            path,
            message: "Required value".into(),
            unknown: false,
        }),
        _ => {}
    }
}

struct Walker<'a> {
    set: &'a SchemaSet,
    out: &'a mut Vec<SchemaIssue>,
}

fn show(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("{s:?}"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "\"null\"".into(),
        Value::Seq(_) => "\"array\"".into(),
        Value::Map(_) => "\"object\"".into(),
    }
}

fn num(node: &Node) -> Option<f64> {
    match node.value {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        _ => None,
    }
}

impl Walker<'_> {
    fn err(&mut self, path: &FieldPath, message: String) {
        self.out.push(SchemaIssue {
            path: path.clone(),
            message,
            unknown: false,
        });
    }

    fn invalid(&mut self, path: &FieldPath, node: &Node, detail: String) {
        let msg = format!("Invalid value: {}: {detail}", show(node));
        self.err(path, msg);
    }

    fn node(&mut self, s: &J, node: &Node, path: &FieldPath) {
        if node.is_null() {
            return;
        }
        if !self.type_ok(s, node, path) {
            return;
        }
        if let Some(values) = s.get("enum").and_then(J::as_array) {
            let hit = values.iter().any(|v| match (&node.value, v) {
                (Value::Str(a), J::String(b)) => a == b,
                (Value::Int(a), J::Number(b)) => b.as_i64() == Some(*a),
                _ => false,
            });
            if !hit {
                let supported: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                let msg = format!(
                    "Unsupported value: {}: supported values: {}",
                    show(node),
                    supported.join(", ")
                );
                self.err(path, msg);
            }
        }
        match &node.value {
            Value::Str(text) => self.string(s, node, text, path),
            Value::Int(_) | Value::Float(_) => self.number(s, node, path),
            Value::Seq(items) => self.array(s, node, items, path),
            Value::Map(_) => self.object(s, node, path),
            _ => {}
        }
        self.one_of(s, node, path);
        self.rules(s, node, path);
    }

    fn type_ok(&mut self, s: &J, node: &Node, path: &FieldPath) -> bool {
        if s.get("x-kubernetes-int-or-string").and_then(J::as_bool) == Some(true) {
            if matches!(node.value, Value::Int(_) | Value::Str(_)) {
                return true;
            }
            let msg = format!(
                "{path} in body must be of type int-or-string: {:?}",
                node.type_name()
            );
            self.invalid(path, node, msg);
            return false;
        }
        let Some(t) = s.get("type").and_then(J::as_str) else {
            return true;
        };
        let ok = match (t, &node.value) {
            ("string", Value::Str(_)) | ("boolean", Value::Bool(_)) => true,
            ("array", Value::Seq(_)) | ("object", Value::Map(_)) => true,
            ("number", Value::Int(_) | Value::Float(_)) => true,
            ("integer", Value::Int(_)) => true,
            ("integer", Value::Float(f)) => f.fract() == 0.0 && f.is_finite(),
            _ => false,
        };
        if !ok {
            let msg = format!("{path} in body must be of type {t}: {:?}", node.type_name());
            self.invalid(path, node, msg);
        }
        ok
    }

    fn string(&mut self, s: &J, node: &Node, text: &str, path: &FieldPath) {
        let len = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(J::as_u64)
            && len < min
        {
            self.invalid(
                path,
                node,
                format!("{path} in body should be at least {min} chars long"),
            );
        }
        if let Some(max) = s.get("maxLength").and_then(J::as_u64)
            && len > max
        {
            self.err(path, format!("Too long: may not be more than {max} bytes"));
        }
        if let Some(p) = s.get("pattern").and_then(J::as_str) {
            let matched = match self.set.pattern(p) {
                Some(Ok(re)) => re.is_match(text),
                _ => true,
            };
            if !matched {
                self.invalid(path, node, format!("{path} in body should match '{p}'"));
            }
        }
    }

    fn number(&mut self, s: &J, node: &Node, path: &FieldPath) {
        let Some(v) = num(node) else { return };
        if let Some(min) = s.get("minimum").and_then(J::as_f64)
            && v < min
        {
            let msg = format!("{path} in body should be greater than or equal to {min}");
            self.invalid(path, node, msg);
        }
        if let Some(max) = s.get("maximum").and_then(J::as_f64)
            && v > max
        {
            let msg = format!("{path} in body should be less than or equal to {max}");
            self.invalid(path, node, msg);
        }
    }

    fn array(&mut self, s: &J, node: &Node, items: &[Node], path: &FieldPath) {
        let n = items.len() as u64;
        if let Some(max) = s.get("maxItems").and_then(J::as_u64)
            && n > max
        {
            self.err(
                path,
                format!("Too many: {n}: must have at most {max} items"),
            );
        }
        if let Some(min) = s.get("minItems").and_then(J::as_u64)
            && n < min
        {
            self.invalid(
                path,
                node,
                format!("{path} in body should have at least {min} items"),
            );
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.node(item_schema, item, &path.index(i));
            }
        }
        match s.get("x-kubernetes-list-type").and_then(J::as_str) {
            Some("map") => {
                let keys: Vec<&str> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(J::as_array)
                    .map(|k| k.iter().filter_map(J::as_str).collect())
                    .unwrap_or_default();
                let mut seen: Vec<Vec<serde_json::Value>> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<serde_json::Value> = keys
                        .iter()
                        .map(|k| item.get(k).map_or(J::Null, Node::to_json))
                        .collect();
                    if seen.contains(&key) {
                        let shown: Vec<String> = keys
                            .iter()
                            .zip(&key)
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect();
                        self.err(
                            &path.index(i),
                            format!("Duplicate value: {{{}}}", shown.join(", ")),
                        );
                    } else {
                        seen.push(key);
                    }
                }
            }
            Some("set") => {
                let mut seen = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let v = item.to_json();
                    if seen.contains(&v) {
                        self.err(&path.index(i), format!("Duplicate value: {v}"));
                    } else {
                        seen.push(v);
                    }
                }
            }
            _ => {}
        }
    }

    fn object(&mut self, s: &J, node: &Node, path: &FieldPath) {
        let entries = node.entries().unwrap_or_default();
        if let Some(required) = s.get("required").and_then(J::as_array) {
            for r in required.iter().filter_map(J::as_str) {
                if node.get(r).is_none_or(Node::is_null) {
                    self.err(&path.key(r), "Required value".into());
                }
            }
        }
        let n = entries.len() as u64;
        if let Some(max) = s.get("maxProperties").and_then(J::as_u64)
            && n > max
        {
            self.err(
                path,
                format!("Too many: {n}: must have at most {max} items"),
            );
        }
        if let Some(min) = s.get("minProperties").and_then(J::as_u64)
            && n < min
        {
            self.invalid(
                path,
                node,
                format!("{path} in body should have at least {min} properties"),
            );
        }
        let props = s.get("properties").and_then(J::as_object);
        let additional = s.get("additionalProperties");
        let preserve = s
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(J::as_bool)
            == Some(true);
        for e in entries {
            let child = path.key(&e.key);
            if let Some(ps) = props.and_then(|p| p.get(&e.key)) {
                self.node(ps, &e.value, &child);
            } else if let Some(a) = additional.filter(|a| a.is_object()) {
                self.node(a, &e.value, &child);
            } else if props.is_some() && !preserve && additional.is_none() {
                self.out.push(SchemaIssue {
                    path: child,
                    message: format!("unknown field {:?}", e.key),
                    unknown: true,
                });
            }
        }
    }

    fn one_of(&mut self, s: &J, node: &Node, path: &FieldPath) {
        if let Some(alts) = s.get("oneOf").and_then(J::as_array) {
            let n = alts.iter().filter(|a| matches_shape(a, node)).count();
            if n != 1 {
                let mut fields = Vec::new();
                collect_required(s.get("oneOf"), &mut fields);
                fields.retain(|f| node.get(f).is_some_and(|v| !v.is_null()));
                fields.sort();
                fields.dedup();
                let msg = format!(
                    "must validate one and only one schema (oneOf): only one of [{}] may be set",
                    fields.join(", ")
                );
                self.invalid(path, node, msg);
            }
        }
        if let Some(all) = s.get("allOf").and_then(J::as_array) {
            for sub in all {
                self.one_of(sub, node, path);
            }
        }
    }

    fn rules(&mut self, s: &J, node: &Node, path: &FieldPath) {
        let Some(rules) = s.get("x-kubernetes-validations").and_then(J::as_array) else {
            return;
        };
        let this = cel::Val::from_node(node);
        for r in rules {
            let Some(rule) = r.get("rule").and_then(J::as_str) else {
                continue;
            };
            let message = r
                .get("message")
                .and_then(J::as_str)
                .map_or_else(|| format!("failed rule: {rule}"), str::to_string);
            match self.set.rule(rule) {
                Some(Ok(expr)) => match cel::eval(expr, &this) {
                    Ok(cel::Val::Bool(true)) => {}
                    Ok(_) => self.invalid(path, node, message),
                    Err(e) => self.invalid(path, node, format!("{message} ({e})")),
                },
                Some(Err(e)) => self.err(
                    path,
                    format!("Internal error: rule {rule:?} does not parse: {e}"),
                ),
                None => {}
            }
        }
    }
}

/// Whether `node` satisfies a shape-only subschema (`required`, `not`,
/// `anyOf`, `oneOf`, `allOf`), as Istio's oneOf encodings use.
fn matches_shape(s: &J, node: &Node) -> bool {
    if let Some(req) = s.get("required").and_then(J::as_array)
        && !req
            .iter()
            .filter_map(J::as_str)
            .all(|r| node.get(r).is_some_and(|v| !v.is_null()))
    {
        return false;
    }
    if let Some(not) = s.get("not")
        && matches_shape(not, node)
    {
        return false;
    }
    if let Some(any) = s.get("anyOf").and_then(J::as_array)
        && !any.iter().any(|a| matches_shape(a, node))
    {
        return false;
    }
    if let Some(one) = s.get("oneOf").and_then(J::as_array)
        && one.iter().filter(|a| matches_shape(a, node)).count() != 1
    {
        return false;
    }
    if let Some(all) = s.get("allOf").and_then(J::as_array)
        && !all.iter().all(|a| matches_shape(a, node))
    {
        return false;
    }
    true
}

fn collect_required(s: Option<&J>, out: &mut Vec<String>) {
    match s {
        Some(J::Object(m)) => {
            if let Some(req) = m.get("required").and_then(J::as_array) {
                out.extend(req.iter().filter_map(J::as_str).map(str::to_string));
            }
            for v in m.values() {
                collect_required(Some(v), out);
            }
        }
        Some(J::Array(items)) => items.iter().for_each(|i| collect_required(Some(i), out)),
        _ => {}
    }
}
