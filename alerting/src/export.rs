//! `alerting export prometheus`: the loaded rules as a Prometheus rule file
//! and a matching Alertmanager configuration, for a stock Prometheus +
//! Alertmanager to run the same alerts as the embedded engine.
//!
//! Prometheus 2.42 has no hysteresis (`keep_firing_for` came in 2.44), so
//! only the fire conditions and `for` are exported; the clear thresholds
//! exist in the engine alone. Both files are serialized from structs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{
    promql::format_duration,
    rules::{Condition, Level, Op, Rule, Severity, Unit, file::RuleSet},
};

/// The series Prometheus synthesises for the booking scrape target.
const TARGET_UP: &str = r#"up{job="booking"}"#;

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Serialize)]
struct RuleGroup {
    name: String,
    interval: String,
    rules: Vec<AlertingRule>,
}

#[derive(Serialize)]
struct AlertingRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// A Prometheus rule file with one group: an alerting rule per level of each
/// rule (same alert name, told apart by the `severity` label), and a
/// `<Name>NoData` rule per rule.
pub fn prometheus_rules(set: &RuleSet) -> String {
    let mut rules = Vec::new();
    for rule in &set.rules {
        for level in &rule.levels {
            rules.push(AlertingRule {
                alert: rule.name.clone(),
                expr: fire_expr(&level.fire),
                for_: format_duration(level.for_),
                labels: labels(rule, level.severity, false),
                annotations: annotations(set, rule, Some(level)),
            });
        }
        if let Some(no_data) = no_data_expr(rule) {
            rules.push(AlertingRule {
                alert: format!("{}NoData", rule.name),
                expr: no_data,
                for_: format_duration(rule.no_data_for),
                labels: labels(rule, rule.no_data_severity, true),
                annotations: annotations(set, rule, None),
            });
        }
    }
    let mut own = vec![no_evaluator(set)];
    for alert in rules.iter_mut().chain(own.iter_mut()) {
        alert.expr = inhibited_expr(set, alert);
    }
    let file = RuleFile {
        groups: vec![
            RuleGroup { name: "booking".to_string(), interval: format_duration(set.evaluation_interval), rules },
            RuleGroup { name: "alerting".to_string(), interval: format_duration(set.evaluation_interval), rules: own },
        ],
    };
    serde_norway::to_string(&file).expect("a rule file always serializes")
}

/// The alert's expression with the engine's two additions to Alertmanager
/// inhibition written into it: for each inhibition that targets it, `unless`
/// a source alert was pending or firing (`ALERTS` has both) within the hold.
/// Alertmanager's `inhibit_rules` (the same rules) mute the rest.
fn inhibited_expr(set: &RuleSet, alert: &AlertingRule) -> String {
    let mut labels = alert.labels.clone();
    labels.insert("alertname".to_string(), alert.alert.clone());
    let mut expr = alert.expr.clone();
    for rule in set.inhibit_rules.iter().filter(|r| r.is_target(&labels)) {
        // An `equal` label the alerting rule sets (rule_id, severity, ...)
        // is not on its expression's result: it becomes a matcher on the
        // source; the others (series labels) join with `on`.
        let mut matchers = rule.source_text.clone();
        let mut on = Vec::new();
        for label in &rule.equal {
            match labels.get(label) {
                Some(value) => matchers.push(matcher(label, value)),
                None => on.push(label.clone()),
            }
        }
        let source = format!("ALERTS{{{}}}", matchers.join(","));
        let active = if rule.hold.is_zero() {
            source
        } else {
            format!("max_over_time({source}[{}])", format_duration(rule.hold))
        };
        expr = format!("{expr} unless on({}) {active}", on.join(", "));
    }
    expr
}

/// The one page the pager cannot send about itself: no process of the
/// alerting group evaluates (all down, or none can reach the incident
/// store). Prometheus and Alertmanager watch for it from outside.
fn no_evaluator(set: &RuleSet) -> AlertingRule {
    let mut rule = crate::service::no_data_rule();
    rule.id = "alerting-no-evaluator".into();
    rule.runbook = rule.id.clone();
    rule.dashboard = Some("/d/booking-alerts".into());
    let mut annotations = BTreeMap::new();
    annotations
        .insert("summary".to_string(), "No alerting process is evaluating the rules: nobody will be paged".to_string());
    annotations.insert(
        "description".to_string(),
        "sum(alerting_leader) has been below 1 for 1m: every alerting process is down, or none can reach the incident store to take the evaluator lease.".to_string(),
    );
    annotations.insert("runbook_url".to_string(), set.runbook_url(&rule));
    if let Some(url) = set.dashboard_url(&rule) {
        annotations.insert("dashboard".to_string(), url);
    }
    AlertingRule {
        alert: "AlertingNoEvaluator".into(),
        // `or vector(0)`: with every process down there is no series to sum.
        expr: "(sum(alerting_leader) or vector(0)) < 1".into(),
        for_: "1m".into(),
        labels: [("severity", "critical"), ("owner", "infra"), ("rule_id", "alerting-no-evaluator")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations,
    }
}

/// `(expr) > threshold and (expr) > threshold`: every condition must hold.
fn fire_expr(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .map(|c| format!("({}) {} {}", c.expr, c.op.promql(), c.threshold))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The rule's first expression returning nothing while the target is up:
/// a renamed or vanished metric. While the target is down the target rule
/// pages instead; for the target rule itself, no data means Prometheus no
/// longer scrapes the booking service at all.
fn no_data_expr(rule: &Rule) -> Option<String> {
    let first = &rule.levels.first()?.fire.first()?.expr;
    if first.trim() == TARGET_UP {
        Some(format!("absent({TARGET_UP})"))
    } else {
        Some(format!("absent({first}) and on() ({TARGET_UP} == 1)"))
    }
}

fn labels(rule: &Rule, severity: Severity, no_data: bool) -> BTreeMap<String, String> {
    let mut labels = rule.labels.clone();
    labels.insert("severity".to_string(), severity.to_string());
    labels.insert("owner".to_string(), rule.owner.clone());
    labels.insert("rule_id".to_string(), rule.id.clone());
    if no_data {
        labels.insert("no_data".to_string(), "true".to_string());
    }
    labels
}

fn annotations(set: &RuleSet, rule: &Rule, level: Option<&Level>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    let (summary, description) = match level {
        Some(level) => (rule.summary.clone(), describe(rule.unit, level)),
        None => (
            format!("No data for {}", rule.name),
            format!(
                "The expression of {} returned nothing for {} while the booking target is up: a metric is missing or renamed.",
                rule.id,
                format_duration(rule.no_data_for)
            ),
        ),
    };
    annotations.insert("summary".to_string(), summary);
    annotations.insert("description".to_string(), description);
    annotations.insert("runbook_url".to_string(), set.runbook_url(rule));
    if let Some(url) = set.dashboard_url(rule) {
        annotations.insert("dashboard".to_string(), url);
    }
    annotations
}

/// `Value {{ $value | humanizePercentage }}: fires above 1 % held for 2m; clears below 0.8 % held for 5m (alerting engine only).`
fn describe(unit: Unit, level: &Level) -> String {
    let Some(main) = level.fire.first() else { return String::new() };
    let value = match unit {
        Unit::Ratio => "{{ $value | humanizePercentage }}",
        Unit::Seconds => "{{ $value | humanizeDuration }}",
        Unit::Bytes => "{{ $value | humanize1024 }}B",
        Unit::None => "{{ $value | humanize }}",
    };
    let side = |op: Op| match op {
        Op::Above => "above",
        Op::Below => "below",
    };
    let mut text = format!(
        "Value {value}: fires {} {} held for {}",
        side(main.op),
        human(unit, main.threshold),
        format_duration(level.for_)
    );
    if let Some(clear) = level.clear.first() {
        text.push_str(&format!(
            "; clears {} {} held for {} (alerting engine only)",
            side(clear.op),
            human(unit, clear.threshold),
            format_duration(level.clear_for)
        ));
    }
    text.push('.');
    text
}

/// A threshold as a person reads it: `1 %`, `500 ms`, `2 GiB`.
fn human(unit: Unit, value: f64) -> String {
    let tidy = crate::rules::burn::tidy;
    match unit {
        Unit::Ratio => format!("{} %", tidy(value * 100.0)),
        Unit::Seconds if value.abs() < 1.0 && value != 0.0 => format!("{} ms", tidy(value * 1000.0)),
        Unit::Seconds => format!("{} s", tidy(value)),
        Unit::Bytes => {
            let mut scaled = value;
            let mut suffix = "B";
            for next in ["KiB", "MiB", "GiB", "TiB"] {
                if scaled.abs() < 1024.0 {
                    break;
                }
                scaled /= 1024.0;
                suffix = next;
            }
            format!("{} {suffix}", (scaled * 100.0).round() / 100.0)
        }
        Unit::None => tidy(value).to_string(),
    }
}

// ---- Alertmanager ----

/// Where Alertmanager sends what; the flags of `alerting export prometheus`.
/// The defaults suit a laptop: a placeholder Slack webhook and an SMTP sink
/// on 127.0.0.1:1025 without TLS.
#[derive(clap::Args, Clone, PartialEq)]
pub struct AlertmanagerOptions {
    /// Slack incoming-webhook URL written into alertmanager.yml (a secret).
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true, default_value = SLACK_PLACEHOLDER)]
    pub slack_api_url: String,
    /// SMTP server as host:port.
    #[arg(long, default_value = "127.0.0.1:1025")]
    pub smtp_smarthost: String,
    /// The From address of Alertmanager's emails.
    #[arg(long, default_value = "alertmanager@booking.localhost")]
    pub smtp_from: String,
    /// Require STARTTLS; false only for a local sink.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub smtp_require_tls: bool,
    /// Slack channel for critical alerts, whoever owns them.
    #[arg(long, default_value = "#incidents")]
    pub page_channel: String,
    /// Email address for critical alerts.
    #[arg(long, default_value = "incident-lead@booking.localhost")]
    pub page_email: String,
    /// Warnings go to their owner role: `ROLE=CHANNEL,EMAIL`, repeatable.
    /// A role without one gets `#alerts-<role>` and `<role>@<email-domain>`.
    #[arg(long = "role-contact", value_name = "ROLE=CHANNEL,EMAIL", value_parser = parse_role_contact)]
    pub roles: Vec<RoleContact>,
    /// The domain of the `<role>@<email-domain>` default addresses.
    #[arg(long, default_value = "booking.localhost")]
    pub email_domain: String,
}

const SLACK_PLACEHOLDER: &str = "https://hooks.slack.invalid/services/PLACEHOLDER";

#[derive(Debug, Clone, PartialEq)]
pub struct RoleContact {
    pub role: String,
    pub slack_channel: String,
    pub email: String,
}

fn parse_role_contact(text: &str) -> Result<RoleContact, String> {
    let (role, rest) = text.split_once('=').ok_or("expected ROLE=CHANNEL,EMAIL")?;
    let (channel, email) = rest.split_once(',').ok_or("expected ROLE=CHANNEL,EMAIL")?;
    let (role, slack_channel, email) = (role.trim(), channel.trim(), email.trim());
    if role.is_empty() || slack_channel.is_empty() || !email.contains('@') {
        return Err(format!("`{text}` is not ROLE=CHANNEL,EMAIL"));
    }
    Ok(RoleContact { role: role.to_string(), slack_channel: slack_channel.to_string(), email: email.to_string() })
}

impl Default for AlertmanagerOptions {
    fn default() -> Self {
        AlertmanagerOptions {
            slack_api_url: SLACK_PLACEHOLDER.to_string(),
            smtp_smarthost: "127.0.0.1:1025".to_string(),
            smtp_from: "alertmanager@booking.localhost".to_string(),
            smtp_require_tls: false,
            page_channel: "#incidents".to_string(),
            page_email: "incident-lead@booking.localhost".to_string(),
            roles: Vec::new(),
            email_domain: "booking.localhost".to_string(),
        }
    }
}

/// Leaves the webhook URL out: it is a secret.
impl std::fmt::Debug for AlertmanagerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerOptions")
            .field("slack_api_url", &"<redacted>")
            .field("smtp_smarthost", &self.smtp_smarthost)
            .field("smtp_from", &self.smtp_from)
            .field("smtp_require_tls", &self.smtp_require_tls)
            .field("page_channel", &self.page_channel)
            .field("page_email", &self.page_email)
            .field("roles", &self.roles)
            .field("email_domain", &self.email_domain)
            .finish()
    }
}

impl AlertmanagerOptions {
    /// Where the warnings of `role` go.
    pub fn contact(&self, role: &str) -> (String, String) {
        match self.roles.iter().rev().find(|c| c.role == role) {
            Some(c) => (c.slack_channel.clone(), c.email.clone()),
            None => (format!("#alerts-{role}"), format!("{role}@{}", self.email_domain)),
        }
    }
}

#[derive(Serialize)]
struct AlertmanagerConfig {
    global: Global,
    route: Route,
    receivers: Vec<Receiver>,
    inhibit_rules: Vec<InhibitRule>,
}

#[derive(Serialize)]
struct Global {
    resolve_timeout: String,
    slack_api_url: String,
    smtp_smarthost: String,
    smtp_from: String,
    smtp_require_tls: bool,
}

#[derive(Serialize)]
struct Route {
    receiver: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    matchers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    group_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_wait: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repeat_interval: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
}

impl Route {
    fn to(receiver: &str, matchers: Vec<String>) -> Route {
        Route {
            receiver: receiver.to_string(),
            matchers,
            group_by: Vec::new(),
            group_wait: None,
            group_interval: None,
            repeat_interval: None,
            routes: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct Receiver {
    name: String,
    slack_configs: Vec<SlackConfig>,
    email_configs: Vec<EmailConfig>,
}

#[derive(Serialize)]
struct SlackConfig {
    channel: String,
    send_resolved: bool,
    title: String,
    title_link: String,
    text: String,
}

#[derive(Serialize)]
struct EmailConfig {
    to: String,
    send_resolved: bool,
    require_tls: bool,
    headers: BTreeMap<String, String>,
    text: String,
}

#[derive(Serialize)]
struct InhibitRule {
    source_matchers: Vec<String>,
    target_matchers: Vec<String>,
    equal: Vec<String>,
}

const PAGE_RECEIVER: &str = "page";
/// Warnings whose owner has no route of its own land with the incident lead.
const FALLBACK_ROLE: &str = "incident-lead";

const TITLE: &str = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})";
const TEXT: &str = "{{ range .Alerts }}*{{ .Labels.alertname }}* ({{ .Labels.severity }}, owner {{ .Labels.owner }}): \
{{ .Annotations.summary }}\n{{ .Annotations.description }}\nRunbook: {{ .Annotations.runbook_url }}\
{{ if .Annotations.dashboard }}\nDashboard: {{ .Annotations.dashboard }}{{ end }}\n{{ end }}";
const RUNBOOK_LINK: &str = "{{ (index .Alerts 0).Annotations.runbook_url }}";

/// An Alertmanager configuration for the rules: critical alerts page at
/// once and repeat often; warnings go to the owner role's receiver; the
/// rule file's inhibitions become `inhibit_rules`.
pub fn alertmanager_config(set: &RuleSet, roster_hint: &AlertmanagerOptions) -> String {
    let mut roles: BTreeSet<&str> = set.owners();
    roles.insert(FALLBACK_ROLE);

    let receiver = |name: &str, (channel, email): (String, String)| Receiver {
        name: name.to_string(),
        slack_configs: vec![SlackConfig {
            channel,
            send_resolved: true,
            title: TITLE.to_string(),
            title_link: RUNBOOK_LINK.to_string(),
            text: TEXT.to_string(),
        }],
        email_configs: vec![EmailConfig {
            to: email,
            send_resolved: true,
            require_tls: roster_hint.smtp_require_tls,
            headers: BTreeMap::from([("Subject".to_string(), TITLE.to_string())]),
            text: TEXT.to_string(),
        }],
    };
    let mut receivers =
        vec![receiver(PAGE_RECEIVER, (roster_hint.page_channel.clone(), roster_hint.page_email.clone()))];
    receivers.extend(roles.iter().map(|role| receiver(role, roster_hint.contact(role))));

    let critical = Route {
        group_wait: Some("0s".to_string()),
        group_interval: Some("1m".to_string()),
        repeat_interval: Some("30m".to_string()),
        ..Route::to(PAGE_RECEIVER, vec![matcher("severity", Severity::Critical.as_str())])
    };
    // Warnings group as the rule file's `grouping` says (critical never waits).
    let (group_by, group_wait, group_interval) = match &set.grouping {
        Some(g) => (g.group_by.clone(), Some(format_duration(g.group_wait)), Some(format_duration(g.group_interval))),
        None => (Vec::new(), None, None),
    };
    let warning = Route {
        routes: roles
            .iter()
            .filter(|role| **role != FALLBACK_ROLE)
            .map(|role| Route::to(role, vec![matcher("owner", role)]))
            .collect(),
        group_by,
        group_wait,
        group_interval,
        ..Route::to(FALLBACK_ROLE, vec![matcher("severity", Severity::Warning.as_str())])
    };
    let config = AlertmanagerConfig {
        global: Global {
            resolve_timeout: "5m".to_string(),
            slack_api_url: roster_hint.slack_api_url.clone(),
            smtp_smarthost: roster_hint.smtp_smarthost.clone(),
            smtp_from: roster_hint.smtp_from.clone(),
            smtp_require_tls: roster_hint.smtp_require_tls,
        },
        route: Route {
            group_by: vec!["alertname".to_string(), "rule_id".to_string(), "severity".to_string()],
            group_wait: Some("30s".to_string()),
            group_interval: Some("5m".to_string()),
            repeat_interval: Some("4h".to_string()),
            routes: vec![critical, warning],
            ..Route::to(FALLBACK_ROLE, Vec::new())
        },
        receivers,
        inhibit_rules: set
            .inhibit_rules
            .iter()
            .map(|r| InhibitRule {
                source_matchers: r.source_text.clone(),
                target_matchers: r.target_text.clone(),
                equal: r.equal.clone(),
            })
            .collect(),
    };
    serde_norway::to_string(&config).expect("an Alertmanager config always serializes")
}

/// `name="value"`, with the value quoted as Alertmanager's matcher syntax wants.
fn matcher(name: &str, value: &str) -> String {
    format!("{name}={}", serde_json::to_string(value).expect("a string serializes"))
}

#[cfg(test)]
mod tests {
    use serde_norway::Value;

    use super::*;
    use crate::rules::file::shipped;

    fn alerts(yaml: &str) -> Vec<Value> {
        let file: Value = serde_norway::from_str(yaml).unwrap();
        let groups = file["groups"].as_sequence().unwrap();
        assert_eq!(groups.len(), 2, "the booking rules and the pager's own");
        assert_eq!(groups[1]["rules"][0]["alert"], "AlertingNoEvaluator");
        groups[0]["rules"].as_sequence().unwrap().clone()
    }

    #[test]
    fn every_level_becomes_an_alert_with_its_conditions_joined_by_and() {
        let set = shipped();
        let rules = alerts(&prometheus_rules(&set));
        let levels: usize = set.rules.iter().map(|r| r.levels.len()).sum();
        assert_eq!(rules.len(), levels + set.rules.len());
        let critical = rules
            .iter()
            .find(|r| r["alert"] == "ErrorBudgetBurnFast" && r["labels"]["severity"] == "critical")
            .unwrap();
        let expr = critical["expr"].as_str().unwrap();
        assert_eq!(expr.matches(" and ").count(), 2, "{expr}");
        assert!(expr.contains("[1h])))) > 0.072 and (1 - ") && expr.contains(" > 100 unless on() "), "{expr}");
        // The inhibitions' holds and pending sources, written as `unless`.
        assert!(
            expr.contains(r#" unless on() max_over_time(ALERTS{rule_id="high-error-rate",severity="critical"}[10m])"#),
            "{expr}"
        );
        let warning =
            rules.iter().find(|r| r["alert"] == "HighErrorRate" && r["labels"]["severity"] == "warning").unwrap();
        assert!(
            warning["expr"]
                .as_str()
                .unwrap()
                .contains(r#" unless on() ALERTS{severity="critical",rule_id="high-error-rate"}"#),
            "an equal label the rule sets becomes a matcher: {:?}",
            warning["expr"]
        );
        assert_eq!(critical["for"], "2m");
        assert_eq!(critical["labels"]["rule_id"], "error-budget-burn-fast");
        assert_eq!(critical["labels"]["owner"], "incident-lead");
        assert!(critical["annotations"]["runbook_url"].as_str().unwrap().ends_with("/error-budget-burn.md"));
        assert!(rules.iter().all(|r| r.get("keep_firing_for").is_none()));
    }

    #[test]
    fn no_data_rules_wait_for_the_target_except_the_target_rule() {
        let rules = alerts(&prometheus_rules(&shipped()));
        let no_data =
            |name: &str| rules.iter().find(|r| r["alert"] == name).unwrap()["expr"].as_str().unwrap().to_string();
        assert_eq!(
            no_data("TelemetryPipelineDownNoData"),
            r#"absent(up{job="booking"}) unless on() ALERTS{severity="critical",rule_id="telemetry-pipeline-down"}"#,
            "no `up` clause; only the inhibition by its own critical"
        );
        let p95 = no_data("HighP95LatencyNoData");
        assert!(
            p95.starts_with("absent(histogram_quantile(")
                && p95.contains(r#" and on() (up{job="booking"} == 1) unless "#),
            "{p95}"
        );
    }

    #[test]
    fn descriptions_read_in_the_rule_unit() {
        assert_eq!(human(Unit::Ratio, 0.005), "0.5 %");
        assert_eq!(human(Unit::Seconds, 0.5), "500 ms");
        assert_eq!(human(Unit::Seconds, 3.0), "3 s");
        assert_eq!(human(Unit::Bytes, 3.0 * 1024.0 * 1024.0 * 1024.0), "3 GiB");
        let set = shipped();
        let rule = set.get("high-error-rate").unwrap();
        assert_eq!(
            describe(rule.unit, &rule.levels[1]),
            "Value {{ $value | humanizePercentage }}: fires above 1 % held for 2m; \
             clears below 0.8 % held for 2m (alerting engine only)."
        );
    }

    #[test]
    fn the_flag_defaults_are_the_laptop_defaults_and_role_contacts_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            options: AlertmanagerOptions,
        }
        let options = Cli::try_parse_from(["export", "--slack-api-url", SLACK_PLACEHOLDER]).unwrap().options;
        assert_eq!(options, AlertmanagerOptions::default());
        let options =
            Cli::try_parse_from(["export", "--role-contact", "dba=#dba-oncall,dba@example.com"]).unwrap().options;
        assert_eq!(options.contact("dba"), ("#dba-oncall".to_string(), "dba@example.com".to_string()));
        assert_eq!(options.contact("infra"), ("#alerts-infra".to_string(), "infra@booking.localhost".to_string()));
        assert!(Cli::try_parse_from(["export", "--role-contact", "dba"]).is_err());
        assert!(!format!("{options:?}").contains("hooks.slack"));
    }

    #[test]
    fn alertmanager_pages_critical_routes_warnings_by_owner_and_carries_the_inhibitions() {
        let config: Value =
            serde_norway::from_str(&alertmanager_config(&shipped(), &AlertmanagerOptions::default())).unwrap();
        let routes = config["route"]["routes"].as_sequence().unwrap();
        assert_eq!(routes[0]["matchers"][0], r#"severity="critical""#);
        assert_eq!((&routes[0]["receiver"], &routes[0]["group_wait"]), (&Value::from("page"), &Value::from("0s")));
        let owners: Vec<_> =
            routes[1]["routes"].as_sequence().unwrap().iter().map(|r| r["receiver"].as_str().unwrap()).collect();
        assert_eq!(owners, ["backend", "dba", "infra"]);
        let inhibit = config["inhibit_rules"].as_sequence().unwrap();
        assert_eq!(inhibit.len(), shipped().inhibit_rules.len(), "the rule file's inhibitions");
        assert_eq!(inhibit[2]["source_matchers"][0], r#"severity="critical""#);
        assert_eq!(inhibit[2]["equal"][0], "rule_id");
        let receivers = config["receivers"].as_sequence().unwrap();
        assert!(
            receivers
                .iter()
                .all(|r| r["slack_configs"][0]["text"].as_str().unwrap().contains(".Annotations.runbook_url"))
        );
        assert_eq!(receivers[0]["email_configs"][0]["require_tls"], false);
    }
}
