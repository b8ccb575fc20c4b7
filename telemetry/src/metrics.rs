//! The Prometheus conventions every service keeps: one registry per app,
//! latency buckets with edges at the alert thresholds, the HTTP server
//! metrics with exemplars, `telemetry_dropped_total`, the process
//! collector, and the exposition in text 0.0.4 or OpenMetrics 1.0.
//!
//! The `prometheus` crate has no exemplars, which link a latency bucket to a
//! trace. Rather than run a second metrics library beside it, [`Exemplars`]
//! keeps the latest trace id per latency bucket and [`render`] adds them when
//! the scraper asks for OpenMetrics, the only format that carries exemplars.

use std::{collections::HashMap, sync::Mutex};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::spans::TraceId;

/// Fine low edges for the fast paths, and edges at the alert thresholds
/// (0.5 s warning, 1 s critical) so those quantiles are exact.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const HTTP_DURATION: &str = "http_server_request_duration_seconds";

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

/// A latency histogram on [`LATENCY_BUCKETS`].
pub fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels).expect("valid metric")
}

/// Registers what every service exports besides its own metrics:
/// `telemetry_dropped_total` (every signal shown from the start, so its
/// rate is 0, not absent) and, on Linux, the `process_*` collector.
pub fn register_common(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(crate::DROPPED.clone()))?;
    for signal in ["spans", "logs", "stdout", crate::loki::SIGNAL] {
        crate::DROPPED.with_label_values(&[signal]);
    }
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(())
}

/// The HTTP server's request counter and latency histogram, by method,
/// route template (and status); a sampled request's trace id becomes the
/// exemplar of its latency bucket.
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    exemplars: Exemplars,
}

impl HttpMetrics {
    pub fn new() -> Self {
        Self {
            requests: counter_vec(
                "http_server_requests_total",
                "HTTP requests by method, route template and status",
                &["method", "route", "status"],
            ),
            duration: histogram_vec(HTTP_DURATION, "HTTP request latency", &["method", "route"]),
            exemplars: Exemplars::default(),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))
    }

    /// Counts one request and observes its latency.
    pub fn observe(&self, method: &str, route: &str, status: &str, seconds: f64, trace_id: Option<TraceId>) {
        self.requests.with_label_values(&[method, route, status]).inc();
        self.duration.with_label_values(&[method, route]).observe(seconds);
        if let Some(trace_id) = trace_id {
            self.exemplars.record(method, route, seconds, trace_id);
        }
    }

    /// The exposition of `registry` (which holds these metrics): Prometheus
    /// text 0.0.4, or OpenMetrics 1.0 with exemplars when `openmetrics` is
    /// true. Returns the body and its content type.
    pub fn render(&self, registry: &Registry, openmetrics: bool) -> (String, &'static str) {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut buf).expect("text encoding cannot fail");
        let text = String::from_utf8(buf).unwrap_or_default();
        if openmetrics {
            (self.exemplars.to_openmetrics(&text), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        } else {
            (text, "text/plain; version=0.0.4; charset=utf-8")
        }
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: TraceId,
    value: f64,
    at: f64,
}

/// Per route, per method: the latest exemplar of each latency bucket.
type Slots = Vec<(String, Vec<Option<Exemplar>>)>;

/// The latest exemplar per (method, route, bucket). Looked up by borrowed
/// route on every request, so only a route's first request allocates.
#[derive(Default)]
struct Exemplars(Mutex<HashMap<String, Slots>>);

impl Exemplars {
    fn record(&self, method: &str, route: &str, value: f64, trace_id: TraceId) {
        let bucket = LATENCY_BUCKETS.iter().position(|le| value <= *le).unwrap_or(LATENCY_BUCKETS.len());
        let at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let exemplar = Exemplar { trace_id, value, at };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(route) {
            map.insert(route.to_owned(), Vec::new());
        }
        let by_method = map.get_mut(route).expect("inserted above");
        match by_method.iter_mut().find(|(m, _)| m == method) {
            Some((_, slots)) => slots[bucket] = Some(exemplar),
            None => {
                let mut slots = vec![None; LATENCY_BUCKETS.len() + 1];
                slots[bucket] = Some(exemplar);
                by_method.push((method.to_owned(), slots));
            }
        }
    }

    /// Rewrites Prometheus text as OpenMetrics: counter families lose their
    /// `_total` in `# TYPE`/`# HELP`, latency buckets gain exemplars, and the
    /// document ends with `# EOF`.
    fn to_openmetrics(&self, text: &str) -> String {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::with_capacity(text.len() + 1024);
        let mut counters: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ")
                && let Some((name, kind)) = rest.split_once(' ')
                && kind == "counter"
                && let Some(base) = name.strip_suffix("_total")
            {
                counters.push(name.to_owned());
                out.push_str(&format!("# TYPE {base} counter\n"));
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ")
                && let Some((name, help)) = rest.split_once(' ')
                && counters.iter().any(|c| c == name)
            {
                out.push_str(&format!("# HELP {} {help}\n", name.trim_end_matches("_total")));
                continue;
            }
            out.push_str(line);
            if let Some(exemplar) = exemplar_for(line, &map) {
                out.push_str(&format!(
                    " # {{trace_id=\"{}\"}} {} {:.3}",
                    exemplar.trace_id, exemplar.value, exemplar.at
                ));
            }
            out.push('\n');
        }
        // A HELP line can precede its TYPE line; fix up any left behind.
        for name in &counters {
            out = out.replace(&format!("# HELP {name} "), &format!("# HELP {} ", name.trim_end_matches("_total")));
        }
        out.push_str("# EOF\n");
        out
    }
}

fn exemplar_for<'m>(line: &str, map: &'m HashMap<String, Slots>) -> Option<&'m Exemplar> {
    let labels = line.strip_prefix(HTTP_DURATION)?.strip_prefix("_bucket{")?;
    let (labels, _) = labels.split_once('}')?;
    let label = |name: &str| {
        labels.split("\",").find_map(|kv| kv.strip_prefix(&format!("{name}=\"")).map(|v| v.trim_end_matches('"')))
    };
    let le = label("le")?;
    let bucket = if le == "+Inf" {
        LATENCY_BUCKETS.len()
    } else {
        let le: f64 = le.parse().ok()?;
        LATENCY_BUCKETS.iter().position(|b| (*b - le).abs() < 1e-12)?
    };
    let method = label("method")?;
    let (_, slots) = map.get(label("route")?)?.iter().find(|(m, _)| m == method)?;
    slots.get(bucket)?.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_carries_the_latest_trace_of_a_bucket_and_renames_counter_families() {
        let registry = Registry::new();
        let m = HttpMetrics::new();
        m.register(&registry).unwrap();
        register_common(&registry).unwrap();
        let trace = TraceId(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        m.observe("GET", "/v1/x", "200", 0.003, Some(trace));
        let (text, kind) = m.render(&registry, true);
        assert!(kind.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE http_server_requests counter"));
        assert!(text.contains("http_server_requests_total{method=\"GET\",route=\"/v1/x\",status=\"200\"} 1"));
        assert!(text.contains("telemetry_dropped_total{signal=\"spans\"} 0"), "{text}");
        let bucket = text
            .lines()
            .find(|l| l.starts_with("http_server_request_duration_seconds_bucket") && l.contains("le=\"0.005\""))
            .unwrap();
        assert!(bucket.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.003"), "{bucket}");
        let smaller = text.lines().find(|l| l.contains("_bucket") && l.contains("le=\"0.001\"")).unwrap();
        assert!(!smaller.contains("trace_id"), "{smaller}");
        let (plain, _) = m.render(&registry, false);
        assert!(!plain.contains("# EOF") && !plain.contains("trace_id"));
    }
}
