//! The booking service's built-in SLIs as PromQL, written once here so the
//! rule file names an SLI (`sli: error_rate`) instead of repeating an
//! expression that is easy to get subtly wrong.
//!
//! Every expression stays inside the subset the embedded evaluator runs
//! (see [`super::file::check_expr`]) and names no `job`: a direct scrape
//! carries no job label, and the divisions already pair each booking
//! instance's own series.

use std::time::Duration;

use serde::Deserialize;

use super::model::{Condition, Op, Unit};
use crate::promql::format_duration;

/// Routes that serve operators and scrapers, not ticket buyers. Request SLIs
/// leave them out: a scrape every 5 s would otherwise pad the request count,
/// hide errors at quiet times and satisfy the minimum-traffic guard on its own.
///
/// They also anchor the expressions: `GET /metrics` has a series from the
/// first scrape on, so "all requests minus operator requests" is present
/// (zero, and a ratio NaN) before the first user request, and an empty result
/// means the metric really went missing, which is what no-data should report.
pub const OPS_ROUTES: &str = "/metrics|/healthz|/readyz|/openapi.json";

const REQUESTS: &str = "http_server_requests_total";
const DURATION_BUCKETS: &str = "http_server_request_duration_seconds_bucket";

/// A built-in SLI, as named in the rule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    /// Share of user requests answered with a 5xx.
    ErrorRate,
    /// 95th percentile of user request latency, in seconds.
    P95Latency,
    /// Database connections lent out over the pool size, per instance.
    DbPoolSaturation,
    /// Redis used memory over its effective limit.
    RedisMemory,
    /// CPU used over the cores the booking service may use, per instance.
    Cpu,
    /// Resident memory over the memory limit, per instance.
    Memory,
}

impl Sli {
    pub fn as_str(self) -> &'static str {
        match self {
            Sli::ErrorRate => "error_rate",
            Sli::P95Latency => "p95_latency",
            Sli::DbPoolSaturation => "db_pool_saturation",
            Sli::RedisMemory => "redis_memory",
            Sli::Cpu => "cpu",
            Sli::Memory => "memory",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Sli::P95Latency => Unit::Seconds,
            _ => Unit::Ratio,
        }
    }

    /// Whether the expression is a rate over a window (the others read gauges).
    pub fn uses_window(self) -> bool {
        matches!(self, Sli::ErrorRate | Sli::P95Latency | Sli::Cpu)
    }

    /// Whether the SLI is measured over user requests, so a minimum-traffic
    /// guard means something.
    pub fn counts_requests(self) -> bool {
        matches!(self, Sli::ErrorRate | Sli::P95Latency)
    }

    /// Whether the SLI is a ratio of bad events to all events, the only kind
    /// an error budget (and so a burn rate) is defined for.
    pub fn is_event_ratio(self) -> bool {
        self == Sli::ErrorRate
    }

    /// The expression; `window` applies where [`Sli::uses_window`].
    pub fn expr(self, window: Duration) -> String {
        let w = format_duration(window);
        match self {
            Sli::ErrorRate => error_ratio(window),
            Sli::P95Latency => format!(
                "histogram_quantile(0.95, sum by (le) (rate({DURATION_BUCKETS}[{w}])) \
                 - sum by (le) (rate({DURATION_BUCKETS}{{route=~\"{OPS_ROUTES}\"}}[{w}])))"
            ),
            Sli::DbPoolSaturation => "db_pool_connections_in_use / db_pool_connections_max".to_string(),
            // Every booking instance reports the same Redis: max, not sum.
            Sli::RedisMemory => "max(redis_memory_used_bytes) / max(redis_memory_max_bytes)".to_string(),
            Sli::Cpu => format!("rate(process_cpu_seconds_total[{w}]) / booking_cpu_limit_cores"),
            Sli::Memory => "process_resident_memory_bytes / booking_memory_limit_bytes".to_string(),
        }
    }

    /// Conditions every level of the SLI also needs to fire.
    pub fn guards(self) -> Vec<Condition> {
        match self {
            // A limit of 0 (an older exporter reporting Redis's raw
            // `maxmemory`, 0 meaning none) makes the ratio +Inf.
            Sli::RedisMemory => {
                vec![Condition { expr: "max(redis_memory_max_bytes)".to_string(), op: Op::Above, threshold: 0.0 }]
            }
            _ => Vec::new(),
        }
    }
}

/// Share of user requests over `window` answered with a 5xx. Written as
/// 1 − good/all because a 5xx series only exists after the first 5xx, while
/// the good series (with the anchor) exist from the first scrape.
pub fn error_ratio(window: Duration) -> String {
    format!("1 - {} / {}", user_requests("rate", "status!~\"5..\"", window), user_requests("rate", "", window))
}

/// User requests over `window`: the minimum-traffic guard.
pub fn requests(window: Duration) -> String {
    user_requests("increase", "", window)
}

/// `function` of user requests matching `matchers`: all minus operator routes.
fn user_requests(function: &str, matchers: &str, window: Duration) -> String {
    let w = format_duration(window);
    let ops = if matchers.is_empty() {
        format!("route=~\"{OPS_ROUTES}\"")
    } else {
        format!("route=~\"{OPS_ROUTES}\",{matchers}")
    };
    let all = if matchers.is_empty() { REQUESTS.to_string() } else { format!("{REQUESTS}{{{matchers}}}") };
    format!("(sum({function}({all}[{w}])) - sum({function}({REQUESTS}{{{ops}}}[{w}])))")
}

#[cfg(test)]
mod tests {
    use super::{super::file::check_expr, *};

    const ALL: [Sli; 6] =
        [Sli::ErrorRate, Sli::P95Latency, Sli::DbPoolSaturation, Sli::RedisMemory, Sli::Cpu, Sli::Memory];

    #[test]
    fn every_builtin_expression_is_inside_the_evaluator_subset() {
        let window = Duration::from_secs(300);
        for sli in ALL {
            check_expr(&sli.expr(window)).unwrap_or_else(|e| panic!("{}: {e}", sli.as_str()));
            for guard in sli.guards() {
                check_expr(&guard.expr).unwrap_or_else(|e| panic!("{} guard: {e}", sli.as_str()));
            }
        }
        check_expr(&requests(Duration::from_secs(3600))).unwrap();
        check_expr(&error_ratio(Duration::from_secs(3 * 86400))).unwrap();
    }

    #[test]
    fn the_error_ratio_leaves_out_operator_routes_and_keeps_the_window() {
        assert_eq!(
            error_ratio(Duration::from_secs(300)),
            "1 - (sum(rate(http_server_requests_total{status!~\"5..\"}[5m])) \
             - sum(rate(http_server_requests_total{route=~\"/metrics|/healthz|/readyz|/openapi.json\",status!~\"5..\"}[5m]))) \
             / (sum(rate(http_server_requests_total[5m])) \
             - sum(rate(http_server_requests_total{route=~\"/metrics|/healthz|/readyz|/openapi.json\"}[5m])))"
        );
    }

    #[test]
    fn gauge_slis_ignore_the_window() {
        for sli in ALL.into_iter().filter(|s| !s.uses_window()) {
            assert_eq!(sli.expr(Duration::from_secs(60)), sli.expr(Duration::from_secs(3600)));
        }
    }
}
