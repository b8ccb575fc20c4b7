//! The PromQL subset the embedded evaluator understands, so the platform
//! pages without any Prometheus running. Rules use the same expressions
//! against Prometheus, where the full language applies.
//!
//! Supported: vector selectors with `=`, `!=`, `=~`, `!~` matchers; range
//! selectors as the argument of `rate`/`increase`; `histogram_quantile`,
//! `clamp_min`, `clamp_max`; `sum`/`min`/`max`/`avg`/`count` with
//! `by (..)`/`without (..)`; `+ - * /` between vectors (one-to-one on equal
//! label sets) or with scalars; numbers and parentheses.
//!
//! `rate` and `increase` extrapolate as Prometheus does: the reset-aware
//! increase between the first and last samples in the window, extended to
//! the window's edges only where a sample is near them (else by half an
//! interval, and never below zero), over the window's length. So a series
//! younger than the window (every series just after a start, or an error
//! series born with the fault) weighs what Prometheus weighs it, and the
//! exported rules page on the same data.

use std::{collections::HashMap, fmt, time::Duration};

use regex::Regex;

pub use promtext::Labels;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at character {at} of `{expr}`)")]
pub struct ParseError {
    pub message: String,
    pub at: usize,
    pub expr: String,
}

#[derive(Debug, Clone)]
pub enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
}

impl Matcher {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        match &self.op {
            MatchOp::Eq(v) => value == v,
            MatchOp::Ne(v) => value != v,
            MatchOp::Re(r) => r.is_match(value),
            MatchOp::NotRe(r) => !r.is_match(value),
        }
    }
}

/// `name{matchers}`; the name, when given, is also a `__name__` matcher.
#[derive(Debug, Clone)]
pub struct Selector {
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        self.name.as_deref().is_none_or(|n| n == name) && self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Sum,
    Min,
    Max,
    Avg,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum Expr {
    Number(f64),
    Vector(Selector),
    Rate { selector: Selector, range: Duration, increase: bool },
    Quantile { q: Box<Expr>, inner: Box<Expr> },
    Clamp { inner: Box<Expr>, bound: Box<Expr>, min: bool },
    Aggregate { op: Agg, grouping: Option<Grouping>, inner: Box<Expr> },
    Binary { op: BinOp, lhs: Box<Expr>, rhs: Box<Expr> },
    Neg(Box<Expr>),
}

impl Expr {
    /// Every selector in the expression, with the range it needs (zero for
    /// instant selectors): what a scrape store must keep.
    pub fn selectors(&self) -> Vec<(&Selector, Duration)> {
        let mut out = Vec::new();
        self.walk(&mut out);
        out
    }

    /// The label names every series of the result carries, when the
    /// expression fixes them (`sum by (route) (...)` → `route`); `None` when
    /// they are whatever the selected series have. What a silence may match.
    pub fn output_labels(&self) -> Option<std::collections::BTreeSet<String>> {
        match self {
            Expr::Number(_) => Some(Default::default()),
            Expr::Vector(_) | Expr::Rate { .. } => None,
            Expr::Quantile { inner, .. } => inner.output_labels().map(|mut l| {
                l.remove("le");
                l
            }),
            Expr::Clamp { inner, .. } | Expr::Neg(inner) => inner.output_labels(),
            Expr::Aggregate { grouping: None, .. } => Some(Default::default()),
            Expr::Aggregate { grouping: Some(Grouping::By(labels)), .. } => Some(labels.iter().cloned().collect()),
            Expr::Aggregate { grouping: Some(Grouping::Without(_)), .. } => None,
            Expr::Binary { lhs, rhs, .. } => {
                let (l, r) = (lhs.output_labels()?, rhs.output_labels()?);
                Some(l.union(&r).cloned().collect())
            }
        }
    }

    fn walk<'a>(&'a self, out: &mut Vec<(&'a Selector, Duration)>) {
        match self {
            Expr::Number(_) => {}
            Expr::Vector(s) => out.push((s, Duration::ZERO)),
            Expr::Rate { selector, range, .. } => out.push((selector, *range)),
            Expr::Quantile { q, inner } => {
                q.walk(out);
                inner.walk(out);
            }
            Expr::Clamp { inner, bound, .. } => {
                inner.walk(out);
                bound.walk(out);
            }
            Expr::Aggregate { inner, .. } | Expr::Neg(inner) => inner.walk(out),
            Expr::Binary { lhs, rhs, .. } => {
                lhs.walk(out);
                rhs.walk(out);
            }
        }
    }
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Dur(Duration),
    Punct(&'static str),
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let err = |message: String, at: usize| ParseError { message, at, expr: src.to_owned() };
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_brackets = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if in_brackets && c != ']' {
            let mut j = i;
            while j < chars.len() && chars[j] != ']' {
                j += 1;
            }
            let text: String = chars[i..j].iter().collect::<String>().trim().to_owned();
            if text.contains(':') {
                return Err(err(format!("subquery `[{text}]` is not supported"), start));
            }
            let range = parse_duration(&text).map_err(|why| err(format!("bad range `[{text}]`: {why}"), start))?;
            out.push((Tok::Dur(range), start));
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == ':') {
                j += 1;
            }
            out.push((Tok::Ident(chars[i..j].iter().collect()), start));
            i = j;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || chars[j] == '.'
                    || chars[j] == 'e'
                    || chars[j] == 'E'
                    || ((chars[j] == '-' || chars[j] == '+') && matches!(chars[j - 1], 'e' | 'E')))
            {
                j += 1;
            }
            let text: String = chars[i..j].iter().collect();
            out.push((Tok::Num(text.parse().map_err(|_| err(format!("bad number `{text}`"), start))?), start));
            i = j;
        } else if c == '"' || c == '\'' {
            let mut j = i + 1;
            let mut value = String::new();
            loop {
                match chars.get(j) {
                    None => return Err(err("unterminated string".into(), start)),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some('n') => value.push('\n'),
                            Some('t') => value.push('\t'),
                            Some(&other) => value.push(other),
                            None => return Err(err("unterminated string".into(), start)),
                        }
                        j += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        j += 1;
                    }
                }
            }
            out.push((Tok::Str(value), start));
            i = j + 1;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if let op @ ("==" | ">=" | "<=") = two.as_str() {
                return Err(err(
                    format!("comparison `{op}` is not supported in expr: the threshold goes in above/below"),
                    start,
                ));
            }
            let punct = match two.as_str() {
                "!=" => Some("!="),
                "=~" => Some("=~"),
                "!~" => Some("!~"),
                _ => None,
            };
            if let Some(p) = punct {
                out.push((Tok::Punct(p), start));
                i += 2;
                continue;
            }
            let p = match c {
                '(' => "(",
                ')' => ")",
                '{' => "{",
                '}' => "}",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '=' => "=",
                '>' | '<' => {
                    return Err(err(
                        format!("comparison `{c}` is not supported in expr: the threshold goes in above/below"),
                        start,
                    ));
                }
                '^' | '%' => return Err(err(format!("operator `{c}` is not supported"), start)),
                other => return Err(err(format!("unexpected `{other}`"), start)),
            };
            in_brackets = c == '[';
            out.push((Tok::Punct(p), start));
            i += 1;
        }
    }
    Ok(out)
}

/// The longest duration [`parse_duration`] accepts: ten years. Every
/// duration becomes milliseconds added to a timestamp somewhere (a rule's
/// `for`, a silence's end), and this keeps that arithmetic far from
/// overflowing `i64`.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// `30s`, `5m`, `1h`, `3d`, or a combination like `1h30m` (largest unit
/// first, each once), as PromQL writes them, up to [`MAX_DURATION`]. The
/// one duration syntax of rule files, ranges, intervals and silences.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty".to_string());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err("expected a number followed by s, m, h or d".to_string());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| "number too large".to_string())?;
        let unit_char = rest[digits..].chars().next().ok_or("missing unit (s, m, h or d)")?;
        let unit = match unit_char {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            other => return Err(format!("unknown unit `{other}` (use s, m, h or d)")),
        };
        if unit >= last_unit {
            return Err("units must go from largest to smallest, each once".to_string());
        }
        last_unit = unit;
        total = number
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| "number too large".to_string())?;
        rest = &rest[digits + unit_char.len_utf8()..];
    }
    let duration = Duration::from_secs(total);
    if duration > MAX_DURATION {
        return Err("longer than 3650d (ten years)".to_string());
    }
    Ok(duration)
}

/// Writes a duration the way [`parse_duration`] reads it and Prometheus
/// writes one (`7d`, `1h30m`, `0s`).
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, suffix) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{suffix}", secs / unit));
            secs %= unit;
        }
    }
    out
}

/// PromQL words outside the subset, with what to write instead.
fn keyword(word: &str) -> Option<String> {
    match word {
        "and" | "or" | "unless" => {
            Some(format!("`{word}` is not supported in expr: list extra conditions under `and:` (they must all hold)"))
        }
        "on" | "ignoring" | "group_left" | "group_right" => {
            Some(format!("`{word}` is not supported: binary operations match on identical label sets"))
        }
        "offset" | "bool" => Some(format!("`{word}` is not supported here")),
        _ => None,
    }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser { src, toks: lex(src)?, pos: 0 };
    let expr = p.expr()?;
    if let Some(tok) = p.peek().cloned() {
        let message = match tok {
            Tok::Ident(word) => keyword(&word).unwrap_or_else(|| format!("unexpected `{word}`")),
            Tok::Punct(punct) => format!("unexpected `{punct}`"),
            _ => "unexpected trailing input".to_owned(),
        };
        return Err(p.error(&message));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn error(&self, message: &str) -> ParseError {
        let at = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
        ParseError { message: message.to_owned(), at, expr: self.src.to_owned() }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) { Ok(()) } else { Err(self.error(&format!("expected `{p}`"))) }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.term()?;
        loop {
            let op = if self.eat("+") {
                BinOp::Add
            } else if self.eat("-") {
                BinOp::Sub
            } else {
                return Ok(lhs);
            };
            let rhs = self.term()?;
            lhs = Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.eat("*") {
                BinOp::Mul
            } else if self.eat("/") {
                BinOp::Div
            } else {
                return Ok(lhs);
            };
            let rhs = self.unary()?;
            lhs = Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Number(n))
            }
            Some(Tok::Punct("(")) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Some(Tok::Punct("{")) => Ok(Expr::Vector(self.selector(None)?)),
            Some(Tok::Ident(name)) => {
                if let Some(message) = keyword(&name) {
                    return Err(self.error(&message));
                }
                self.pos += 1;
                let agg = match name.as_str() {
                    "sum" => Some(Agg::Sum),
                    "min" => Some(Agg::Min),
                    "max" => Some(Agg::Max),
                    "avg" => Some(Agg::Avg),
                    "count" => Some(Agg::Count),
                    _ => None,
                };
                if let Some(op) = agg {
                    let mut grouping = self.grouping()?;
                    self.expect("(")?;
                    let inner = self.expr()?;
                    self.expect(")")?;
                    if grouping.is_none() {
                        grouping = self.grouping()?;
                    }
                    return Ok(Expr::Aggregate { op, grouping, inner: Box::new(inner) });
                }
                if matches!(self.peek(), Some(Tok::Punct("("))) {
                    return self.call(&name);
                }
                let selector = self.selector(Some(name))?;
                if matches!(self.peek(), Some(Tok::Punct("["))) {
                    return Err(self.error("a range vector only goes inside rate() or increase()"));
                }
                Ok(Expr::Vector(selector))
            }
            _ => Err(self.error("expected a number, selector, function or `(`")),
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let by = match self.peek() {
            Some(Tok::Ident(w)) if w == "by" => true,
            Some(Tok::Ident(w)) if w == "without" => false,
            _ => return Ok(None),
        };
        self.pos += 1;
        self.expect("(")?;
        let mut labels = Vec::new();
        while !self.eat(")") {
            match self.peek().cloned() {
                Some(Tok::Ident(l)) => {
                    self.pos += 1;
                    labels.push(l);
                    self.eat(",");
                }
                _ => return Err(self.error("expected a label name")),
            }
        }
        Ok(Some(if by { Grouping::By(labels) } else { Grouping::Without(labels) }))
    }

    fn call(&mut self, name: &str) -> Result<Expr, ParseError> {
        self.expect("(")?;
        let expr = match name {
            "rate" | "increase" => {
                let selector = match self.peek().cloned() {
                    Some(Tok::Ident(n)) => {
                        self.pos += 1;
                        self.selector(Some(n))?
                    }
                    Some(Tok::Punct("{")) => self.selector(None)?,
                    _ => return Err(self.error(&format!("{name}() needs a range vector like metric[5m]"))),
                };
                if !self.eat("[") {
                    return Err(self.error(&format!("{name}() needs a range vector like metric[5m]")));
                }
                let range = match self.peek().cloned() {
                    Some(Tok::Dur(d)) if !d.is_zero() => {
                        self.pos += 1;
                        d
                    }
                    _ => return Err(self.error("expected a duration")),
                };
                self.expect("]")?;
                Expr::Rate { selector, range, increase: name == "increase" }
            }
            "histogram_quantile" => {
                let q = self.expr()?;
                self.expect(",")?;
                let inner = self.expr()?;
                Expr::Quantile { q: Box::new(q), inner: Box::new(inner) }
            }
            "clamp_min" | "clamp_max" => {
                let inner = self.expr()?;
                self.expect(",")?;
                let bound = self.expr()?;
                Expr::Clamp { inner: Box::new(inner), bound: Box::new(bound), min: name == "clamp_min" }
            }
            other => return Err(self.error(&format!("function `{other}` is not supported by the embedded evaluator"))),
        };
        self.expect(")")?;
        Ok(expr)
    }

    fn selector(&mut self, name: Option<String>) -> Result<Selector, ParseError> {
        let mut matchers = Vec::new();
        if self.eat("{") {
            while !self.eat("}") {
                let label = match self.peek().cloned() {
                    Some(Tok::Ident(l)) => l,
                    _ => return Err(self.error("expected a label name")),
                };
                self.pos += 1;
                let op = match self.peek() {
                    Some(Tok::Punct(p @ ("=" | "!=" | "=~" | "!~"))) => *p,
                    _ => return Err(self.error("expected =, !=, =~ or !~")),
                };
                self.pos += 1;
                let value = match self.peek().cloned() {
                    Some(Tok::Str(v)) => v,
                    _ => return Err(self.error("expected a quoted label value")),
                };
                let re = |v: &str, p: &Self| {
                    Regex::new(&format!("^(?:{v})$"))
                        .map_err(|e| p.error(&format!("regex `{v}` does not compile: {e}")))
                };
                let op = match op {
                    "=" => MatchOp::Eq(value),
                    "!=" => MatchOp::Ne(value),
                    "=~" => MatchOp::Re(re(&value, self)?),
                    _ => MatchOp::NotRe(re(&value, self)?),
                };
                self.pos += 1;
                matchers.push(Matcher { label, op });
                self.eat(",");
            }
        }
        let mut name = name;
        matchers.retain(|m| match (&m.label[..], &m.op) {
            ("__name__", MatchOp::Eq(v)) => {
                name = Some(v.clone());
                false
            }
            _ => true,
        });
        if name.is_none() && matchers.is_empty() {
            return Err(self.error("a selector needs a metric name or a matcher"));
        }
        Ok(Selector { name, matchers })
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        })
    }
}

// ------------------------------------------------------------- evaluation

/// Receives one series' labels and its points in a window.
pub type PointVisitor<'a> = dyn FnMut(&Labels, &mut dyn Iterator<Item = (i64, f64)>) + 'a;

/// Where the evaluator reads samples from. Labels include `__name__`.
pub trait SeriesSource {
    /// The current value of every matching series (stale series excluded).
    fn instant(&self, selector: &Selector) -> Vec<Sample>;
    /// Calls `f` with every matching series and its points within the last
    /// `range`, oldest first (borrowed: evaluation allocates per result,
    /// not per point).
    fn range(&self, selector: &Selector, range: Duration, f: &mut PointVisitor<'_>);
    /// The instant being evaluated (Unix ms): the end of every range.
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

impl Value {
    pub fn into_samples(self) -> Vec<Sample> {
        match self {
            Value::Scalar(v) => vec![Sample { labels: Labels::new(), value: v }],
            Value::Vector(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// Prometheus's `extrapolatedRate` for a counter: the increase `delta`
/// between the `first` and `last` of `n` samples, extended toward the edges
/// of the window ending at `end_ms`. An edge within 1.1 average intervals of
/// a sample is reached; a farther one (the series began, or stopped, inside
/// the window) only by half an interval; and never back past the point
/// where the counter would have been zero.
fn extrapolated(delta: f64, first: (i64, f64), last: (i64, f64), n: usize, end_ms: i64, range: Duration) -> f64 {
    let range_s = range.as_secs_f64();
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let mut to_start = (first.0 - (end_ms - range.as_millis() as i64)) as f64 / 1000.0;
    let mut to_end = (end_ms - last.0) as f64 / 1000.0;
    let average = sampled / (n - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if delta > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / delta);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let covered = (sampled + to_start.max(0.0) + to_end.max(0.0)).min(range_s.max(sampled));
    delta * covered / sampled
}

pub fn eval(expr: &Expr, source: &dyn SeriesSource) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Number(n) => Value::Scalar(*n),
        Expr::Vector(sel) => Value::Vector(source.instant(sel)),
        Expr::Rate { selector, range, increase } => {
            let mut out = Vec::new();
            let end = source.now_ms();
            source.range(selector, *range, &mut |labels, points| {
                let Some(first) = points.next() else { return };
                let (mut last, mut delta, mut n) = (first, 0.0, 1);
                for p in points {
                    // A counter that went down was reset: it counted from
                    // zero to its new value.
                    delta += if p.1 >= last.1 { p.1 - last.1 } else { p.1 };
                    last = p;
                    n += 1;
                }
                if n < 2 || last.0 <= first.0 {
                    return;
                }
                let value = extrapolated(delta, first, last, n, end, *range);
                let value = if *increase { value } else { value / range.as_secs_f64() };
                out.push(Sample { labels: without_name(labels.clone()), value });
            });
            Value::Vector(out)
        }
        Expr::Neg(inner) => match eval(inner, source)? {
            Value::Scalar(v) => Value::Scalar(-v),
            Value::Vector(v) => Value::Vector(
                v.into_iter().map(|s| Sample { labels: without_name(s.labels), value: -s.value }).collect(),
            ),
        },
        Expr::Clamp { inner, bound, min } => {
            let Value::Scalar(b) = eval(bound, source)? else {
                return Err(EvalError("clamp bound must be a number".into()));
            };
            let f = |v: f64| if *min { v.max(b) } else { v.min(b) };
            match eval(inner, source)? {
                Value::Scalar(v) => Value::Scalar(f(v)),
                Value::Vector(v) => Value::Vector(
                    v.into_iter().map(|s| Sample { labels: without_name(s.labels), value: f(s.value) }).collect(),
                ),
            }
        }
        Expr::Aggregate { op, grouping, inner } => {
            let samples = eval(inner, source)?.into_samples();
            let mut groups: HashMap<Labels, Vec<f64>> = HashMap::new();
            for s in samples {
                let key: Labels = match grouping {
                    None => Labels::new(),
                    Some(Grouping::By(keep)) => s.labels.into_iter().filter(|(k, _)| keep.contains(k)).collect(),
                    Some(Grouping::Without(drop)) => {
                        s.labels.into_iter().filter(|(k, _)| k != "__name__" && !drop.contains(k)).collect()
                    }
                };
                groups.entry(key).or_default().push(s.value);
            }
            Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, values)| {
                        let n = values.len() as f64;
                        let value = match op {
                            Agg::Sum => values.iter().sum(),
                            Agg::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
                            Agg::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            Agg::Avg => values.iter().sum::<f64>() / n,
                            Agg::Count => n,
                        };
                        Sample { labels, value }
                    })
                    .collect(),
            )
        }
        Expr::Quantile { q, inner } => {
            let Value::Scalar(q) = eval(q, source)? else {
                return Err(EvalError("histogram_quantile's first argument must be a number".into()));
            };
            let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
            for s in eval(inner, source)?.into_samples() {
                let mut labels = without_name(s.labels);
                let Some(le) = labels.remove("le") else { continue };
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                if !bound.is_nan() {
                    groups.entry(labels).or_default().push((bound, s.value));
                }
            }
            Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, mut buckets)| {
                        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                        Sample { labels, value: bucket_quantile(q, &buckets) }
                    })
                    .collect(),
            )
        }
        Expr::Binary { op, lhs, rhs } => {
            let apply = |a: f64, b: f64| match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
            };
            match (eval(lhs, source)?, eval(rhs, source)?) {
                (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(apply(a, b)),
                (Value::Vector(v), Value::Scalar(b)) => Value::Vector(
                    v.into_iter()
                        .map(|s| Sample { labels: without_name(s.labels), value: apply(s.value, b) })
                        .collect(),
                ),
                (Value::Scalar(a), Value::Vector(v)) => Value::Vector(
                    v.into_iter()
                        .map(|s| Sample { labels: without_name(s.labels), value: apply(a, s.value) })
                        .collect(),
                ),
                (Value::Vector(l), Value::Vector(r)) => {
                    let right: HashMap<Labels, f64> =
                        r.into_iter().map(|s| (without_name(s.labels), s.value)).collect();
                    Value::Vector(
                        l.into_iter()
                            .filter_map(|s| {
                                let labels = without_name(s.labels);
                                let b = *right.get(&labels)?;
                                Some(Sample { value: apply(s.value, b), labels })
                            })
                            .collect(),
                    )
                }
            }
        }
    })
}

fn without_name(mut labels: Labels) -> Labels {
    labels.remove("__name__");
    labels
}

pub use promtext::bucket_quantile;

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed set of series: name → (labels, points).
    /// Name, labels and points of one series.
    type FixedSeries = (String, Labels, Vec<(i64, f64)>);

    struct Fixed(Vec<FixedSeries>);

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    impl SeriesSource for Fixed {
        fn instant(&self, sel: &Selector) -> Vec<Sample> {
            self.0
                .iter()
                .filter(|(n, l, _)| sel.matches(n, l))
                .map(|(n, l, p)| {
                    let mut labels = l.clone();
                    labels.insert("__name__".into(), n.clone());
                    Sample { labels, value: p.last().unwrap().1 }
                })
                .collect()
        }

        fn range(&self, sel: &Selector, _: Duration, f: &mut PointVisitor<'_>) {
            for (_, l, p) in self.0.iter().filter(|(n, l, _)| sel.matches(n, l)) {
                f(l, &mut p.iter().copied());
            }
        }

        fn now_ms(&self) -> i64 {
            self.0.iter().filter_map(|(_, _, p)| p.last().map(|x| x.0)).max().unwrap_or_default()
        }
    }

    fn value(expr: &str, source: &Fixed) -> Vec<Sample> {
        eval(&parse(expr).unwrap(), source).unwrap().into_samples()
    }

    #[test]
    fn an_error_ratio_divides_matched_rates() {
        let s = Fixed(vec![
            ("req".into(), labels(&[("status", "200")]), vec![(0, 0.0), (10_000, 90.0)]),
            ("req".into(), labels(&[("status", "503")]), vec![(0, 5.0), (10_000, 15.0)]),
        ]);
        let v = value(r#"sum(rate(req{status=~"5.."}[1m])) / sum(rate(req[1m]))"#, &s);
        assert_eq!(v.len(), 1);
        // As Prometheus extrapolates: the 503 counter back half an interval
        // (5 s, where it would have been 0), the 200 one not at all (it
        // starts at 0): 15 of 105.
        assert!((v[0].value - 15.0 / 105.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn a_series_younger_than_the_window_is_not_stretched_over_it() {
        // Two minutes of a steady 1/s counter in a 1h window: Prometheus
        // extrapolates half an interval past each end, not to the window's
        // start, and divides by the window.
        let points: Vec<(i64, f64)> = (0..=24).map(|i| (i * 5_000, 1000.0 + i as f64 * 5.0)).collect();
        let s = Fixed(vec![("c".into(), Labels::new(), points)]);
        let v = value("rate(c[1h])", &s);
        assert!((v[0].value - 122.5 / 3600.0).abs() < 1e-9, "{v:?}");
        let v = value("increase(c[1h])", &s);
        assert!((v[0].value - 122.5).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        let s = Fixed(vec![("c".into(), Labels::new(), vec![(0, 50.0), (5_000, 60.0), (10_000, 4.0)])]);
        let v = value("increase(c[10s])", &s);
        assert!((v[0].value - 14.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        let b = |le: &str, n: f64| {
            ("h_bucket".to_string(), labels(&[("le", le), ("route", "/a")]), vec![(0, 0.0), (1000, n)])
        };
        let s = Fixed(vec![b("0.1", 50.0), b("0.5", 90.0), b("1", 100.0), b("+Inf", 100.0)]);
        let v = value("histogram_quantile(0.95, sum by (le) (rate(h_bucket[1m])))", &s);
        // rank 95 of 100 falls in (0.5, 1] holding 10: 0.5 + 0.5 * 5/10.
        assert!((v[0].value - 0.75).abs() < 1e-9, "{v:?}");
        assert!(v[0].labels.is_empty());
    }

    #[test]
    fn vectors_match_on_equal_label_sets_only() {
        let s = Fixed(vec![
            ("a".into(), labels(&[("pool", "x")]), vec![(0, 3.0)]),
            ("a".into(), labels(&[("pool", "y")]), vec![(0, 1.0)]),
            ("b".into(), labels(&[("pool", "x")]), vec![(0, 4.0)]),
        ]);
        let v = value("a / b", &s);
        assert_eq!(v, vec![Sample { labels: labels(&[("pool", "x")]), value: 0.75 }]);
        assert_eq!(value("sum without (pool) (a) * 2", &s)[0].value, 8.0);
        assert_eq!(value("clamp_min(b, 10)", &s)[0].value, 10.0);
    }

    #[test]
    fn unsupported_syntax_is_named_with_its_position() {
        for (expr, want) in [
            ("rate(x[5m]) > 1", "comparison `>` is not supported"),
            ("predict_linear(x[1h], 60)", "not supported"),
            ("x[5m]", "only goes inside rate"),
            ("rate(x[5x])", "bad range `[5x]`"),
            ("sum(x", "expected `)`"),
            ("x{a=\"b}", "unterminated"),
        ] {
            let e = parse(expr).unwrap_err();
            assert!(e.to_string().contains(want), "{expr}: {e}");
        }
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    }
}
