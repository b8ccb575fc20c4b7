//! The alerting service as the fallback source of a Prometheus check that
//! names alert rules (`alerts: [...]`) when no Prometheus is configured: the
//! state the service holds for those rules answers the check. The embedded
//! platform has no Prometheus, but the alerting service evaluates the same
//! rules over their own windows from its own scrape of booking, so its
//! state is a real answer where a 10-second sample of booking would not be
//! (a burn rate over an hour).
//!
//! `GET /metrics` (open) has `alerting_rule_state{rule,state}` for every rule
//! the service evaluates, inactive and without data included, so an absent
//! rule is told apart from a quiet one; `GET /v1/alerts` (API key) adds the
//! value, severity and start of those pending or firing.
//!
//! The state decides the check (pending or firing is the problem), not the
//! step's `problem_if`, which reads figures only Prometheus returns.

use serde_json::{Value, json};

use super::{Finding, num};
use crate::{
    exposition,
    target::{Ctx, Target, TargetError},
};

const RULE_STATE: &str = "alerting_rule_state";

/// What the alerting service could say about a step's rules.
#[derive(Debug)]
pub enum Fallback {
    /// Its answer, and whether a rule is pending or firing.
    Answered { finding: Finding, active: bool },
    /// It cannot answer, and why: the step is skipped, and the run, which
    /// needed it, is inconclusive.
    Unavailable(String),
}

/// Rule states, worst first; `no_data` is no answer at all.
fn rank(state: &str) -> u8 {
    match state {
        "firing" => 3,
        "pending" => 2,
        "inactive" => 1,
        _ => 0,
    }
}

/// The state of each of `rules` the service evaluates, from its /metrics.
fn states(metrics: &str, rules: &[String]) -> Vec<(String, String)> {
    let samples = exposition::parse(metrics);
    rules
        .iter()
        .filter_map(|rule| {
            let current = samples.iter().find(|s| s.name == RULE_STATE && s.label("rule") == rule && s.value == 1.0)?;
            Some((rule.clone(), current.label("state").to_string()))
        })
        .collect()
}

/// `key.rule_id` (or `rule_id`) of a `/v1/alerts` entry; `phase` (or `state`).
fn field<'a>(alert: &'a Value, name: &str) -> &'a Value {
    match (name, &alert[name]) {
        ("rule_id" | "labels", Value::Null) => &alert["key"][name],
        ("state", Value::Null) => &alert["phase"],
        (_, v) => v,
    }
}

pub async fn rule_states(ctx: &Ctx, rules: &[String]) -> Result<Fallback, TargetError> {
    let at = ctx.endpoints.describe(Target::Alerting).unwrap_or_default();
    let (status, body) = match ctx.alerting_get("/metrics").await {
        Ok(answer) => answer,
        Err(TargetError::Unreachable { message, .. }) => {
            return Ok(Fallback::Unavailable(format!("the alerting service at {at} is unreachable: {message}")));
        }
        Err(e) => return Err(e),
    };
    if !status.is_success() {
        return Err(TargetError::failed(format!("the alerting service at {at} answered /metrics with {status}")));
    }
    let known = states(&body, rules);
    let unknown: Vec<&String> = rules.iter().filter(|r| !known.iter().any(|(k, _)| k == *r)).collect();
    let without_data: Vec<&String> = known.iter().filter(|(_, s)| rank(s) == 0).map(|(r, _)| r).collect();
    let active = known.iter().any(|(_, s)| rank(s) >= 2);
    if !active && (!unknown.is_empty() || !without_data.is_empty()) {
        let mut why = Vec::new();
        if !unknown.is_empty() {
            why.push(format!("does not evaluate {}", list(&unknown)));
        }
        if !without_data.is_empty() {
            why.push(format!("has no data for {} (it cannot read booking's metrics)", list(&without_data)));
        }
        return Ok(Fallback::Unavailable(format!("the alerting service at {at} {}", why.join(" and "))));
    }

    let alerts = if active { firing_alerts(ctx, &at, rules).await? } else { Vec::new() };
    let worst = known.iter().max_by_key(|(_, s)| rank(s)).map_or("inactive", |(_, s)| s.as_str()).to_string();
    let described: Vec<String> = known
        .iter()
        .map(|(rule, state)| {
            let values: Vec<String> = alerts
                .iter()
                .filter(|a| a["rule_id"] == rule.as_str())
                .map(|a| match a["severity"].as_str() {
                    Some(severity) => format!("{severity}, value {}", a["value"]),
                    None => format!("value {}", a["value"]),
                })
                .collect();
            if values.is_empty() {
                format!("{rule} {state}")
            } else {
                format!("{rule} {state} ({})", values.join("; "))
            }
        })
        .collect();
    let source = format!("alerting service {at}");
    let rules_out: Vec<Value> = known.iter().map(|(rule, state)| json!({ "rule_id": rule, "state": state })).collect();
    Ok(Fallback::Answered {
        finding: Finding {
            summary: format!("{} ({source}, no Prometheus)", described.join(", ")),
            output: json!({ "source": source, "state": worst, "rules": rules_out, "alerts": alerts }),
        },
        active,
    })
}

/// The pending and firing alerts of `rules`, with value, severity and start.
async fn firing_alerts(ctx: &Ctx, at: &str, rules: &[String]) -> Result<Vec<Value>, TargetError> {
    let (status, body) = ctx.alerting_get("/v1/alerts").await?;
    if status.as_u16() == 401 || status.as_u16() == 403 {
        return Err(TargetError::failed(format!(
            "the alerting service at {at} refused the API key ({status}): set ALERTING_API_KEY or --alerting-api-key"
        )));
    }
    if !status.is_success() {
        return Err(TargetError::failed(format!("the alerting service at {at} answered /v1/alerts with {status}")));
    }
    let body: Value = serde_json::from_str(&body)
        .map_err(|_| TargetError::failed(format!("the alerting service at {at} answered /v1/alerts with no JSON")))?;
    Ok(body["alerts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|a| field(a, "rule_id").as_str().is_some_and(|id| rules.iter().any(|r| r == id)))
        .filter(|a| rank(field(a, "state").as_str().unwrap_or("")) >= 2)
        .map(|a| {
            json!({
                "rule_id": field(a, "rule_id"),
                "labels": field(a, "labels"),
                "state": field(a, "state"),
                "severity": a["severity"],
                "value": a["value"].as_f64().map_or(Value::Null, num),
                "since_ms": a["since_ms"],
            })
        })
        .collect())
}

fn list(rules: &[&String]) -> String {
    rules.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_has_the_state_whose_gauge_is_one_and_absent_rules_have_none() {
        let metrics = "\
# TYPE alerting_rule_state gauge
alerting_rule_state{rule=\"error-budget-burn-fast\",state=\"firing\"} 1
alerting_rule_state{rule=\"error-budget-burn-fast\",state=\"inactive\"} 0
alerting_rule_state{rule=\"error-budget-burn-slow\",state=\"inactive\"} 1
alerting_rule_state{rule=\"error-budget-burn-slow\",state=\"firing\"} 0
";
        let rules = ["error-budget-burn-fast", "error-budget-burn-slow", "no-such-rule"].map(String::from);
        assert_eq!(
            states(metrics, &rules),
            [
                ("error-budget-burn-fast".to_string(), "firing".to_string()),
                ("error-budget-burn-slow".to_string(), "inactive".to_string())
            ]
        );
        assert!(
            rank("firing") > rank("pending")
                && rank("pending") > rank("inactive")
                && rank("inactive") > rank("no_data")
        );
    }

    #[test]
    fn alerts_are_read_in_either_shape() {
        let nested = json!({ "key": { "rule_id": "r", "labels": {} }, "phase": "firing" });
        let flat = json!({ "rule_id": "r", "labels": {}, "state": "pending" });
        assert_eq!((field(&nested, "rule_id"), field(&nested, "state")), (&json!("r"), &json!("firing")));
        assert_eq!((field(&flat, "rule_id"), field(&flat, "state")), (&json!("r"), &json!("pending")));
    }
}
