//! The recursive-descent parser: tokens into an [`Expr`].

use super::*;

pub(super) struct Parser<'a> {
    pub(super) src: &'a str,
    pub(super) toks: Vec<(Tok, usize)>,
    pub(super) pos: usize,
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
    pub(super) fn error(&self, message: &str) -> ParseError {
        let at = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
        ParseError { message: message.to_owned(), at, expr: self.src.to_owned() }
    }

    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    pub(super) fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) { Ok(()) } else { Err(self.error(&format!("expected `{p}`"))) }
    }

    pub(super) fn expr(&mut self) -> Result<Expr, ParseError> {
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

    pub(super) fn term(&mut self) -> Result<Expr, ParseError> {
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

    pub(super) fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    pub(super) fn primary(&mut self) -> Result<Expr, ParseError> {
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
