//! The evaluator: an [`Expr`] over a [`SeriesSource`] at one instant.

use super::*;

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
pub(super) fn extrapolated(
    delta: f64,
    first: (i64, f64),
    last: (i64, f64),
    n: usize,
    end_ms: i64,
    range: Duration,
) -> f64 {
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

pub(super) fn without_name(mut labels: Labels) -> Labels {
    labels.remove("__name__");
    labels
}
