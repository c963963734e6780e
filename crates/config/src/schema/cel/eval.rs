//! Evaluation of parsed CEL rules against a document node.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;

use super::parse::{BinOp, Expr, Lit, MacroKind, UnOp};
use crate::node::{Node, Value};

/// A CEL runtime value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// `null`
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A string.
    Str(String),
    /// A duration, in nanoseconds.
    Duration(i128),
    /// A list.
    List(Vec<Val>),
    /// A map with string keys, in source order.
    Map(Vec<(String, Val)>),
    /// A parsed URL (its scheme).
    Url(String),
}

impl Val {
    /// Convert a document node.
    pub fn from_node(node: &Node) -> Val {
        match &node.value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Int(i) => Val::Int(*i),
            Value::Float(f) => Val::Double(*f),
            Value::Str(s) => Val::Str(s.clone()),
            Value::Seq(items) => Val::List(items.iter().map(Val::from_node).collect()),
            Value::Map(entries) => Val::Map(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), Val::from_node(&e.value)))
                    .collect(),
            ),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Double(_) => "double",
            Val::Str(_) => "string",
            Val::Duration(_) => "duration",
            Val::List(_) => "list",
            Val::Map(_) => "map",
            Val::Url(_) => "url",
        }
    }
}

type R = Result<Val, String>;

/// Evaluate `expr` with `self` bound to `this`.
pub fn eval(expr: &Expr, this: &Val) -> R {
    let mut env = vec![("self".to_string(), this.clone())];
    ev(expr, &mut env)
}

fn lookup(env: &[(String, Val)], name: &str) -> R {
    env.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| format!("undeclared reference to {name:?}"))
}

fn ev(e: &Expr, env: &mut Vec<(String, Val)>) -> R {
    match e {
        Expr::Lit(l) => Ok(match l {
            Lit::Null => Val::Null,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(i) => Val::Int(*i),
            Lit::Double(d) => Val::Double(*d),
            Lit::Str(s) => Val::Str(s.clone()),
        }),
        Expr::Ident(n) => lookup(env, n),
        Expr::Select(operand, field) => match ev(operand, env)? {
            Val::Map(entries) => entries
                .into_iter()
                .find(|(k, _)| k == field)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("no such key: {field}")),
            other => Err(format!("cannot select {field} from {}", other.type_name())),
        },
        Expr::Has(operand, field) => match ev(operand, env)? {
            Val::Map(entries) => Ok(Val::Bool(
                entries.iter().any(|(k, v)| k == field && *v != Val::Null),
            )),
            other => Err(format!("has() on {}", other.type_name())),
        },
        Expr::Index(target, idx) => match (ev(target, env)?, ev(idx, env)?) {
            (Val::List(items), Val::Int(i)) => usize::try_from(i)
                .ok()
                .and_then(|i| items.into_iter().nth(i))
                .ok_or_else(|| "index out of range".to_string()),
            (Val::Map(entries), Val::Str(k)) => entries
                .into_iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("no such key: {k}")),
            _ => Err("bad index".into()),
        },
        Expr::Unary(UnOp::Not, x) => match ev(x, env)? {
            Val::Bool(b) => Ok(Val::Bool(!b)),
            other => Err(format!("! on {}", other.type_name())),
        },
        Expr::Unary(UnOp::Neg, x) => match ev(x, env)? {
            Val::Int(i) => i
                .checked_neg()
                .map(Val::Int)
                .ok_or_else(|| "overflow".into()),
            Val::Double(d) => Ok(Val::Double(-d)),
            other => Err(format!("- on {}", other.type_name())),
        },
        Expr::Binary(BinOp::Or, a, b) => logic(a, b, true, env),
        Expr::Binary(BinOp::And, a, b) => logic(a, b, false, env),
        Expr::Binary(op, a, b) => {
            let (a, b) = (ev(a, env)?, ev(b, env)?);
            binary(*op, a, b)
        }
        Expr::Cond(c, a, b) => match ev(c, env)? {
            Val::Bool(true) => ev(a, env),
            Val::Bool(false) => ev(b, env),
            other => Err(format!("condition is {}", other.type_name())),
        },
        Expr::List(items) => Ok(Val::List(
            items.iter().map(|i| ev(i, env)).collect::<Result<_, _>>()?,
        )),
        Expr::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in entries {
                let Val::Str(k) = ev(k, env)? else {
                    return Err("map keys must be strings".into());
                };
                out.push((k, ev(v, env)?));
            }
            Ok(Val::Map(out))
        }
        Expr::Macro(target, kind, var, body) => comprehension(target, *kind, var, body, env),
        Expr::Call(target, name, args) => {
            let target = target.as_ref().map(|t| ev(t, env)).transpose()?;
            let args = args
                .iter()
                .map(|a| ev(a, env))
                .collect::<Result<Vec<_>, _>>()?;
            call(target, name, args)
        }
    }
}

/// `||` (`is_or`) and `&&`, commutative over errors as CEL specifies.
fn logic(a: &Expr, b: &Expr, is_or: bool, env: &mut Vec<(String, Val)>) -> R {
    let left = ev(a, env);
    if let Ok(Val::Bool(x)) = left
        && x == is_or
    {
        return Ok(Val::Bool(x));
    }
    let right = ev(b, env);
    match (left, right) {
        (_, Ok(Val::Bool(y))) if y == is_or => Ok(Val::Bool(y)),
        (Ok(Val::Bool(_)), Ok(Val::Bool(y))) => Ok(Val::Bool(y)),
        (Err(e), _) | (_, Err(e)) => Err(e),
        _ => Err("logical operator on non-bool".into()),
    }
}

fn comprehension(
    target: &Expr,
    kind: MacroKind,
    var: &str,
    body: &Expr,
    env: &mut Vec<(String, Val)>,
) -> R {
    let items: Vec<Val> = match ev(target, env)? {
        Val::List(items) => items,
        Val::Map(entries) => entries.into_iter().map(|(k, _)| Val::Str(k)).collect(),
        other => return Err(format!("cannot iterate over {}", other.type_name())),
    };
    let mut count = 0usize;
    let mut mapped = Vec::new();
    for item in items {
        env.push((var.to_string(), item.clone()));
        let r = ev(body, env);
        env.pop();
        let r = r?;
        match (kind, r) {
            (MacroKind::Map, v) => mapped.push(v),
            (MacroKind::All, Val::Bool(false)) => return Ok(Val::Bool(false)),
            (MacroKind::Exists, Val::Bool(true)) => return Ok(Val::Bool(true)),
            (MacroKind::ExistsOne, Val::Bool(true)) => count += 1,
            (MacroKind::Filter, Val::Bool(true)) => mapped.push(item),
            (_, Val::Bool(_)) => {}
            (_, other) => return Err(format!("predicate returned {}", other.type_name())),
        }
    }
    Ok(match kind {
        MacroKind::All => Val::Bool(true),
        MacroKind::Exists => Val::Bool(false),
        MacroKind::ExistsOne => Val::Bool(count == 1),
        MacroKind::Map | MacroKind::Filter => Val::List(mapped),
    })
}

fn num(v: &Val) -> Option<f64> {
    match v {
        Val::Int(i) => Some(*i as f64),
        Val::Double(d) => Some(*d),
        _ => None,
    }
}

fn binary(op: BinOp, a: Val, b: Val) -> R {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (&a, &b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Duration(x), Val::Duration(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        _ => match (num(&a), num(&b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    match op {
        BinOp::Eq => Ok(Val::Bool(
            ord == Some(Ordering::Equal) || (ord.is_none() && a == b),
        )),
        BinOp::Ne => Ok(Val::Bool(
            !(ord == Some(Ordering::Equal) || (ord.is_none() && a == b)),
        )),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let o = ord
                .ok_or_else(|| format!("cannot compare {} and {}", a.type_name(), b.type_name()))?;
            Ok(Val::Bool(match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Le => o != Ordering::Greater,
                BinOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }))
        }
        BinOp::In => match b {
            Val::List(items) => {
                Ok(Val::Bool(items.iter().any(|i| {
                    binary(BinOp::Eq, a.clone(), i.clone()) == Ok(Val::Bool(true))
                })))
            }
            Val::Map(entries) => Ok(Val::Bool(
                matches!(&a, Val::Str(k) if entries.iter().any(|(key, _)| key == k)),
            )),
            other => Err(format!("in on {}", other.type_name())),
        },
        BinOp::Add => match (a, b) {
            (Val::Int(x), Val::Int(y)) => x
                .checked_add(y)
                .map(Val::Int)
                .ok_or_else(|| "overflow".into()),
            (Val::Double(x), Val::Double(y)) => Ok(Val::Double(x + y)),
            (Val::Str(x), Val::Str(y)) => Ok(Val::Str(x + &y)),
            (Val::List(mut x), Val::List(y)) => {
                x.extend(y);
                Ok(Val::List(x))
            }
            (Val::Duration(x), Val::Duration(y)) => Ok(Val::Duration(x + y)),
            (x, y) => Err(format!(
                "cannot add {} and {}",
                x.type_name(),
                y.type_name()
            )),
        },
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => match (a, b) {
            (Val::Int(x), Val::Int(y)) => match op {
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div => x.checked_div(y),
                _ => x.checked_rem(y),
            }
            .map(Val::Int)
            .ok_or_else(|| "arithmetic error".into()),
            (Val::Double(x), Val::Double(y)) => Ok(Val::Double(match op {
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => x % y,
            })),
            (x, y) => Err(format!(
                "arithmetic on {} and {}",
                x.type_name(),
                y.type_name()
            )),
        },
        BinOp::Or | BinOp::And => Err("unreachable logical operator".into()),
    }
}

static REGEX_CACHE: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);

fn matches(s: &str, pattern: &str) -> R {
    let mut cache = REGEX_CACHE
        .lock()
        .map_err(|_| "regex cache poisoned".to_string())?;
    if !cache.contains_key(pattern) {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad regex: {e}"))?;
        cache.insert(pattern.to_string(), re);
    }
    Ok(Val::Bool(
        cache.get(pattern).is_some_and(|re| re.is_match(s)),
    ))
}

/// The scheme of a URL as Kubernetes' `url()` parses it; `None` when the
/// text is not an absolute URL.
fn url_scheme(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (ok && !rest.contains(char::is_whitespace)).then(|| scheme.to_ascii_lowercase())
}

fn call(target: Option<Val>, name: &str, args: Vec<Val>) -> R {
    let mut all = Vec::with_capacity(args.len() + 1);
    all.extend(target);
    all.extend(args);
    match (name, all.as_slice()) {
        ("size", [Val::Str(s)]) => Ok(Val::Int(s.chars().count() as i64)),
        ("size", [Val::List(l)]) => Ok(Val::Int(l.len() as i64)),
        ("size", [Val::Map(m)]) => Ok(Val::Int(m.len() as i64)),
        ("startsWith", [Val::Str(s), Val::Str(p)]) => Ok(Val::Bool(s.starts_with(p.as_str()))),
        ("endsWith", [Val::Str(s), Val::Str(p)]) => Ok(Val::Bool(s.ends_with(p.as_str()))),
        ("contains", [Val::Str(s), Val::Str(p)]) => Ok(Val::Bool(s.contains(p.as_str()))),
        ("matches", [Val::Str(s), Val::Str(p)]) => matches(s, p),
        ("substring", [Val::Str(s), Val::Int(a), Val::Int(b)]) => {
            let chars: Vec<char> = s.chars().collect();
            let (a, b) = (usize::try_from(*a), usize::try_from(*b));
            match (a, b) {
                (Ok(a), Ok(b)) if a <= b && b <= chars.len() => {
                    Ok(Val::Str(chars[a..b].iter().collect()))
                }
                _ => Err("substring index out of range".into()),
            }
        }
        ("int", [Val::Int(i)]) => Ok(Val::Int(*i)),
        ("int", [Val::Double(d)]) if d.is_finite() => Ok(Val::Int(*d as i64)),
        ("int", [Val::Str(s)]) => s
            .parse::<i64>()
            .map(Val::Int)
            .map_err(|_| format!("cannot convert {s:?} to int")),
        ("string", [v]) => Ok(Val::Str(match v {
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Double(d) => d.to_string(),
            Val::Bool(b) => b.to_string(),
            other => return Err(format!("string() of {}", other.type_name())),
        })),
        ("duration", [Val::Str(s)]) => crate::duration::parse_nanos(s)
            .map(Val::Duration)
            .ok_or_else(|| format!("invalid duration {s:?}")),
        ("isURL", [Val::Str(s)]) => Ok(Val::Bool(url_scheme(s).is_some())),
        ("url", [Val::Str(s)]) => url_scheme(s)
            .map(Val::Url)
            .ok_or_else(|| format!("{s:?} is not a URL")),
        ("getScheme", [Val::Url(scheme)]) => Ok(Val::Str(scheme.clone())),
        _ => Err(format!(
            "no such overload: {name} with {} arguments",
            all.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::cel::parse::parse;

    fn run(rule: &str, this: Val) -> R {
        eval(&parse(rule).unwrap(), &this)
    }

    fn map(entries: &[(&str, Val)]) -> Val {
        Val::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn rules() {
        assert_eq!(
            run("0 < self && self <= 65535", Val::Int(99999)),
            Ok(Val::Bool(false))
        );
        assert_eq!(
            run("0 < self && self <= 65535", Val::Int(80)),
            Ok(Val::Bool(true))
        );
        assert_eq!(
            run("duration(self) >= duration('1ms')", Val::Str("300s".into())),
            Ok(Val::Bool(true))
        );
        assert_eq!(
            run("duration(self) >= duration('1ms')", Val::Str("1us".into())),
            Ok(Val::Bool(false))
        );
        let ports = Val::List(vec![
            map(&[("number", Val::Int(1))]),
            map(&[("number", Val::Int(1))]),
        ]);
        assert_eq!(
            run(
                "self.all(l1, self.exists_one(l2, l1.number == l2.number))",
                ports
            ),
            Ok(Val::Bool(false))
        );
        let se = map(&[
            ("resolution", Val::Str("DNS".into())),
            ("addresses", Val::List(vec![Val::Str("1.2.3.4/16".into())])),
        ]);
        let rule = "!((has(self.addresses) ? self.addresses : []).exists(k, k.contains(\"/\")) && !((has(self.resolution) ? self.resolution : \"NONE\") in [\"STATIC\", \"NONE\"]))";
        assert_eq!(run(rule, se), Ok(Val::Bool(false)));
        assert!(
            run(
                "self.startsWith(\"unix://\") ? (self.substring(7, 8) == \"/\") : true",
                Val::Str("unix://".into())
            )
            .is_err()
        );
        assert_eq!(
            run(
                "url(self).getScheme() in [\"http\", \"https\"]",
                Val::Str("https://x/y".into())
            ),
            Ok(Val::Bool(true))
        );
        assert_eq!(
            run("self.all(key, 0 < int(key))", map(&[("80", Val::Null)])),
            Ok(Val::Bool(true))
        );
        assert!(run("false || self.x", map(&[])).is_err());
        assert_eq!(run("true || self.x", map(&[])), Ok(Val::Bool(true)));
        assert_eq!(run("self.x || true", map(&[])), Ok(Val::Bool(true)));
    }
}
