//! A YAML/JSON value tree that remembers where every node came from.

use std::fmt;
use std::sync::Arc;

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key, e.g. `spec`.
    Key(String),
    /// A list index, e.g. `[1]`.
    Index(usize),
}

/// A field path such as `spec.http[0].route[1].weight`. Extending a path
/// is O(1) (paths share their parents), so validators can build the path of
/// every node they visit cheaply.
#[derive(Clone, Default)]
pub struct FieldPath(Option<Arc<Link>>);

struct Link {
    parent: FieldPath,
    seg: Seg,
}

impl FieldPath {
    /// The empty path (the document root).
    pub fn root() -> Self {
        Self(None)
    }

    fn push(&self, seg: Seg) -> Self {
        Self(Some(Arc::new(Link {
            parent: self.clone(),
            seg,
        })))
    }

    /// This path extended by a key.
    pub fn key(&self, k: &str) -> Self {
        self.push(Seg::Key(k.to_string()))
    }

    /// This path extended by a list index.
    pub fn index(&self, i: usize) -> Self {
        self.push(Seg::Index(i))
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }

    /// The steps from the root.
    pub fn segments(&self) -> Vec<&Seg> {
        let mut out = Vec::new();
        let mut cur = self;
        while let Some(link) = &cur.0 {
            out.push(&link.seg);
            cur = &link.parent;
        }
        out.reverse();
        out
    }
}

impl PartialEq for FieldPath {
    fn eq(&self, other: &Self) -> bool {
        self.segments() == other.segments()
    }
}

impl Eq for FieldPath {}

impl std::hash::Hash for FieldPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.segments().hash(state);
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({self})")
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments().into_iter().enumerate() {
            match seg {
                Seg::Key(k) if plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A value with the 1-based line and column it starts at.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line in the source file.
    pub line: u32,
    /// 1-based column in the source file.
    pub col: u32,
    /// The value itself.
    pub value: Value,
}

/// A mapping entry: the key, the line of the key, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key text.
    pub key: String,
    /// 1-based line of the key.
    pub line: u32,
    /// The value node.
    pub value: Node,
}

/// The kinds of value a YAML or JSON document holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string (quoted, or a plain scalar that is no other type).
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<Entry>),
}

impl Node {
    /// A node at the given position.
    pub fn new(line: u32, col: u32, value: Value) -> Self {
        Self { line, col, value }
    }

    /// The value under `key`, when this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// The string value, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping entries, when this is a mapping.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The line of the node at `path`; for a path that does not exist, the
    /// line of its deepest existing ancestor (a missing field is reported
    /// where its parent is).
    pub fn line_of(&self, path: &FieldPath) -> u32 {
        let mut cur = self;
        let mut line = self.line;
        for seg in path.segments() {
            let next = match (seg, &cur.value) {
                (Seg::Key(k), Value::Map(entries)) => {
                    entries.iter().find(|e| &e.key == k).map(|e| {
                        line = e.line;
                        &e.value
                    })
                }
                (Seg::Index(i), Value::Seq(items)) => items.get(*i).inspect(|n| line = n.line),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        line
    }

    /// The value as JSON (what serde models are decoded from).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short name for the value's type, as schema errors spell it.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }
}

/// Remove a top-level key from a mapping node, returning its value.
pub fn take_key(node: &mut Node, key: &str) -> Option<Node> {
    if let Value::Map(entries) = &mut node.value {
        let pos = entries.iter().position(|e| e.key == key)?;
        return Some(entries.remove(pos).value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let p = FieldPath::root()
            .key("spec")
            .key("http")
            .index(0)
            .key("route")
            .index(1)
            .key("weight");
        assert_eq!(p.to_string(), "spec.http[0].route[1].weight");
        let q = FieldPath::root()
            .key("spec")
            .key("selector")
            .key("app.kubernetes.io/name");
        assert_eq!(q.to_string(), "spec.selector[app.kubernetes.io/name]");
    }
}
