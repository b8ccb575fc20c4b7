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

mod eval;
mod lexer;
mod parser;

pub use eval::*;
pub use lexer::*;
pub use parser::*;

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
