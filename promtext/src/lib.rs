//! Two pieces of Prometheus that alerting (its direct-scrape source and
//! PromQL subset) and the runbook CLI (reading booking's `/metrics`) both
//! need, in one place: a sample line of the text exposition format, and
//! `histogram_quantile` over a histogram's cumulative buckets.

use std::collections::BTreeMap;

/// A series' labels, by name.
pub type Labels = BTreeMap<String, String>;

/// One sample line of the Prometheus text format:
/// `name{a="b",c="d"} value [timestamp]`. Comments and malformed lines give
/// `None` (a scrape keeps what it can read).
pub fn parse_line(line: &str) -> Option<(String, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &body[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// Prometheus's `histogram_quantile` over cumulative buckets sorted by
/// upper bound: linear interpolation inside the bucket holding the rank.
pub fn bucket_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(&(last_bound, total)) = buckets.last() else { return f64::NAN };
    if buckets.len() < 2 || !last_bound.is_infinite() || total <= 0.0 || total.is_nan() {
        return f64::NAN;
    }
    let rank = q * total;
    let i = buckets.iter().position(|b| b.1 >= rank).unwrap_or(buckets.len() - 1);
    if i == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    let (upper, count) = buckets[i];
    let (lower, below) = if i == 0 { (0.0_f64.min(upper), 0.0) } else { buckets[i - 1] };
    if i == 0 && upper <= 0.0 {
        return upper;
    }
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return upper;
    }
    lower + (upper - lower) * ((rank - below) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_line_with_labels_escapes_and_a_timestamp() {
        let (name, labels, value) =
            parse_line(r#"http_requests_total{route="/a\"b",msg="x\ny"} 12.5 1700000000"#).unwrap();
        assert_eq!(name, "http_requests_total");
        assert_eq!(labels["route"], "/a\"b");
        assert_eq!(labels["msg"], "x\ny");
        assert_eq!(value, 12.5);
        assert_eq!(parse_line("up 1").unwrap().2, 1.0);
        assert!(parse_line("le_inf{le=\"+Inf\"} +Inf").unwrap().2.is_infinite());
        assert_eq!(parse_line("# HELP up whether"), None);
        assert_eq!(parse_line("broken{a=b} 1"), None, "an unquoted label value");
        assert_eq!(parse_line("no_value"), None);
    }

    #[test]
    fn the_quantile_interpolates_inside_the_bucket_of_its_rank() {
        let buckets = [(0.1, 50.0), (0.5, 90.0), (f64::INFINITY, 100.0)];
        assert!((bucket_quantile(0.5, &buckets) - 0.1).abs() < 1e-12);
        assert!((bucket_quantile(0.7, &buckets) - 0.3).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, &buckets), 0.5, "in the +Inf bucket: the last finite bound");
        assert!(bucket_quantile(0.5, &[(f64::INFINITY, 0.0)]).is_nan());
    }
}
