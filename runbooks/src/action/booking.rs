//! The booking service: health and scrape probes, its `/metrics` gauges,
//! and the admin API (`X-Admin-Key`) for the controls an incident turns —
//! admission rate, queue-entry rate limit, caches, the chaos switch.
//!
//! The controls act on one instance and last until it restarts; with
//! several replicas, run the runbook against each (`--booking-url`).

use std::time::{Duration, Instant};

use reqwest_tls::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Finding, num, round};
use crate::{
    exposition,
    target::{Ctx, TargetError},
};

const ADMISSION: &str = "/v1/admin/queue/admission";
const RATE_LIMIT: &str = "/v1/admin/rate-limit";
const CHAOS: &str = "/v1/admin/chaos";

/// The bounds booking enforces, checked here too so a bad runbook fails
/// at parse time rather than half-way through a mitigation.
const BATCH_RANGE: std::ops::RangeInclusive<i64> = 1..=100_000;
const INTERVAL_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=3_600_000;
const PER_SECOND_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;

pub async fn health(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let started = Instant::now();
    let answer = ctx.booking_get("/readyz").await;
    let seconds = round(started.elapsed().as_secs_f64());
    Ok(match answer {
        Ok((status, body)) => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let ready = status.is_success() && body["status"] == "ready";
            let reasons = if ready { Vec::new() } else { not_ready_reasons(&body, status) };
            // Chaos may fail /readyz only when its routes name it; either
            // way it is said, so no one reads a drill as an outage.
            let chaos = body["chaos"] == true || reasons.iter().any(|r| r == "chaos");
            let mut parts: Vec<String> =
                ["database", "queue"].iter().filter_map(|k| Some(format!("{k} {}", body[*k].as_str()?))).collect();
            if chaos {
                parts.push("chaos switch on".into());
            }
            let detail = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) };
            let state = if ready { "ready".to_string() } else { format!("NOT ready: {}", reasons.join(", ")) };
            Finding {
                summary: format!("up; {state}{detail} in {:.0} ms", seconds * 1000.0),
                output: json!({
                    "up": true,
                    "ready": ready,
                    "reasons": reasons,
                    "chaos": chaos,
                    "database": body["database"],
                    "queue": body["queue"],
                    "seconds": seconds,
                    "error": null,
                }),
            }
        }
        Err(e) => Finding {
            summary: format!("down: {e}"),
            output: json!({ "up": false, "ready": false, "reasons": [], "chaos": null, "database": null, "queue": null, "seconds": seconds, "error": e.to_string() }),
        },
    })
}

/// Why booking says it is not ready: its `reasons` (`chaos`, `database`,
/// `queue`); from a booking that predates them, its `database` and `queue`
/// fields, and a chaos-injected 503 as `chaos`.
fn not_ready_reasons(body: &Value, status: reqwest_tls::StatusCode) -> Vec<String> {
    if let Some(reasons) = body["reasons"].as_array().filter(|r| !r.is_empty()) {
        return reasons.iter().filter_map(Value::as_str).map(str::to_string).collect();
    }
    if body["error"]["code"] == "CHAOS_INJECTED" {
        return vec!["chaos".into()];
    }
    let down: Vec<String> =
        ["database", "queue"].iter().filter(|k| body[**k] == "unavailable").map(|k| k.to_string()).collect();
    if down.is_empty() { vec![format!("unexplained ({status})")] } else { down }
}

pub async fn scrape(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let started = Instant::now();
    let answer = ctx.booking_get("/metrics").await;
    let seconds = round(started.elapsed().as_secs_f64());
    Ok(match answer {
        Ok((status, body)) => {
            let series = exposition::parse(&body).len();
            let ok = status.is_success() && series > 0;
            Finding {
                summary: format!(
                    "/metrics answered {status} in {:.0} ms: {} bytes, {series} series",
                    seconds * 1000.0,
                    body.len()
                ),
                output: json!({ "ok": ok, "status": status.as_u16(), "seconds": seconds, "bytes": body.len(), "series": series, "error": null }),
            }
        }
        Err(e) => Finding {
            summary: format!("/metrics cannot be scraped: {e}"),
            output: json!({ "ok": false, "status": null, "seconds": seconds, "bytes": 0, "series": 0, "error": e.to_string() }),
        },
    })
}

/// A term of `booking.metrics`' ratio: a series sum, or its rate.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Value(String),
    Rate(String),
}

impl Term {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (term, name) = match text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            Some(name) => (Term::Rate(name.trim().to_string()), name.trim()),
            None => (Term::Value(text.to_string()), text),
        };
        if !is_metric_name(name) {
            return Err(format!("`{text}` is not a metric name or rate(metric_name)"));
        }
        Ok(term)
    }

    fn name(&self) -> &str {
        match self {
            Term::Value(n) | Term::Rate(n) => n,
        }
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics: Vec<String>,
    /// `[numerator, denominator]`, each `name` or `rate(name)`.
    #[serde(default)]
    pub ratio: Option<Vec<String>>,
    /// Seconds between two scrapes, for rates; 0 is one scrape.
    #[serde(default)]
    pub sample_secs: u32,
}

impl Metrics {
    pub fn checked(self) -> Result<Self, String> {
        if self.metrics.is_empty() {
            return Err("metrics is empty".into());
        }
        if let Some(bad) = self.metrics.iter().find(|m| !is_metric_name(m)) {
            return Err(format!("`{bad}` is not a metric name"));
        }
        if self.sample_secs > 120 {
            return Err(format!("sample_secs must be 0 to 120, not {}", self.sample_secs));
        }
        if let Some(ratio) = &self.ratio {
            let [a, b] = ratio.as_slice() else { return Err("ratio is [numerator, denominator]".into()) };
            for term in [Term::parse(a)?, Term::parse(b)?] {
                if matches!(term, Term::Rate(_)) && self.sample_secs == 0 {
                    return Err("rate() in ratio needs sample_secs above 0".into());
                }
            }
        }
        Ok(self)
    }

    fn terms(&self) -> Option<(Term, Term)> {
        let ratio = self.ratio.as_ref()?;
        Some((Term::parse(&ratio[0]).ok()?, Term::parse(&ratio[1]).ok()?))
    }
}

async fn scrape_samples(ctx: &Ctx) -> Result<(Instant, Vec<exposition::Sample>), TargetError> {
    let (status, body) = ctx.booking_get("/metrics").await?;
    if !status.is_success() {
        return Err(TargetError::failed(format!("booking /metrics answered {status}")));
    }
    Ok((Instant::now(), exposition::parse(&body)))
}

pub async fn metrics(ctx: &mut Ctx, args: &Metrics) -> Result<Finding, TargetError> {
    let mut names: Vec<String> = args.metrics.clone();
    let terms = args.terms();
    if let Some((a, b)) = &terms {
        for name in [a.name(), b.name()] {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    let (t0, first) = scrape_samples(ctx).await?;
    let (samples, rates) = if args.sample_secs > 0 {
        // A measurement window: rates need two points.
        tokio::time::sleep(Duration::from_secs(args.sample_secs.into())).await;
        let (t1, second) = scrape_samples(ctx).await?;
        let seconds = (t1 - t0).as_secs_f64();
        let rates: Map<String, Value> = names
            .iter()
            .filter_map(|n| {
                let (a, b) = (exposition::sum(&first, n)?, exposition::sum(&second, n)?);
                let delta = if b >= a { b - a } else { b };
                Some((n.clone(), num(delta / seconds)))
            })
            .collect();
        (second, Some(rates))
    } else {
        (first, None)
    };
    let mut values = Map::new();
    let mut missing = Vec::new();
    for name in &names {
        match exposition::sum(&samples, name) {
            Some(v) => {
                values.insert(name.clone(), num(v));
            }
            None => missing.push(name.clone()),
        }
    }
    let read = |term: &Term| -> Option<f64> {
        match term {
            Term::Value(n) => values.get(n)?.as_f64(),
            Term::Rate(n) => rates.as_ref()?.get(n)?.as_f64(),
        }
    };
    let ratio = terms.as_ref().and_then(|(a, b)| {
        let (a, b) = (read(a)?, read(b)?);
        (b != 0.0).then(|| a / b)
    });
    let mut parts: Vec<String> = values.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if let Some(r) = ratio {
        parts.push(format!("ratio {:.2}", r));
    }
    if !missing.is_empty() {
        parts.push(format!("not exported: {}", missing.join(", ")));
    }
    Ok(Finding {
        summary: parts.join("; "),
        output: json!({
            "values": values,
            "missing": missing,
            "ratio": ratio.map_or(Value::Null, num),
            "rates": rates.map_or(Value::Null, Value::Object),
        }),
    })
}

fn admission_output(view: &Value) -> Value {
    let batch = view["batch"].as_f64().unwrap_or(0.0);
    let interval = view["interval_ms"].as_f64().unwrap_or(0.0);
    let per_minute = if interval > 0.0 { batch * 60_000.0 / interval } else { 0.0 };
    json!({
        "batch": view["batch"],
        "interval_ms": view["interval_ms"],
        "active_window_secs": view["active_window_secs"],
        "admitted_per_minute": num(per_minute),
    })
}

pub async fn admission(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let view = admission_output(&ctx.booking_admin(Method::GET, ADMISSION, None).await?);
    Ok(Finding {
        summary: format!(
            "admitting {} every {} ms (up to {} per minute per concert), active window {} s",
            view["batch"], view["interval_ms"], view["admitted_per_minute"], view["active_window_secs"]
        ),
        output: view,
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAdmission {
    #[serde(default)]
    pub batch: Option<i64>,
    #[serde(default)]
    pub interval_ms: Option<i64>,
}

impl SetAdmission {
    pub fn checked(self) -> Result<Self, String> {
        if self.batch.is_none() && self.interval_ms.is_none() {
            return Err("give batch, interval_ms or both".into());
        }
        if let Some(b) = self.batch.filter(|b| !BATCH_RANGE.contains(b)) {
            return Err(format!("batch must be {} to {}, not {b}", BATCH_RANGE.start(), BATCH_RANGE.end()));
        }
        if let Some(i) = self.interval_ms.filter(|i| !INTERVAL_MS_RANGE.contains(i)) {
            return Err(format!(
                "interval_ms must be {} to {}, not {i}",
                INTERVAL_MS_RANGE.start(),
                INTERVAL_MS_RANGE.end()
            ));
        }
        Ok(self)
    }
}

pub async fn set_admission(ctx: &mut Ctx, args: &SetAdmission) -> Result<Finding, TargetError> {
    let before = admission_output(&ctx.booking_admin(Method::GET, ADMISSION, None).await?);
    let same =
        args.batch.is_none_or(|b| before["batch"] == b) && args.interval_ms.is_none_or(|i| before["interval_ms"] == i);
    let after = if same {
        before.clone()
    } else {
        let mut body = Map::new();
        if let Some(b) = args.batch {
            body.insert("batch".into(), json!(b));
        }
        if let Some(i) = args.interval_ms {
            body.insert("interval_ms".into(), json!(i));
        }
        admission_output(&ctx.booking_admin(Method::PUT, ADMISSION, Some(Value::Object(body))).await?)
    };
    let describe = |v: &Value| format!("{} every {} ms", v["batch"], v["interval_ms"]);
    let summary = if same {
        format!("admission is already {}", describe(&before))
    } else {
        format!("admission {} → {}", describe(&before), describe(&after))
    };
    Ok(Finding { summary, output: json!({ "before": before, "after": after, "changed": !same }) })
}

fn rate_limit_text(v: &Value) -> String {
    if v["enabled"] == true { format!("{} entries/s", v["per_second"]) } else { "off".into() }
}

pub async fn rate_limit(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let view = ctx.booking_admin(Method::GET, RATE_LIMIT, None).await?;
    Ok(Finding {
        summary: format!("queue-entry rate limit {}", rate_limit_text(&view)),
        output: json!({ "enabled": view["enabled"], "per_second": view["per_second"] }),
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRateLimit {
    pub enabled: bool,
    #[serde(default)]
    pub per_second: Option<i64>,
}

impl SetRateLimit {
    pub fn checked(self) -> Result<Self, String> {
        match (self.enabled, self.per_second) {
            (true, Some(n)) if PER_SECOND_RANGE.contains(&n) => Ok(self),
            (true, _) => {
                Err(format!("enabled needs per_second from {} to {}", PER_SECOND_RANGE.start(), PER_SECOND_RANGE.end()))
            }
            (false, Some(_)) => Err("per_second applies only with enabled: true".into()),
            (false, None) => Ok(self),
        }
    }
}

pub async fn set_rate_limit(ctx: &mut Ctx, args: &SetRateLimit) -> Result<Finding, TargetError> {
    let before = ctx.booking_admin(Method::GET, RATE_LIMIT, None).await?;
    let same =
        before["enabled"] == args.enabled && (!args.enabled || before["per_second"] == args.per_second.unwrap_or(0));
    let after = if same {
        before.clone()
    } else {
        let body = if args.enabled {
            json!({ "enabled": true, "per_second": args.per_second })
        } else {
            json!({ "enabled": false })
        };
        ctx.booking_admin(Method::PUT, RATE_LIMIT, Some(body)).await?
    };
    let summary = if same {
        format!("queue-entry rate limit is already {}", rate_limit_text(&before))
    } else {
        format!("queue-entry rate limit {} → {}", rate_limit_text(&before), rate_limit_text(&after))
    };
    Ok(Finding { summary, output: json!({ "before": before, "after": after, "changed": !same }) })
}

pub async fn flush_caches(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let answer = ctx.booking_admin(Method::POST, "/v1/admin/caches/flush", None).await?;
    let flushed = answer["flushed"].clone();
    let parts: Vec<String> =
        flushed.as_object().map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect()).unwrap_or_default();
    Ok(Finding { summary: format!("caches flushed: {}", parts.join(", ")), output: json!({ "flushed": flushed }) })
}

fn chaos_text(v: &Value) -> String {
    if v["enabled"] != true {
        return "off".into();
    }
    let routes = v["routes"]
        .as_array()
        .filter(|r| !r.is_empty())
        .map_or("every route".to_string(), |r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    let errors = v["error_ratio"].as_f64().unwrap_or(0.0) * 100.0;
    format!("ON: {errors:.0} % errors, +{} ms on {routes}", v["latency_ms"])
}

pub async fn chaos(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let view = ctx.booking_admin(Method::GET, CHAOS, None).await?;
    Ok(Finding {
        summary: format!("chaos switch {}", chaos_text(&view)),
        output: json!({ "enabled": view["enabled"], "routes": view["routes"], "error_ratio": view["error_ratio"], "latency_ms": view["latency_ms"] }),
    })
}

pub async fn clear_chaos(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let before = ctx.booking_admin(Method::GET, CHAOS, None).await?;
    if before["enabled"] != true {
        return Ok(Finding {
            summary: "chaos switch is already off".into(),
            output: json!({ "before": before, "after": before, "changed": false }),
        });
    }
    let after = ctx.booking_admin(Method::DELETE, CHAOS, None).await?;
    Ok(Finding {
        summary: format!("chaos switch {} → {}", chaos_text(&before), chaos_text(&after)),
        output: json!({ "before": before, "after": after, "changed": true }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_changes_need_a_field_within_booking_bounds() {
        let set = |batch, interval_ms| SetAdmission { batch, interval_ms }.checked();
        assert!(set(None, None).is_err());
        assert!(set(Some(500), None).is_ok());
        assert!(set(Some(0), None).is_err());
        assert!(set(None, Some(99)).is_err());
        assert!(set(Some(1), Some(3_600_000)).is_ok());
    }

    #[test]
    fn a_rate_limit_needs_a_rate_only_when_enabled() {
        let set = |enabled, per_second| SetRateLimit { enabled, per_second }.checked();
        assert!(set(true, Some(200)).is_ok());
        assert!(set(true, None).is_err());
        assert!(set(true, Some(0)).is_err());
        assert!(set(false, None).is_ok());
        assert!(set(false, Some(5)).is_err());
    }

    #[test]
    fn ratios_take_names_or_rates_and_rates_need_a_sample() {
        let m = |ratio: &[&str], sample_secs| {
            Metrics {
                metrics: vec!["up".into()],
                ratio: Some(ratio.iter().map(|s| s.to_string()).collect()),
                sample_secs,
            }
            .checked()
        };
        assert!(m(&["db_pool_connections_in_use", "db_pool_connections_max"], 0).is_ok());
        assert!(m(&["rate(process_cpu_seconds_total)", "booking_cpu_limit_cores"], 5).is_ok());
        assert!(
            m(&["rate(process_cpu_seconds_total)", "booking_cpu_limit_cores"], 0).unwrap_err().contains("sample_secs")
        );
        assert!(m(&["a b", "c"], 0).is_err());
        assert!(m(&["a"], 0).is_err());
        let admission = admission_output(&json!({"batch": 500, "interval_ms": 15000, "active_window_secs": 600}));
        assert_eq!(admission["admitted_per_minute"], json!(2000));
    }

    #[test]
    fn not_ready_says_why_from_a_new_or_an_old_booking() {
        use reqwest_tls::StatusCode;
        let why = |body: Value| not_ready_reasons(&body, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            why(json!({"status": "not_ready", "reasons": ["chaos"], "database": "ok", "queue": "ok"})),
            ["chaos"]
        );
        assert_eq!(why(json!({"status": "unavailable", "database": "ok", "queue": "unavailable"})), ["queue"]);
        assert_eq!(
            why(json!({"error": {"code": "CHAOS_INJECTED", "message": "x"}})),
            ["chaos"],
            "an old booking's chaos 503 is chaos, not the database"
        );
        assert_eq!(why(Value::Null), ["unexplained (503 Service Unavailable)"]);
    }
}
