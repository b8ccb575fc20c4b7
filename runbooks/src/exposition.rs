//! Booking's `/metrics` (Prometheus text format 0.0.4), read without a
//! Prometheus: parsed into samples, and two scrapes a few seconds apart
//! turned into the same per-route error ratios and latency quantiles the
//! PromQL queries give.

use std::collections::BTreeMap;

/// Routes that are not user traffic, as the alert rules leave them out.
pub const OPS_ROUTES: &[&str] = &["/metrics", "/healthz", "/readyz", "/openapi.json"];

pub const REQUESTS: &str = "http_server_requests_total";
pub const DURATION_BUCKETS: &str = "http_server_request_duration_seconds_bucket";

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Every sample line; comments and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    // The alerting scraper's parser: one reading of the text format.
    let (name, labels, value) = promtext::parse_line(line)?;
    Some(Sample { name, labels, value })
}

/// The sum of every series of `name`, or `None` when it has none.
pub fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let total = samples.iter().filter(|s| s.name == name).inspect(|_| found = true).map(|s| s.value).sum();
    found.then_some(total)
}

/// A counter's increase between two scrapes; a restart in between (the
/// counter went down) counts from zero, as Prometheus does.
fn increase(before: f64, after: f64) -> f64 {
    if after >= before { after - before } else { after }
}

fn series_key(s: &Sample) -> String {
    format!("{}{:?}", s.name, s.labels)
}

/// Per-series increase of the counters named `name` between two scrapes.
fn increases<'a>(before: &[Sample], after: &'a [Sample], name: &str) -> Vec<(&'a Sample, f64)> {
    let old: BTreeMap<String, f64> =
        before.iter().filter(|s| s.name == name).map(|s| (series_key(s), s.value)).collect();
    after
        .iter()
        .filter(|s| s.name == name)
        .map(|s| (s, increase(old.get(&series_key(s)).copied().unwrap_or(0.0), s.value)))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteErrors {
    pub route: String,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub error_ratio: f64,
}

/// 5xx share per user route over the time between two scrapes, routes
/// that served anything, worst first.
pub fn route_errors(before: &[Sample], after: &[Sample], seconds: f64) -> Vec<RouteErrors> {
    let mut by_route: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (sample, delta) in increases(before, after, REQUESTS) {
        let route = sample.label("route");
        if OPS_ROUTES.contains(&route) {
            continue;
        }
        let entry = by_route.entry(route.to_string()).or_default();
        entry.0 += delta;
        if sample.label("status").starts_with('5') {
            entry.1 += delta;
        }
    }
    let seconds = seconds.max(f64::EPSILON);
    let mut out: Vec<RouteErrors> = by_route
        .into_iter()
        .filter(|(_, (all, _))| *all > 0.0)
        .map(|(route, (all, errors))| RouteErrors {
            route,
            requests_per_second: all / seconds,
            errors_per_second: errors / seconds,
            error_ratio: errors / all,
        })
        .collect();
    sort_desc(&mut out, |r| r.error_ratio);
    out
}

/// The `q` latency quantile per user route over the time between two
/// scrapes, slowest first; routes without requests in between are left out.
pub fn route_quantiles(before: &[Sample], after: &[Sample], q: f64) -> Vec<(String, f64)> {
    let mut buckets: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (sample, delta) in increases(before, after, DURATION_BUCKETS) {
        let route = sample.label("route");
        if OPS_ROUTES.contains(&route) {
            continue;
        }
        // Methods of one route add up, like `sum by (route, le)`.
        *buckets.entry(route.to_string()).or_default().entry(sample.label("le").to_string()).or_default() += delta;
    }
    let mut out: Vec<(String, f64)> = buckets
        .into_iter()
        .filter_map(|(route, les)| {
            let les: Vec<(f64, f64)> = les.into_iter().filter_map(|(le, n)| Some((le.parse().ok()?, n))).collect();
            histogram_quantile(q, &les).map(|v| (route, v))
        })
        .collect();
    sort_desc(&mut out, |(_, v)| *v);
    out
}

fn sort_desc<T>(items: &mut [T], key: impl Fn(&T) -> f64) {
    items.sort_by(|a, b| key(b).total_cmp(&key(a)));
}

/// Prometheus's `histogram_quantile` over cumulative `(le, count)` buckets:
/// linear interpolation inside the bucket the rank falls in; `None` when
/// nothing was observed.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let value = promtext::bucket_quantile(q, &buckets);
    (!value.is_nan()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP http_server_requests_total HTTP requests
# TYPE http_server_requests_total counter
http_server_requests_total{method="POST",route="/v1/reservations",status="201"} 100
http_server_requests_total{method="POST",route="/v1/reservations",status="503"} 10
http_server_requests_total{method="GET",route="/metrics",status="500"} 1
http_server_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="0.1"} 50
http_server_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="1"} 100
http_server_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="+Inf"} 110
booking_queue_waiting 42
db_pool_connections_in_use{pool="main"} 3
db_pool_connections_in_use{pool="other"} 4
"#;

    const AFTER: &str = r#"http_server_requests_total{method="POST",route="/v1/reservations",status="201"} 160
http_server_requests_total{method="POST",route="/v1/reservations",status="503"} 50
http_server_requests_total{method="GET",route="/v1/concerts",status="200"} 30
http_server_requests_total{method="GET",route="/metrics",status="500"} 9
http_server_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="0.1"} 60
http_server_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="1"} 150
http_server_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="+Inf"} 210
"#;

    #[test]
    fn samples_parse_with_labels_escapes_and_exemplars() {
        let samples = parse(BEFORE);
        assert_eq!(samples.len(), 9);
        assert_eq!(samples[0].label("status"), "201");
        assert_eq!(sum(&samples, "booking_queue_waiting"), Some(42.0));
        assert_eq!(sum(&samples, "db_pool_connections_in_use"), Some(7.0));
        assert_eq!(sum(&samples, "nothing"), None);
        let odd = parse(
            "m{a=\"x\\\"y\",b=\"z\",} 1.5 1700000000\nn +Inf\nbucket{le=\"1\"} 3 # {trace_id=\"ab\"} 0.2 17.0\nbroken{ 1\n",
        );
        assert_eq!(odd.len(), 3);
        assert_eq!(odd[0].label("a"), "x\"y");
        assert_eq!(odd[0].value, 1.5);
        assert!(odd[1].value.is_infinite());
        assert_eq!(odd[2].value, 3.0);
    }

    #[test]
    fn two_scrapes_give_per_route_error_ratios_without_operator_routes() {
        let routes = route_errors(&parse(BEFORE), &parse(AFTER), 10.0);
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(routes[0].route, "/v1/reservations");
        assert_eq!(routes[0].requests_per_second, 10.0);
        assert_eq!(routes[0].errors_per_second, 4.0);
        assert_eq!(routes[0].error_ratio, 0.4);
        assert_eq!((routes[1].route.as_str(), routes[1].error_ratio), ("/v1/concerts", 0.0));
    }

    #[test]
    fn a_counter_reset_between_scrapes_counts_from_zero() {
        let before = parse("http_server_requests_total{route=\"/a\",status=\"500\"} 1000\n");
        let after = parse("http_server_requests_total{route=\"/a\",status=\"500\"} 5\n");
        assert_eq!(route_errors(&before, &after, 1.0)[0].errors_per_second, 5.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        // 100 new requests: 10 under 0.1 s, 40 more under 1 s, 50 above.
        let q = route_quantiles(&parse(BEFORE), &parse(AFTER), 0.3);
        assert_eq!(q.len(), 1);
        let (route, p30) = &q[0];
        assert_eq!(route, "/v1/reservations");
        // Rank 30 lies 20 of the 40 requests into the 0.1..1 s bucket.
        assert!((p30 - 0.55).abs() < 1e-9, "{p30}");
        // P95 lies in +Inf: the highest finite bound.
        assert_eq!(route_quantiles(&parse(BEFORE), &parse(AFTER), 0.95)[0].1, 1.0);
    }

    #[test]
    fn histogram_quantile_edge_cases() {
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 4.0)]), None, "no +Inf bucket");
        assert_eq!(histogram_quantile(0.5, &[(2.0, 10.0), (f64::INFINITY, 10.0)]), Some(1.0));
        assert_eq!(histogram_quantile(1.5, &[(2.0, 10.0), (f64::INFINITY, 10.0)]), None);
    }
}
