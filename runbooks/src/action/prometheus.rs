//! Prometheus instant queries (`/api/v1/query`): any expression, the
//! failing routes, latency by route, and the scrape targets.
//!
//! The platform can run without Prometheus (the alerting service scrapes
//! booking itself). Then the two route actions take two scrapes of
//! booking's `/metrics` `fallback_sample_secs` apart and compute the same
//! figures from the difference, and a query naming `alerts` is answered by
//! the alerting service ([`super::alerting`]); the output's `source` says
//! which was used.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Finding, num, round};
use crate::{
    exposition::{self, DURATION_BUCKETS, OPS_ROUTES, REQUESTS},
    target::{Ctx, Target, TargetError},
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub query: String,
    #[serde(default = "ten")]
    pub top: u32,
    /// Alerting rule ids whose state answers the query without Prometheus.
    #[serde(default)]
    pub alerts: Vec<String>,
}

fn ten() -> u32 {
    10
}

impl Query {
    pub fn checked(self) -> Result<Self, String> {
        if self.query.trim().is_empty() {
            return Err("query is empty".into());
        }
        check_top(self.top)?;
        if let Some(bad) = self
            .alerts
            .iter()
            .find(|r| r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!("alerts: `{bad}` is not an alert rule id"));
        }
        Ok(self)
    }
}

fn check_top(top: u32) -> Result<(), String> {
    if !(1..=100).contains(&top) {
        return Err(format!("top must be 1 to 100, not {top}"));
    }
    Ok(())
}

/// Arguments of `top_failing_routes` and `p95_by_route`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    #[serde(default = "five_minutes")]
    pub window: String,
    #[serde(default = "five")]
    pub top: u32,
    /// Latency only: which quantile (default 0.95).
    #[serde(default)]
    pub quantile: Option<f64>,
    #[serde(default = "ten")]
    pub fallback_sample_secs: u32,
}

fn five_minutes() -> String {
    "5m".into()
}

fn five() -> u32 {
    5
}

impl Routes {
    pub fn checked(mut self, latency: bool) -> Result<Self, String> {
        let w = self.window.trim();
        let valid = w.len() >= 2
            && w[..w.len() - 1].chars().all(|c| c.is_ascii_digit())
            && w.ends_with(['s', 'm', 'h', 'd'])
            && !w.starts_with('0');
        if !valid {
            return Err(format!("window `{}` is not a PromQL duration like 5m", self.window));
        }
        check_top(self.top)?;
        match (latency, self.quantile) {
            (false, Some(_)) => return Err("quantile applies to prometheus.p95_by_route only".into()),
            (true, None) => self.quantile = Some(0.95),
            (true, Some(q)) if !(q > 0.0 && q < 1.0) => {
                return Err(format!("quantile must lie between 0 and 1, not {q}"));
            }
            _ => {}
        }
        if !(1..=120).contains(&self.fallback_sample_secs) {
            return Err(format!("fallback_sample_secs must be 1 to 120, not {}", self.fallback_sample_secs));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub job: Option<String>,
}

fn ops_matcher() -> String {
    format!("route!~\"{}\"", OPS_ROUTES.join("|"))
}

fn prometheus_configured(ctx: &Ctx) -> bool {
    ctx.endpoints.describe(Target::Prometheus).is_ok()
}

/// Now, as Prometheus's `time` parameter: queries whose results are
/// combined must see the same instant.
fn now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:.3}", now.as_secs_f64())
}

/// An instant vector at `time` as (labels, value) pairs; a scalar as one pair.
async fn instant(ctx: &Ctx, query: &str, time: &str) -> Result<Vec<(Value, f64)>, TargetError> {
    let data = ctx.prometheus("/api/v1/query", &[("query", query), ("time", time)]).await?;
    let value = |v: &Value| v.get(1).and_then(Value::as_str).and_then(|s| s.parse::<f64>().ok());
    Ok(match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|items| items.iter().filter_map(|i| Some((i["metric"].clone(), value(&i["value"])?))).collect())
            .unwrap_or_default(),
        Some("scalar") => value(&data["result"]).map(|v| vec![(json!({}), v)]).unwrap_or_default(),
        other => {
            return Err(TargetError::failed(format!(
                "query returned a {}, not an instant vector",
                other.unwrap_or("nothing")
            )));
        }
    })
}

pub async fn query(ctx: &mut Ctx, args: &Query) -> Result<Finding, TargetError> {
    let mut series = instant(ctx, &args.query, &now()).await?;
    series.retain(|(_, v)| !v.is_nan());
    series.sort_by(|a, b| b.1.total_cmp(&a.1));
    let count = series.len();
    let max = series.first().map(|s| s.1);
    let min = series.last().map(|s| s.1);
    series.truncate(args.top as usize);
    let summary = match (max, min) {
        (Some(max), Some(_)) if count == 1 => format!("{} = {}", args.query, round(max)),
        (Some(max), Some(min)) => format!("{count} series, max {}, min {}", round(max), round(min)),
        _ => format!("{} returned no data", args.query),
    };
    let series: Vec<Value> =
        series.into_iter().map(|(labels, value)| json!({ "labels": labels, "value": num(value) })).collect();
    Ok(Finding {
        summary,
        output: json!({ "source": "prometheus", "count": count, "max": max.map_or(Value::Null, num), "min": min.map_or(Value::Null, num), "series": series }),
    })
}

/// Two scrapes of booking's /metrics, `seconds` apart.
async fn two_scrapes(
    ctx: &Ctx,
    seconds: u32,
) -> Result<(Vec<exposition::Sample>, Vec<exposition::Sample>, f64), TargetError> {
    let scrape = || async {
        let (status, body) = ctx.booking_get("/metrics").await?;
        if !status.is_success() {
            return Err(TargetError::failed(format!("booking /metrics answered {status}")));
        }
        Ok((std::time::Instant::now(), exposition::parse(&body)))
    };
    let (t0, before) = scrape().await?;
    // A measurement window, not a wait for a condition: rates need two points.
    tokio::time::sleep(Duration::from_secs(seconds.into())).await;
    let (t1, after) = scrape().await?;
    Ok((before, after, (t1 - t0).as_secs_f64()))
}

pub async fn top_failing_routes(ctx: &mut Ctx, args: &Routes) -> Result<Finding, TargetError> {
    let (source, mut routes) = if prometheus_configured(ctx) {
        let ops = ops_matcher();
        let w = &args.window;
        let at = now();
        let errors =
            instant(ctx, &format!("sum by (route) (rate({REQUESTS}{{status=~\"5..\",{ops}}}[{w}]))"), &at).await?;
        let all = instant(ctx, &format!("sum by (route) (rate({REQUESTS}{{{ops}}}[{w}]))"), &at).await?;
        let route = |labels: &Value| labels["route"].as_str().unwrap_or("").to_string();
        let mut routes: Vec<exposition::RouteErrors> = all
            .iter()
            .filter(|(_, rps)| *rps > 0.0)
            .map(|(labels, rps)| {
                let eps = errors.iter().find(|(l, _)| route(l) == route(labels)).map_or(0.0, |(_, v)| *v);
                exposition::RouteErrors {
                    route: route(labels),
                    requests_per_second: *rps,
                    errors_per_second: eps,
                    error_ratio: eps / rps,
                }
            })
            .collect();
        routes.sort_by(|a, b| b.error_ratio.total_cmp(&a.error_ratio));
        (format!("prometheus, last {w}"), routes)
    } else {
        let (before, after, seconds) = two_scrapes(ctx, args.fallback_sample_secs).await?;
        (format!("booking /metrics, {seconds:.0}s sample"), exposition::route_errors(&before, &after, seconds))
    };
    let count = routes.iter().filter(|r| r.errors_per_second > 0.0).count();
    let max = routes.first().map_or(0.0, |r| r.error_ratio);
    routes.truncate(args.top as usize);
    let shown: Vec<String> = routes
        .iter()
        .filter(|r| r.errors_per_second > 0.0)
        .take(3)
        .map(|r| format!("{} {:.1} % ({:.2}/s)", r.route, r.error_ratio * 100.0, r.errors_per_second))
        .collect();
    let summary = if count == 0 {
        format!("no route answers 5xx ({source})")
    } else {
        format!("{count} route(s) answer 5xx ({source}): {}", shown.join(", "))
    };
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| {
            json!({
                "route": r.route,
                "error_ratio": num(r.error_ratio),
                "errors_per_second": num(r.errors_per_second),
                "requests_per_second": num(r.requests_per_second),
            })
        })
        .collect();
    Ok(Finding {
        summary,
        output: json!({ "source": source, "routes": routes, "count": count, "max_error_ratio": num(max) }),
    })
}

pub async fn quantile_by_route(ctx: &mut Ctx, args: &Routes) -> Result<Finding, TargetError> {
    let q = args.quantile.unwrap_or(0.95);
    let (source, mut routes) = if prometheus_configured(ctx) {
        let w = &args.window;
        let expr =
            format!("histogram_quantile({q}, sum by (route, le) (rate({DURATION_BUCKETS}{{{}}}[{w}])))", ops_matcher());
        let mut routes: Vec<(String, f64)> = instant(ctx, &expr, &now())
            .await?
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(labels, v)| (labels["route"].as_str().unwrap_or("").to_string(), v))
            .collect();
        routes.sort_by(|a, b| b.1.total_cmp(&a.1));
        (format!("prometheus, last {w}"), routes)
    } else {
        let (before, after, seconds) = two_scrapes(ctx, args.fallback_sample_secs).await?;
        (format!("booking /metrics, {seconds:.0}s sample"), exposition::route_quantiles(&before, &after, q))
    };
    let max = routes.first().map(|r| r.1);
    routes.truncate(args.top as usize);
    let label = format!("P{}", round(q * 100.0));
    let shown: Vec<String> = routes.iter().take(3).map(|(r, s)| format!("{r} {:.0} ms", s * 1000.0)).collect();
    let summary = if routes.is_empty() {
        format!("no requests to measure ({source})")
    } else {
        format!("{label} by route ({source}): {}", shown.join(", "))
    };
    let routes: Vec<Value> =
        routes.into_iter().map(|(route, seconds)| json!({ "route": route, "seconds": num(seconds) })).collect();
    Ok(Finding {
        summary,
        output: json!({ "source": source, "quantile": q, "routes": routes, "max_seconds": max.map_or(Value::Null, num) }),
    })
}

pub async fn targets(ctx: &mut Ctx, args: &Targets) -> Result<Finding, TargetError> {
    let data = ctx.prometheus("/api/v1/targets", &[("state", "active")]).await?;
    let targets: Vec<Value> = data["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| args.job.as_deref().is_none_or(|job| t["labels"]["job"] == job || t["scrapePool"] == job))
        .map(|t| {
            json!({
                "job": t["labels"]["job"],
                "instance": t["labels"]["instance"],
                "scrape_url": t["scrapeUrl"],
                "health": t["health"],
                "last_error": t["lastError"],
                "last_scrape_seconds": t["lastScrapeDuration"],
            })
        })
        .collect();
    let down: Vec<&Value> = targets.iter().filter(|t| t["health"] != "up").collect();
    let job = args.job.as_deref().map(|j| format!(" of job {j}")).unwrap_or_default();
    let summary = match (targets.len(), down.first()) {
        (0, _) => format!("Prometheus has no active target{job}: the scrape is not configured"),
        (n, None) => format!("all {n} target(s){job} up"),
        (n, Some(first)) => format!(
            "{} of {n} target(s){job} down; {}: {}",
            down.len(),
            first["scrape_url"].as_str().unwrap_or("?"),
            first["last_error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or(first["health"].as_str().unwrap_or("unknown"))
        ),
    };
    // No target at all is as blind as every target down.
    let down_count = if targets.is_empty() { 1 } else { down.len() };
    Ok(Finding { summary, output: json!({ "count": targets.len(), "down": down_count, "targets": targets }) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(window: &str, quantile: Option<f64>) -> Routes {
        Routes { window: window.into(), top: 5, quantile, fallback_sample_secs: 10 }
    }

    #[test]
    fn windows_and_quantiles_are_checked() {
        assert!(routes("5m", None).checked(false).is_ok());
        assert_eq!(routes("1h", None).checked(true).unwrap().quantile, Some(0.95));
        for bad in ["5", "m", "0m", "5x", "1h30m", ""] {
            assert!(routes(bad, None).checked(false).is_err(), "{bad}");
        }
        assert!(routes("5m", Some(0.99)).checked(false).is_err(), "quantile on the error action");
        assert!(routes("5m", Some(1.5)).checked(true).is_err());
    }
}
