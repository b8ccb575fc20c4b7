//! `problem_if`: when a step's output means "this is the problem".
//!
//! A small expression language over the step's JSON output, parsed when the
//! runbook is loaded so a typo fails `runbook list`, not a 3 a.m. run:
//!
//! ```text
//! count > 0
//! ratio > 0.85 and policy == "noeviction"
//! policy not in ["volatile-lru", "volatile-lfu"]
//! enabled or by_state.idle_in_transaction >= 5
//! not up
//! ```
//!
//! Paths walk objects with `.` and arrays with `[n]`. A missing path is
//! `null`, and `null` is never above or below anything, so a figure a server
//! could not report (Redis without `maxmemory` has no ratio) does not count
//! as a problem.

use std::fmt;

use serde_json::Value;

/// A parsed `problem_if`, with its source kept for messages and output.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare { path: Path, op: Op, value: Value },
    In { path: Path, values: Vec<Value>, negate: bool },
    Truthy(Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<Segment>);

impl Path {
    fn lookup<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for segment in &self.0 {
            value = match segment {
                Segment::Key(k) => value.get(k)?,
                Segment::Index(i) => value.get(i)?,
            };
        }
        Some(value)
    }

    fn root(&self) -> &str {
        match self.0.first() {
            Some(Segment::Key(k)) => k,
            _ => "",
        }
    }
}

impl Condition {
    pub fn parse(source: &str) -> Result<Self, String> {
        let tokens = tokenize(source)?;
        if tokens.is_empty() {
            return Err("problem_if is empty".into());
        }
        let mut parser = Parser { tokens, at: 0 };
        let expr = parser.or()?;
        if let Some(extra) = parser.tokens.get(parser.at) {
            return Err(format!("unexpected {extra} in `{source}`"));
        }
        Ok(Self { source: source.trim().to_string(), expr })
    }

    /// Whether `output` is a problem.
    pub fn holds(&self, output: &Value) -> bool {
        eval(&self.expr, output)
    }

    /// The top-level output fields the condition reads, to check them
    /// against what the step's action returns.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        collect(&self.expr, &mut out);
        out
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn collect<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) {
    match expr {
        Expr::Or(a, b) | Expr::And(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        Expr::Not(e) => collect(e, out),
        Expr::Compare { path, .. } | Expr::In { path, .. } | Expr::Truthy(path) => out.push(path.root()),
    }
}

fn eval(expr: &Expr, output: &Value) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, output) || eval(b, output),
        Expr::And(a, b) => eval(a, output) && eval(b, output),
        Expr::Not(e) => !eval(e, output),
        Expr::Compare { path, op, value } => {
            let actual = path.lookup(output).unwrap_or(&Value::Null);
            compare(actual, *op, value)
        }
        Expr::In { path, values, negate } => {
            let actual = path.lookup(output).unwrap_or(&Value::Null);
            values.iter().any(|v| equal(actual, v)) != *negate
        }
        Expr::Truthy(path) => match path.lookup(output) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(Value::Null) | None => false,
        },
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compare(actual: &Value, op: Op, expected: &Value) -> bool {
    match op {
        Op::Eq => equal(actual, expected),
        Op::Ne => !equal(actual, expected),
        _ => {
            let (Some(a), Some(b)) = (actual.as_f64(), expected.as_f64()) else { return false };
            match op {
                Op::Gt => a > b,
                Op::Ge => a >= b,
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Eq | Op::Ne => unreachable!("handled above"),
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number(f64),
    Str(String),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Number(n) => write!(f, "`{n}`"),
            Token::Str(s) => write!(f, "{s:?}"),
            Token::Op(op) => write!(f, "`{}`", op_text(*op)),
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::LBracket => f.write_str("`[`"),
            Token::RBracket => f.write_str("`]`"),
            Token::Comma => f.write_str("`,`"),
            Token::Dot => f.write_str("`.`"),
        }
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Eq => "==",
        Op::Ne => "!=",
    }
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' | ')' | '[' | ']' | ',' | '.' => {
                tokens.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    '[' => Token::LBracket,
                    ']' => Token::RBracket,
                    ',' => Token::Comma,
                    _ => Token::Dot,
                });
                i += 1;
            }
            '>' | '<' | '=' | '!' => {
                let (op, len) = match (c, next) {
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('>', _) => (Op::Gt, 1),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    _ => return Err(format!("unknown operator `{c}` (use ==, !=, >, >=, <, <=, and, or, not, in)")),
                };
                tokens.push(Token::Op(op));
                i += len;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            s.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                tokens.push(Token::Str(s));
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                    // An exponent sign belongs to the number: 1e-3.
                    if matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('-' | '+')) {
                        i += 1;
                    }
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
                let n = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
                tokens.push(Token::Number(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character `{other}`")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w == word)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, token: Token) -> Result<(), String> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            Some(t) => Err(format!("expected {token}, found {t}")),
            None => Err(format!("expected {token} at the end")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::LParen) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(Token::RParen)?;
            return Ok(inner);
        }
        let path = self.path()?;
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.at += 1;
                Ok(Expr::Compare { path, op, value: self.literal()? })
            }
            Some(Token::Ident(w)) if w == "in" => {
                self.at += 1;
                Ok(Expr::In { path, values: self.list()?, negate: false })
            }
            Some(Token::Ident(w))
                if w == "not" && matches!(self.tokens.get(self.at + 1), Some(Token::Ident(n)) if n == "in") =>
            {
                self.at += 2;
                Ok(Expr::In { path, values: self.list()?, negate: true })
            }
            _ => Ok(Expr::Truthy(path)),
        }
    }

    fn path(&mut self) -> Result<Path, String> {
        let mut segments = match self.next() {
            Some(Token::Ident(w)) if !is_keyword(&w) => vec![Segment::Key(w)],
            Some(t) => return Err(format!("expected an output field, found {t}")),
            None => return Err("expected an output field at the end".into()),
        };
        loop {
            match self.peek() {
                Some(Token::Dot) => {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Ident(w)) => segments.push(Segment::Key(w)),
                        _ => return Err("expected a field name after `.` (index arrays with [n])".into()),
                    }
                }
                Some(Token::LBracket) => {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Number(n)) if n >= 0.0 && n.fract() == 0.0 => {
                            segments.push(Segment::Index(n as usize))
                        }
                        _ => return Err("expected an array index like [0]".into()),
                    }
                    self.expect(Token::RBracket)?;
                }
                _ => return Ok(Path(segments)),
            }
        }
    }

    fn literal(&mut self) -> Result<Value, String> {
        match self.next() {
            Some(Token::Number(n)) => Ok(serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null)),
            Some(Token::Str(s)) => Ok(Value::String(s)),
            Some(Token::Ident(w)) if w == "true" => Ok(Value::Bool(true)),
            Some(Token::Ident(w)) if w == "false" => Ok(Value::Bool(false)),
            Some(Token::Ident(w)) if w == "null" => Ok(Value::Null),
            Some(Token::Ident(w)) => {
                Err(format!("expected a number, a \"string\", true, false or null, found `{w}` (quote strings)"))
            }
            Some(t) => Err(format!("expected a value, found {t}")),
            None => Err("expected a value at the end".into()),
        }
    }

    fn list(&mut self) -> Result<Vec<Value>, String> {
        self.expect(Token::LBracket)?;
        let mut values = Vec::new();
        if self.peek() == Some(&Token::RBracket) {
            self.at += 1;
            return Ok(values);
        }
        loop {
            values.push(self.literal()?);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::RBracket) => return Ok(values),
                _ => return Err("expected `,` or `]` in a list".into()),
            }
        }
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(w, "and" | "or" | "not" | "in" | "true" | "false" | "null")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn holds(condition: &str, output: Value) -> bool {
        Condition::parse(condition).unwrap_or_else(|e| panic!("{condition}: {e}")).holds(&output)
    }

    #[test]
    fn comparisons_read_numbers_strings_and_booleans() {
        assert!(holds("count > 0", json!({"count": 1})));
        assert!(!holds("count > 0", json!({"count": 0})));
        assert!(holds("ratio >= 0.85", json!({"ratio": 0.85})));
        assert!(holds("policy == \"noeviction\"", json!({"policy": "noeviction"})));
        assert!(holds("enabled == true", json!({"enabled": true})));
        assert!(holds("seconds < 1e-2", json!({"seconds": 0.001})));
        assert!(holds("count != 3", json!({"count": 2})));
    }

    #[test]
    fn a_missing_or_null_figure_is_never_a_problem_by_comparison() {
        assert!(!holds("ratio > 0.85", json!({"ratio": null})));
        assert!(!holds("ratio > 0.85", json!({})));
        assert!(!holds("ratio < 0.85", json!({})));
        assert!(holds("ratio == null", json!({})));
    }

    #[test]
    fn and_or_not_and_parentheses_combine_with_the_usual_precedence() {
        let out = json!({"a": 1, "b": 0, "up": false});
        assert!(holds("a > 0 or b > 0 and up", out.clone()));
        assert!(!holds("(a > 0 or b > 0) and up", out.clone()));
        assert!(holds("not up", out.clone()));
        assert!(holds("not (b > 0)", out));
    }

    #[test]
    fn membership_and_paths_into_objects_and_arrays() {
        let out = json!({"policy": "allkeys-lru", "by_state": {"idle_in_transaction": 6}, "routes": [{"ratio": 0.2}]});
        assert!(holds("policy not in [\"volatile-lru\", \"volatile-ttl\"]", out.clone()));
        assert!(!holds("policy in [\"volatile-lru\"]", out.clone()));
        assert!(holds("by_state.idle_in_transaction >= 5", out.clone()));
        assert!(holds("routes[0].ratio > 0.1", out.clone()));
        assert!(!holds("routes[3].ratio > 0.1", out));
    }

    #[test]
    fn fields_name_the_top_level_outputs_read() {
        let c = Condition::parse("ratio > 0.8 or (by_state.active > 3 and not enabled)").unwrap();
        assert_eq!(c.fields(), ["ratio", "by_state", "enabled"]);
    }

    #[test]
    fn malformed_conditions_are_rejected_with_a_reason() {
        for (bad, reason) in [
            ("", "empty"),
            ("count >", "expected a value"),
            ("count > 0 and", "expected an output field"),
            ("policy == noeviction", "quote strings"),
            ("count = 1", "unknown operator"),
            ("count > 0 )", "unexpected `)`"),
            ("policy in [\"a\" \"b\"]", "expected `,` or `]`"),
            ("(count > 0", "expected `)`"),
            ("name == \"x", "unterminated"),
            ("a > 1.2.3", "not a number"),
        ] {
            let err = Condition::parse(bad).expect_err(bad);
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }
}
