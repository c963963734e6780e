//! Lexer and parser for the subset of CEL that Istio's CRD rules use.

/// A parsed CEL expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Lit(Lit),
    /// A variable (`self`, or a macro's bound name).
    Ident(String),
    /// `operand.field`.
    Select(Box<Expr>, String),
    /// `has(operand.field)`.
    Has(Box<Expr>, String),
    /// `f(args)` or `target.f(args)`.
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    /// `target.all(var, pred)` and the other comprehension macros.
    Macro(Box<Expr>, MacroKind, String, Box<Expr>),
    /// `a[b]`.
    Index(Box<Expr>, Box<Expr>),
    /// A unary operator.
    Unary(UnOp, Box<Expr>),
    /// A binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `[a, b]`.
    List(Vec<Expr>),
    /// `{k: v}`.
    Map(Vec<(Expr, Expr)>),
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    Str(String),
}

/// Comprehension macros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroKind {
    /// `all`
    All,
    /// `exists`
    Exists,
    /// `exists_one`
    ExistsOne,
    /// `map`
    Map,
    /// `filter`
    Filter,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `!`
    Not,
    /// `-`
    Neg,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Double(f64),
    Str(String),
    Op(&'static str),
}

const OPS: [&str; 24] = [
    "||", "&&", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}",
];

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if i < chars.len() && (chars[i] == 'u' || chars[i] == 'U') {
                i += 1;
            }
            if text.contains('.') {
                toks.push(Tok::Double(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            } else {
                toks.push(Tok::Int(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            }
        } else if c == '"' || c == '\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err("unterminated string".into());
                };
                i += 1;
                if ch == quote {
                    break;
                }
                if ch == '\\' {
                    let Some(&esc) = chars.get(i) else {
                        return Err("unterminated escape".into());
                    };
                    i += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                } else {
                    s.push(ch);
                }
            }
            toks.push(Tok::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(*op))
                .ok_or_else(|| format!("unexpected character {c:?}"))?;
            i += op.chars().count();
            toks.push(Tok::Op(op));
        }
    }
    Ok(toks)
}

/// Parse a CEL expression.
pub fn parse(src: &str) -> Result<Expr, String> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.peek_op(op);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(format!("expected {op:?} at token {}", self.pos))
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err("expression nests too deeply".into());
        }
        let cond = self.binary(0, depth)?;
        if self.eat_op("?") {
            let a = self.expr(depth + 1)?;
            self.expect_op(":")?;
            let b = self.expr(depth + 1)?;
            return Ok(Expr::Cond(Box::new(cond), Box::new(a), Box::new(b)));
        }
        Ok(cond)
    }

    fn binop_at(&self, level: usize) -> Option<BinOp> {
        let tok = self.toks.get(self.pos)?;
        let op = match tok {
            Tok::Op(o) => *o,
            Tok::Ident(i) if i == "in" => "in",
            _ => return None,
        };
        let (lvl, bop) = match op {
            "||" => (0, BinOp::Or),
            "&&" => (1, BinOp::And),
            "==" => (2, BinOp::Eq),
            "!=" => (2, BinOp::Ne),
            "<" => (2, BinOp::Lt),
            "<=" => (2, BinOp::Le),
            ">" => (2, BinOp::Gt),
            ">=" => (2, BinOp::Ge),
            "in" => (2, BinOp::In),
            "+" => (3, BinOp::Add),
            "-" => (3, BinOp::Sub),
            "*" => (4, BinOp::Mul),
            "/" => (4, BinOp::Div),
            "%" => (4, BinOp::Rem),
            _ => return None,
        };
        (lvl == level).then_some(bop)
    }

    fn binary(&mut self, level: usize, depth: usize) -> Result<Expr, String> {
        if level > 4 {
            return self.unary(depth);
        }
        let mut lhs = self.binary(level + 1, depth)?;
        while let Some(op) = self.binop_at(level) {
            self.pos += 1;
            let rhs = self.binary(level + 1, depth)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err("expression nests too deeply".into());
        }
        if self.eat_op("!") {
            return Ok(Expr::Unary(UnOp::Not, Box::new(self.unary(depth + 1)?)));
        }
        if self.eat_op("-") {
            return Ok(Expr::Unary(UnOp::Neg, Box::new(self.unary(depth + 1)?)));
        }
        let mut e = self.primary(depth)?;
        loop {
            if self.eat_op(".") {
                let name = self.ident()?;
                if self.eat_op("(") {
                    let args = self.args(")", depth)?;
                    e = make_call(Some(e), name, args)?;
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat_op("[") {
                let idx = self.expr(depth + 1)?;
                self.expect_op("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.pos) {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected identifier, found {other:?}")),
        }
    }

    fn args(&mut self, close: &str, depth: usize) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        if self.eat_op(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr(depth + 1)?);
            if self.eat_op(close) {
                return Ok(args);
            }
            self.expect_op(",")?;
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of rule")?;
        self.pos += 1;
        match tok {
            Tok::Int(i) => Ok(Expr::Lit(Lit::Int(i))),
            Tok::Double(d) => Ok(Expr::Lit(Lit::Double(d))),
            Tok::Str(s) => Ok(Expr::Lit(Lit::Str(s))),
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Lit(Lit::Bool(true))),
                "false" => Ok(Expr::Lit(Lit::Bool(false))),
                "null" => Ok(Expr::Lit(Lit::Null)),
                _ if self.eat_op("(") => {
                    let args = self.args(")", depth)?;
                    make_call(None, name, args)
                }
                _ => Ok(Expr::Ident(name)),
            },
            Tok::Op("(") => {
                let e = self.expr(depth + 1)?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("[") => Ok(Expr::List(self.args("]", depth)?)),
            Tok::Op("{") => {
                let mut entries = Vec::new();
                if !self.eat_op("}") {
                    loop {
                        let k = self.expr(depth + 1)?;
                        self.expect_op(":")?;
                        let v = self.expr(depth + 1)?;
                        entries.push((k, v));
                        if self.eat_op("}") {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                Ok(Expr::Map(entries))
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }
}

fn make_call(target: Option<Expr>, name: String, mut args: Vec<Expr>) -> Result<Expr, String> {
    let kind = match name.as_str() {
        "all" => Some(MacroKind::All),
        "exists" => Some(MacroKind::Exists),
        "exists_one" => Some(MacroKind::ExistsOne),
        "map" => Some(MacroKind::Map),
        "filter" => Some(MacroKind::Filter),
        _ => None,
    };
    match (target, kind) {
        (Some(t), Some(kind)) if args.len() == 2 => {
            let body = args.pop().unwrap_or(Expr::Lit(Lit::Null));
            let Some(Expr::Ident(var)) = args.pop() else {
                return Err(format!("{name}() needs a variable name first"));
            };
            Ok(Expr::Macro(Box::new(t), kind, var, Box::new(body)))
        }
        (None, None) if name == "has" => match args.pop() {
            Some(Expr::Select(operand, field)) if args.is_empty() => Ok(Expr::Has(operand, field)),
            _ => Err("has() takes one field selection".into()),
        },
        (t, _) => Ok(Expr::Call(t.map(Box::new), name, args)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_shapes() {
        for rule in [
            "(has(self.address) ? self.address : \"\").startsWith(\"unix://\") ? !has(self.ports) : true",
            "self.all(l1, self.exists_one(l2, l1.number == l2.number))",
            "duration(self) >= duration('1ms')",
            "self in [\"\", \"HTTP\", \"HTTPS\"]",
            "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true",
        ] {
            parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        }
        assert!(parse("has(self)").is_err());
        assert!(parse("1 +").is_err());
        assert!(parse(&"(".repeat(500)).is_err());
    }
}
