//! Positioned YAML (and JSON) parsing: a stream is split into documents, and
//! each document is parsed alone, so one broken document never hides the rest.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::node::{Entry, Node, Value};

/// Most nodes one document may expand to (aliases included): a cap against
/// "billion laughs" documents.
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting accepted in one document.
pub const MAX_DEPTH: usize = 200;

/// A document that could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the problem in the whole file.
    pub line: u32,
    /// What is wrong.
    pub message: String,
}

/// One document of a stream: its first line and its parsed content.
#[derive(Debug, Clone)]
pub struct RawDocument {
    /// 1-based line where the document starts.
    pub line: u32,
    /// The parsed tree, or why it could not be parsed.
    pub content: Result<Node, ParseError>,
}

/// Split `text` at `---` lines and parse each document. Documents that hold
/// only comments or whitespace are dropped.
pub fn parse_stream(text: &str) -> Vec<RawDocument> {
    let mut out = Vec::new();
    for (start, chunk) in split_documents(text) {
        if chunk
            .lines()
            .all(|l| is_blank_or_comment(l) || is_separator(l) || l.trim_end() == "...")
        {
            continue;
        }
        let content = parse_one(chunk, start);
        out.push(RawDocument {
            line: content.as_ref().map_or(start, |n| n.line),
            content,
        });
    }
    out
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn is_separator(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// (first line, text) of each `---`-separated chunk.
fn split_documents(text: &str) -> Vec<(u32, &str)> {
    let mut chunks = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1u32;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i as u32 + 1;
        if is_separator(line.trim_end_matches('\n')) && offset > start_byte {
            chunks.push((start_line, &text[start_byte..offset]));
            start_byte = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    if start_byte < text.len() {
        chunks.push((start_line, &text[start_byte..]));
    }
    chunks
}

fn parse_one(chunk: &str, first_line: u32) -> Result<Node, ParseError> {
    let mut builder = Builder::new(first_line - 1, chunk);
    let mut parser = Parser::new_from_str(chunk);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => {
                builder.on_event(ev, mark);
                if builder.error.is_some() {
                    break;
                }
            }
            Err(e) => {
                return Err(ParseError {
                    line: first_line - 1 + e.marker().line() as u32,
                    message: e.info().to_string(),
                });
            }
        }
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    if builder.docs > 1 {
        return Err(ParseError {
            line: first_line,
            message: "more than one document in one chunk".into(),
        });
    }
    builder.root.ok_or_else(|| ParseError {
        line: first_line,
        message: "empty document".into(),
    })
}

enum Frame {
    Seq(Node, Vec<Node>, usize),
    Map(Node, Vec<Entry>, Option<(String, u32)>, usize, bool),
}

struct Builder<'t> {
    text: &'t str,
    line_offset: u32,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
    docs: usize,
    error: Option<ParseError>,
}

impl<'t> Builder<'t> {
    fn new(line_offset: u32, text: &'t str) -> Self {
        Self {
            text,
            line_offset,
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            nodes: 0,
            docs: 0,
            error: None,
        }
    }

    fn fail(&mut self, line: u32, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(ParseError {
                line,
                message: message.into(),
            });
        }
    }

    fn pos(&self, mark: Marker) -> (u32, u32) {
        (self.line_offset + mark.line() as u32, mark.col() as u32 + 1)
    }

    /// Go's YAML reader (which Kubernetes and Istio use) reads `[001:db8::]`
    /// as one string; YAML 1.2 readers see a one-pair mapping `{"001:db8:":
    /// null}`. When a flow-sequence item is such a pair, written with no
    /// space around its `:`, return the original text so we read it as Go
    /// does.
    fn colon_scalar(&self, entries: &[Entry]) -> Option<String> {
        let [entry] = entries else { return None };
        if !entry.value.is_null() || entry.key.is_empty() {
            return None;
        }
        let line_idx = entry.line.checked_sub(self.line_offset + 1)? as usize;
        let line = self.text.lines().nth(line_idx)?;
        let written = [']', ',']
            .iter()
            .any(|c| line.contains(&format!("{}:{c}", entry.key)));
        written.then(|| format!("{}:", entry.key))
    }

    /// Attach a finished node to its parent; `raw` is the scalar text, used
    /// when the node is a mapping key.
    fn complete(&mut self, node: Node, raw: Option<String>, anchor: usize) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(
                node.line,
                format!("document has more than {MAX_NODES} nodes"),
            );
            return;
        }
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, pending, _, _)) => match pending.take() {
                Some((key, line)) => {
                    if entries.iter().any(|e| e.key == key) {
                        let msg = format!("duplicate key {key:?}");
                        self.fail(line, msg);
                    } else {
                        entries.push(Entry {
                            key,
                            line,
                            value: node,
                        });
                    }
                }
                None => match raw {
                    Some(k) => *pending = Some((k, node.line)),
                    None => self.fail(node.line, "only scalar mapping keys are supported"),
                },
            },
        }
    }
}

fn subtree_size(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(subtree_size).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| subtree_size(&e.value))
                .sum::<usize>()
        }
        _ => 1,
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let (line, col) = self.pos(mark);
        match ev {
            Event::DocumentStart => self.docs += 1,
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = style != TScalarStyle::Plain;
                let value = if quoted || tag.as_ref().is_some_and(|t| t.suffix == "str") {
                    Value::Str(text.clone())
                } else {
                    resolve_plain(&text)
                };
                self.complete(Node::new(line, col, value), Some(text), anchor);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(line, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                let node = Node::new(line, col, Value::Null);
                if matches!(ev, Event::SequenceStart(..)) {
                    self.stack.push(Frame::Seq(node, Vec::new(), anchor));
                } else {
                    let in_seq = matches!(self.stack.last(), Some(Frame::Seq(..)));
                    self.stack
                        .push(Frame::Map(node, Vec::new(), None, anchor, in_seq));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(mut node, items, anchor)) => {
                    node.value = Value::Seq(items);
                    self.complete(node, None, anchor);
                }
                Some(Frame::Map(mut node, entries, _, anchor, in_seq)) => {
                    if let Some(text) = in_seq.then(|| self.colon_scalar(&entries)).flatten() {
                        node.value = Value::Str(text);
                        self.complete(node, None, anchor);
                        return;
                    }
                    // An empty flow mapping `{}` has the position of its brace.
                    if let Some(first) = entries.first() {
                        node.line = first.line;
                    }
                    node.value = Value::Map(entries);
                    self.complete(node, None, anchor);
                }
                None => self.fail(line, "unbalanced collection end"),
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let n = n.clone();
                    self.nodes += subtree_size(&n);
                    let raw = n.as_str().map(str::to_string);
                    self.complete(n, raw, 0);
                }
                None => self.fail(line, "alias to an unknown anchor"),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

/// Resolve a plain scalar with YAML 1.2's core schema.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => text
                .parse::<f64>()
                .map_or(Value::Str(text.into()), Value::Float),
        };
    }
    if looks_like_float(body)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

fn looks_like_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits_dot = !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().any(|b| b.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    digits_dot && exp_ok && (mantissa.contains('.') || exp.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_types() {
        let docs = parse_stream("a: 1\nb:\n  c: 2.5\n  d: [x, 'y']\n---\n# only\n---\ne: true\n");
        assert_eq!(docs.len(), 2);
        let n = docs[0].content.as_ref().unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        let b = n.get("b").unwrap();
        assert_eq!(b.get("c").unwrap().value, Value::Float(2.5));
        assert_eq!(b.get("c").unwrap().line, 3);
        let d = b.get("d").unwrap();
        assert_eq!(d.line, 4);
        let e = docs[1].content.as_ref().unwrap();
        assert_eq!(e.get("e").unwrap().line, 8);
        assert_eq!(docs[1].line, 8);
    }

    #[test]
    fn broken_document_is_isolated() {
        let docs = parse_stream("a: [1\n---\nb: 2\n---\nc: d: e\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[0].content.is_err());
        assert!(docs[1].content.is_ok());
        let err = docs[2].content.as_ref().unwrap_err();
        assert_eq!(err.line, 5);
    }

    #[test]
    fn duplicate_keys_rejected() {
        let docs = parse_stream("a: 1\na: 2\n");
        let err = docs[0].content.as_ref().unwrap_err();
        assert!(err.message.contains("duplicate key"));
        assert_eq!(err.line, 2);
    }

    #[test]
    fn alias_bomb_is_capped() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let docs = parse_stream(&s);
        assert!(
            docs[0]
                .content
                .as_ref()
                .unwrap_err()
                .message
                .contains("nodes")
        );
    }

    #[test]
    fn deep_nesting_is_capped() {
        let s = "[".repeat(10_000);
        let docs = parse_stream(&s);
        assert!(docs[0].content.is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(resolve_plain("1.0"), Value::Float(1.0));
        assert_eq!(resolve_plain("300s"), Value::Str("300s".into()));
        assert_eq!(resolve_plain("-1"), Value::Int(-1));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("001:db8::"), Value::Str("001:db8::".into()));
        assert_eq!(resolve_plain("1.2.3.4"), Value::Str("1.2.3.4".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
    }

    #[test]
    fn ipv6_in_flow_sequence_reads_as_go_does() {
        let docs = parse_stream("a: [1.2.3.4, 001:db8::]\nb: [x: 1]\n");
        let n = docs[0].content.as_ref().unwrap();
        let Value::Seq(items) = &n.get("a").unwrap().value else {
            panic!()
        };
        assert_eq!(items[1].value, Value::Str("001:db8::".into()));
        let Value::Seq(items) = &n.get("b").unwrap().value else {
            panic!()
        };
        assert!(items[0].entries().is_some());
    }

    #[test]
    fn json_parses() {
        let docs = parse_stream("{\"kind\": \"Service\",\n \"n\": 3}");
        let n = docs[0].content.as_ref().unwrap();
        assert_eq!(n.get("n").unwrap().line, 2);
        assert_eq!(n.get("kind").unwrap().as_str(), Some("Service"));
    }
}
