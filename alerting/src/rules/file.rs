//! The alert rule file: YAML in, validated and expanded [`Rule`]s out.
//!
//! Three kinds of rule share one file (the shipped one is
//! `alerting/config/rules.yaml`):
//! - `sli`: a built-in SLI of the booking service ([`Sli`]) with warning and
//!   critical thresholds;
//! - `burn_rate`: an availability SLO watched the SRE workbook way, expanded
//!   by [`super::burn`] into an `<id>-fast` and an `<id>-slow` rule;
//! - `promql`: any other expression, inside the PromQL subset both the
//!   embedded evaluator and Prometheus run ([`check_expr`]).
//!
//! Everything wrong with a file is an error at load time naming the file and
//! the line, so a bad deploy fails before it silences an alert. Rules that
//! load but can never fire come back as warnings.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
    time::Duration,
};

use regex::Regex;
use serde::{Deserialize, Deserializer};

use super::{
    burn::{self, BurnWindow},
    model::{Condition, Level, Op, Rule, Severity, Unit},
    sli::Sli,
};

use crate::promql::{format_duration, parse_duration};

mod build;
mod links;
mod schema;

use build::*;
pub use links::*;
use schema::*;

/// Every loaded rule, plus what the exporters and notifiers need around them.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Rules that load but look wrong (they can never fire, or can flap),
    /// each as `file:line: rule `id`: message`.
    pub warnings: Vec<String>,
    /// `runbook_url` of an alert is `<base>/<runbook>.md`: an http(s) URL,
    /// or a directory on this machine (default: the checkout's `runbooks/`).
    pub runbook_base_url: String,
    /// Grafana base URL; a rule's `dashboard` is a path under it. `None`: no
    /// Grafana, so pages carry no dashboard link that would lead nowhere.
    pub dashboard_base_url: Option<String>,
    pub evaluation_interval: Duration,
    /// Alertmanager-style inhibitions between the rules' alerts.
    pub inhibit_rules: Vec<super::InhibitRule>,
    /// How warnings are batched into pages (`None`: each pages alone).
    pub grouping: Option<super::Grouping>,
}

impl RuleSet {
    /// The owner roles the rules name, for the caller to check against the
    /// roster's roles (the rule file does not know them).
    pub fn owners(&self) -> BTreeSet<&str> {
        self.rules.iter().map(|r| r.owner.as_str()).collect()
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    pub fn runbook_url(&self, rule: &Rule) -> String {
        runbook_url(&self.runbook_base_url, rule)
    }

    pub fn dashboard_url(&self, rule: &Rule) -> Option<String> {
        dashboard_url(self.dashboard_base_url.as_deref(), rule)
    }

    /// The rule file's links, overridden where a setting says
    /// (`RUNBOOK_BASE_URL`, `GRAFANA_URL`) and checked as the file's are:
    /// `serve` and `export` take them the same way.
    pub fn with_links(mut self, runbook_base: Option<String>, grafana: Option<String>) -> Result<Self, String> {
        if let Some(base) = runbook_base {
            check_runbook_base(&base).map_err(|m| format!("RUNBOOK_BASE_URL: {m}"))?;
            self.runbook_base_url = base;
        }
        if let Some(url) = grafana {
            if !is_url(&url) {
                return Err(format!("GRAFANA_URL `{url}` is not an http(s) URL"));
            }
            self.dashboard_base_url = Some(url);
        }
        Ok(self)
    }
}

/// `<base>/<runbook>.md`: the one place a runbook link is made (pages and
/// the Prometheus export alike).
/// Where in a rule file something is (the platform's one YAML location).
pub use yamlerr::At;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or YAML that does not fit the schema, or a bad file-level setting.
    #[error("{at}: {message}")]
    File { at: At, message: String },
    /// A rule that parses but cannot work.
    #[error("{at}: rule `{rule}`: {message}")]
    Rule { at: At, rule: String, message: String },
}

pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read { path: origin.clone(), source })?;
    parse(&text, &origin)
}

/// The rule set shipped with the service.
///
/// # Panics
/// If `alerting/config/rules.yaml` does not load; a unit test guards it.
pub fn shipped() -> RuleSet {
    parse(include_str!("../../config/rules.yaml"), "alerting/config/rules.yaml")
        .unwrap_or_else(|e| panic!("the shipped rule file is broken: {e}"))
}

/// Parses a rule file; `origin` names it in messages.
pub fn parse(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
    let spec: FileSpec = serde_norway::from_str(text).map_err(|e| yaml_error(&e, origin))?;
    let file_error = |message: String| RulesError::File { at: At::file(origin), message };

    let defaults = Defaults {
        no_data_for: spec.defaults.no_data_for.map_or(DEFAULT_NO_DATA_FOR, |d| d.0),
        no_data_severity: spec.defaults.no_data_severity.unwrap_or(Severity::Warning),
        clear_for: spec.defaults.clear_for.map_or(DEFAULT_CLEAR_FOR, |d| d.0),
        window: spec.defaults.window.map_or(DEFAULT_WINDOW, |d| d.0),
        short_window: spec.defaults.short_window.map_or(DEFAULT_SHORT_WINDOW, |d| d.0),
        dashboard: spec.defaults.dashboard,
    };
    if let Some(path) = &defaults.dashboard {
        check_dashboard(path).map_err(|m| file_error(format!("defaults: {m}")))?;
    }
    let evaluation_interval = spec.evaluation_interval.map_or(DEFAULT_EVALUATION_INTERVAL, |d| d.0);
    if evaluation_interval.is_zero() {
        return Err(file_error("evaluation_interval must be above 0s".to_string()));
    }
    if defaults.window.is_zero() {
        return Err(file_error("defaults: window must be above 0s".to_string()));
    }
    let runbook_base_url = spec.runbook_base_url.unwrap_or_else(default_runbook_base);
    check_runbook_base(&runbook_base_url).map_err(|m| file_error(format!("runbook_base_url: {m}")))?;
    let dashboard_base_url = spec.dashboard_base_url;
    if let Some(url) = dashboard_base_url.as_deref().filter(|u| !is_url(u)) {
        return Err(file_error(format!("dashboard_base_url `{url}` is not an http(s) URL")));
    }
    if spec.rules.is_empty() {
        return Err(file_error("`rules` is empty".to_string()));
    }

    let lines = rule_lines(text, &spec.rules);
    let mut rules: Vec<Rule> = Vec::new();
    let mut warnings = Vec::new();
    for (index, (rule, line)) in spec.rules.into_iter().zip(lines).enumerate() {
        let at = At::new(origin, line);
        let label = rule.id.clone().unwrap_or_else(|| format!("#{}", index + 1));
        let mut rule_warnings = Vec::new();
        let built = build(rule, &defaults, line.unwrap_or(0), &mut rule_warnings)
            .map_err(|message| RulesError::Rule { at: at.clone(), rule: label.clone(), message })?;
        warnings.extend(rule_warnings.into_iter().map(|w| format!("{at}: rule `{label}`: {w}")));
        for new in built {
            if let Some(first) = rules.iter().find(|r| r.id == new.id) {
                return Err(RulesError::Rule {
                    at,
                    rule: label,
                    message: format!("duplicate id `{}` (first at line {})", new.id, first.line),
                });
            }
            if let Some(first) = rules.iter().find(|r| r.name == new.name) {
                return Err(RulesError::Rule {
                    at,
                    rule: label,
                    message: format!(
                        "duplicate name `{}` (first at line {}, rule `{}`)",
                        new.name, first.line, first.id
                    ),
                });
            }
            rules.push(new);
        }
    }
    let mut inhibit_rules = Vec::new();
    for (i, spec) in spec.inhibit_rules.into_iter().enumerate() {
        let rule = inhibit_rule(spec).map_err(|m| file_error(format!("inhibit_rules[{i}]: {m}")))?;
        let any_alert = |matches: &dyn Fn(&BTreeMap<String, String>) -> bool| {
            rules.iter().any(|r| r.levels.iter().any(|l| matches(&r.alert_labels(l.severity, &BTreeMap::new()))))
        };
        if !any_alert(&|l| rule.is_source(l)) {
            warnings.push(format!(
                "{origin}: inhibit_rules[{i}]: source_matchers {:?} match no alert of these rules",
                rule.source_text
            ));
        }
        if !any_alert(&|l| rule.is_target(l)) {
            warnings.push(format!(
                "{origin}: inhibit_rules[{i}]: target_matchers {:?} match no alert of these rules",
                rule.target_text
            ));
        }
        inhibit_rules.push(rule);
    }
    let grouping = match spec.grouping {
        None => None,
        Some(g) => {
            for label in &g.group_by {
                if !is_label_name(label) {
                    return Err(file_error(format!("grouping: group_by `{label}` is not a label name")));
                }
            }
            let grouping = super::Grouping {
                group_by: g.group_by,
                group_wait: g.group_wait.map_or(Duration::from_secs(30), |d| d.0),
                group_interval: g.group_interval.map_or(Duration::from_secs(300), |d| d.0),
            };
            if grouping.group_interval.is_zero() {
                return Err(file_error("grouping: group_interval must be above 0s".to_string()));
            }
            Some(grouping)
        }
    };
    Ok(RuleSet { rules, warnings, runbook_base_url, dashboard_base_url, evaluation_interval, inhibit_rules, grouping })
}

const DEFAULT_NO_DATA_FOR: Duration = Duration::from_secs(120);
const DEFAULT_CLEAR_FOR: Duration = Duration::from_secs(120);
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_SHORT_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(15);

/// A serde_norway error as `file:line: message`.
fn yaml_error(error: &serde_norway::Error, origin: &str) -> RulesError {
    let (at, message) = yamlerr::locate(error, origin, 0);
    RulesError::File { at, message }
}

/// The 1-based line of each entry of `rules:`, by reading the text: serde
/// keeps no positions once a value deserialized. Block-style entries are the
/// `-` lines at the indentation of the first one; anything else (flow style)
/// falls back to the line of each rule's `id:`.
fn rule_lines(text: &str, rules: &[RuleSpec]) -> Vec<Option<usize>> {
    let mut items = Vec::new();
    let mut in_rules = false;
    let mut item_indent = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        if indent == 0 && !is_item {
            in_rules = trimmed.starts_with("rules:");
            item_indent = None;
            continue;
        }
        if in_rules && is_item && *item_indent.get_or_insert(indent) == indent {
            items.push(i + 1);
        }
    }
    if items.len() == rules.len() {
        return items.into_iter().map(Some).collect();
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    rules
        .iter()
        .map(|rule| {
            let id = rule.id.as_deref()?;
            let nth = seen.entry(id).or_default();
            *nth += 1;
            let pattern = format!(r#"(?m)(?:^|[\s{{,-])id:\s*["']?{}["']?\s*(?:[,}}#]|$)"#, regex::escape(id));
            let re = Regex::new(&pattern).ok()?;
            let found = re.find_iter(text).nth(*nth - 1)?;
            Some(text[..found.start()].matches('\n').count() + 1 + usize::from(text[found.start()..].starts_with('\n')))
        })
        .collect()
}

// ---- The PromQL subset ----

/// Checks that `expr` stays inside the PromQL subset the embedded evaluator
/// runs ([`crate::promql`]: the same parser, so the check and the evaluator
/// cannot disagree), and returns the metric names it reads.
pub fn check_expr(expr: &str) -> Result<Vec<String>, String> {
    let parsed = crate::promql::parse(expr).map_err(|e| format!("{} (at character {})", e.message, e.at + 1))?;
    let selectors = parsed.selectors();
    if selectors.is_empty() {
        return Err("the expression is a plain number; it must read at least one metric".to_string());
    }
    let mut metrics: Vec<String> = Vec::new();
    for (selector, _) in selectors {
        if let Some(name) = &selector.name
            && !metrics.contains(name)
        {
            metrics.push(name.clone());
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid file with one rule of each kind, for the error cases to break.
    const VALID: &str = r#"evaluation_interval: 15s
defaults:
  no_data_for: 3m
rules:
  - id: high-p95
    kind: sli
    sli: p95_latency
    summary: P95 latency is high
    owner: backend
    runbook: high-p95
    warning: { above: 0.5, for: 5m, clear_below: 0.4 }
    critical:
      above: 1
      for: 3m
      clear_below: 0.8
      clear_for: 10m
  - id: budget
    kind: burn_rate
    slo: 0.999
    owner: incident-lead
    runbook: budget
  - id: holds-overdue
    kind: promql
    expr: max(booking_holds_overdue)
    summary: Holds are not being released
    owner: backend
    runbook: holds-overdue
    no_data_for: 5m
    critical: { above: 100, for: 5m, clear_below: 10 }
"#;

    fn error(text: &str) -> String {
        parse(text, "rules.yaml").expect_err("the file should be rejected").to_string()
    }

    #[test]
    fn every_rate_is_paired_with_its_short_window_and_resolves_on_it() {
        let set = shipped();
        let rule = set.get("high-error-rate").unwrap();
        let critical = &rule.levels[1];
        let exprs: Vec<&str> = critical.fire.iter().map(|c| c.expr.as_str()).collect();
        assert!(exprs[0].contains("[5m]") && !exprs[0].contains("[1m]"), "{exprs:?}");
        assert_eq!(exprs[1], exprs[0].replace("[5m]", "[1m]"), "the same SLI over the short window");
        assert_eq!((critical.fire[1].op, critical.fire[1].threshold), (Op::Above, 0.01));
        assert!(exprs[2].contains("increase(") && exprs[2].contains("[5m]"), "the traffic guard keeps the long window");
        assert_eq!(critical.clear.len(), 1);
        assert_eq!(
            (critical.clear[0].expr.as_str(), critical.clear[0].threshold),
            (exprs[1], 0.008),
            "resolves on the short window"
        );
        // Gauges have no window to pair; a promql rate does.
        assert_eq!(set.get("db-pool-saturation").unwrap().levels[0].fire.len(), 1);
        let payments = &set.get("payment-failures").unwrap().levels[0];
        assert!(
            payments.fire[1].expr.contains("[1m]")
                && payments.fire[2].expr.contains("increase(booking_payments_total[5m])"),
            "{:?}",
            payments.fire
        );
        // increase() grows with its range: left alone by default, refused when asked for.
        let stall = &set.get("queue-admission-stall").unwrap().levels[0];
        assert_eq!(stall.fire.len(), 1);
        let text = VALID
            .replace("expr: max(booking_holds_overdue)", "expr: sum(increase(x_total[10m]))\n    short_window: 2m");
        assert_eq!(
            error(&text),
            "rules.yaml:22: rule `holds-overdue`: short_window: the expression uses increase(…), whose value grows with its range; write the short window as an `and` condition (critical)"
        );
        let text = VALID.replace("sli: p95_latency", "sli: db_pool_saturation\n    short_window: 1m");
        assert!(
            error(&text).contains("`short_window` does not apply to `db_pool_saturation` (it reads gauges)"),
            "{}",
            error(&text)
        );
        let off = VALID.replace("  no_data_for: 3m", "  no_data_for: 3m\n  short_window: 0s");
        assert_eq!(parse(&off, "rules.yaml").unwrap().rules[0].levels[1].fire.len(), 1, "0s turns it off");
    }

    #[test]
    fn a_valid_file_expands_every_kind() {
        let set = parse(VALID, "rules.yaml").unwrap();
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let ids: Vec<_> = set.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["high-p95", "budget-fast", "budget-slow", "holds-overdue"]);
        let p95 = &set.rules[0];
        assert_eq!((p95.name.as_str(), p95.line, p95.unit), ("HighP95", 5, Unit::Seconds));
        assert_eq!(p95.no_data_for, Duration::from_secs(180));
        let critical = &p95.levels[1];
        assert_eq!(
            (critical.severity, critical.for_, critical.clear_for),
            (Severity::Critical, Duration::from_secs(180), Duration::from_secs(600))
        );
        assert_eq!((critical.fire[0].op, critical.fire[0].threshold), (Op::Above, 1.0));
        assert_eq!((critical.clear[0].op, critical.clear[0].threshold), (Op::Below, 0.8));
        assert_eq!(p95.levels[0].clear_for, DEFAULT_CLEAR_FOR);
        let slow = set.get("budget-slow").unwrap();
        assert_eq!((slow.name.as_str(), slow.line, slow.runbook.as_str()), ("BudgetSlow", 17, "budget"));
        assert_eq!(slow.levels.iter().map(|l| l.severity).collect::<Vec<_>>(), [Severity::Warning, Severity::Critical]);
        assert_eq!(set.get("holds-overdue").unwrap().no_data_for, Duration::from_secs(300));
        assert_eq!(set.owners().into_iter().collect::<Vec<_>>(), ["backend", "incident-lead"]);
    }

    #[test]
    fn clear_threshold_on_the_firing_side_is_rejected_with_file_and_line() {
        let text = VALID.replace("clear_below: 0.4", "clear_below: 0.6");
        assert_eq!(
            error(&text),
            "rules.yaml:5: rule `high-p95`: clear_below 0.6 is not below the fire threshold 0.5 (warning)"
        );
        let text = VALID.replace(
            "expr: max(booking_holds_overdue)",
            "expr: max(booking_holds_overdue)\n    and: [{ expr: max(booking_queue_waiting), below: 3 }]",
        );
        assert!(parse(&text, "rules.yaml").is_ok());
        let below = VALID.replace("above: 100, for: 5m, clear_below: 10", "below: 10, for: 5m, clear_above: 5");
        assert_eq!(
            error(&below),
            "rules.yaml:22: rule `holds-overdue`: clear_above 5 is not above the fire threshold 10 (critical)"
        );
    }

    #[test]
    fn unknown_kind_and_unknown_sli_are_rejected_at_their_line() {
        let text = VALID.replace("kind: promql", "kind: graphite");
        assert!(
            error(&text).starts_with("rules.yaml:23: rules[2].kind: unknown variant `graphite`"),
            "{}",
            error(&text)
        );
        let text = VALID.replace("sli: p95_latency", "sli: p99_latency");
        assert!(
            error(&text).starts_with("rules.yaml:7: rules[0].sli: unknown variant `p99_latency`"),
            "{}",
            error(&text)
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = VALID.replace("    runbook: budget\n", "    runbook: budget\n    treshold: 3\n");
        assert!(error(&text).starts_with("rules.yaml:22: rules[1]: unknown field `treshold`"), "{}", error(&text));
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let text = VALID.replace("id: holds-overdue", "id: high-p95");
        assert_eq!(error(&text), "rules.yaml:22: rule `high-p95`: duplicate id `high-p95` (first at line 5)");
        // An expanded id collides too.
        let text = VALID.replace("id: holds-overdue", "id: budget-fast");
        assert_eq!(error(&text), "rules.yaml:22: rule `budget-fast`: duplicate id `budget-fast` (first at line 17)");
    }

    #[test]
    fn duplicate_alert_names_are_rejected() {
        let text = VALID.replace("runbook: holds-overdue", "runbook: holds-overdue\n    name: HighP95");
        assert_eq!(
            error(&text),
            "rules.yaml:22: rule `holds-overdue`: duplicate name `HighP95` (first at line 5, rule `high-p95`)"
        );
    }

    #[test]
    fn dashboards_are_paths_under_the_base_or_full_urls() {
        let text = VALID.replace("runbook: high-p95", "runbook: high-p95\n    dashboard: d/latency");
        assert!(error(&text).ends_with(
            "dashboard `d/latency` must be a path under dashboard_base_url (like /d/booking-overview) or a URL"
        ));
        let text = VALID.replace("runbook: high-p95", "runbook: high-p95\n    dashboard: /d/latency").replace(
            "runbook: holds-overdue",
            "runbook: holds-overdue\n    dashboard: https://grafana.example.com/d/holds",
        );
        let set = parse(&text, "rules.yaml").unwrap();
        let url = |id| set.dashboard_url(set.get(id).unwrap());
        assert_eq!(url("high-p95"), None, "no Grafana configured: no link that leads nowhere");
        assert_eq!(url("holds-overdue").as_deref(), Some("https://grafana.example.com/d/holds"));
        assert_eq!(url("budget-fast"), None);
        let set = parse(&format!("dashboard_base_url: http://127.0.0.1:3000\n{text}"), "rules.yaml").unwrap();
        assert_eq!(set.dashboard_url(set.get("high-p95").unwrap()).as_deref(), Some("http://127.0.0.1:3000/d/latency"));
    }

    #[test]
    fn runbook_links_default_to_the_checkouts_runbooks_folder() {
        let set = parse(VALID, "rules.yaml").unwrap();
        let link = set.runbook_url(set.get("budget-fast").unwrap());
        assert_eq!(link, format!("{}/budget.md", default_runbook_base()));
        let shipped = shipped();
        let link = shipped.runbook_url(shipped.get("high-error-rate").unwrap());
        assert!(std::path::Path::new(&link).is_file(), "{link} is not a file");
        assert!(
            parse(&format!("runbook_base_url: runbooks\n{VALID}"), "rules.yaml").is_err(),
            "a relative path depends on the cwd"
        );
        assert!(parse(&format!("runbook_base_url: /srv/runbooks\n{VALID}"), "rules.yaml").is_ok());
    }

    #[test]
    fn a_missing_runbook_is_rejected() {
        let text = VALID.replace("    runbook: high-p95\n", "");
        assert_eq!(error(&text), "rules.yaml:5: rule `high-p95`: missing `runbook` (its id: runbooks/<id>.md)");
    }

    #[test]
    fn an_empty_expr_is_rejected() {
        let text = VALID.replace("expr: max(booking_holds_overdue)", "expr: \"  \"");
        assert_eq!(error(&text), "rules.yaml:22: rule `holds-overdue`: `expr` is empty");
    }

    #[test]
    fn a_bad_duration_is_rejected_at_its_own_line() {
        let text = VALID.replace("      for: 3m", "      for: 5x");
        assert_eq!(
            error(&text),
            "rules.yaml:14: rules[0].critical.for: bad duration `5x`: unknown unit `x` (use s, m, h or d)"
        );
        let text = VALID.replace("no_data_for: 3m", "no_data_for: 5");
        assert_eq!(error(&text), "rules.yaml:3: defaults.no_data_for: bad duration `5`: add a unit (s, m, h or d)");
    }

    #[test]
    fn a_threshold_that_is_not_a_number_is_rejected() {
        let text = VALID.replace("above: 1\n", "above: high\n");
        let message = error(&text);
        assert!(
            message.starts_with("rules.yaml:13: rules[0].critical.above: invalid type: string \"high\""),
            "{message}"
        );
    }

    #[test]
    fn yaml_syntax_errors_carry_the_line() {
        let message = error("rules:\n  - id: x\n   kind: sli\n");
        assert!(message.starts_with("rules.yaml:3:"), "{message}");
    }

    #[test]
    fn fields_of_another_kind_are_rejected() {
        let text = VALID.replace("sli: p95_latency", "sli: p95_latency\n    expr: up");
        assert_eq!(error(&text), "rules.yaml:5: rule `high-p95`: `expr` does not apply to kind `sli`");
        let text = VALID.replace("sli: p95_latency", "sli: db_pool_saturation\n    window: 1m");
        assert_eq!(
            error(&text),
            "rules.yaml:5: rule `high-p95`: `window` does not apply to `db_pool_saturation` (it reads gauges)"
        );
    }

    #[test]
    fn expressions_outside_the_subset_are_rejected() {
        for (expr, message) in [
            ("max(booking_holds_overdue) > 3", "comparison `>` is not supported in expr"),
            ("booking_queue_waiting and booking_queue_active", "`and` is not supported in expr"),
            ("abs(booking_queue_waiting)", "function `abs` is not supported"),
            ("booking_queue_admitted_total[5m]", "only goes inside rate() or increase()"),
            ("rate(booking_queue_admitted_total)", "rate() needs a range vector"),
            ("rate(booking_queue_admitted_total[5x])", "bad range `[5x]`"),
            ("rate(booking_queue_admitted_total[5m:1m])", "subquery"),
            ("a / on(x) b", "`on` is not supported"),
            ("sum(a", "expected `)`"),
            ("a{b=~\"(\"}", "regex `(`"),
            ("3", "plain number"),
        ] {
            let err = check_expr(expr).expect_err(expr);
            assert!(err.contains(message), "{expr}: {err}");
        }
    }

    #[test]
    fn expressions_inside_the_subset_pass_and_name_their_metrics() {
        let metrics = check_expr(
            r#"clamp_max(sum by (route) (rate(a{x="1", y!~"2|3"}[1h30m])) / sum without (le) (increase(b[5m])), 1) * -2 + count(c) - histogram_quantile(0.9, sum by (le) (rate(d[1m])))"#,
        )
        .unwrap();
        assert_eq!(metrics, ["a", "b", "c", "d"]);
        assert!(check_expr("sum(up) by (job)").is_ok());
    }

    #[test]
    fn rules_that_can_never_fire_come_back_as_warnings() {
        let text = VALID
            .replace("slo: 0.999", "slo: 0.9")
            .replace("expr: max(booking_holds_overdue)", "expr: max(booking_holds_overdue)\n    unit: ratio");
        let set = parse(&text, "rules.yaml").unwrap();
        assert_eq!(
            set.warnings,
            [
                "rules.yaml:17: rule `budget`: page_fast: burn factor 14.4 × error budget 0.1 = 1.44: the error ratio cannot exceed 100 %, so it can never fire",
                "rules.yaml:22: rule `holds-overdue`: above 100 can never fire: a ratio stays within 0..1 (did you mean 1?) (critical)",
            ]
        );
        let text = VALID.replace("clear_below: 0.4", "clear_below: 0.5");
        let set = parse(&text, "rules.yaml").unwrap();
        assert_eq!(
            set.warnings,
            [
                "rules.yaml:5: rule `high-p95`: clear_below equals the fire threshold 0.5: without hysteresis the alert can flap (warning)"
            ]
        );
    }

    #[test]
    fn burn_rate_rules_use_the_workbook_thresholds_and_a_traffic_guard() {
        let set = parse(VALID, "rules.yaml").unwrap();
        let fast = set.get("budget-fast").unwrap();
        let [page] = fast.levels.as_slice() else { panic!("one level") };
        assert_eq!(page.severity, Severity::Critical);
        assert_eq!(page.fire.iter().map(|c| c.threshold).collect::<Vec<_>>(), [0.0144, 0.0144, 100.0]);
        let slow = set.get("budget-slow").unwrap();
        assert_eq!(slow.levels[0].fire[0].threshold, 0.001);
        assert!(slow.levels[0].fire[0].expr.contains("[3d]") && slow.levels[0].fire[1].expr.contains("[6h]"));
        assert_eq!(slow.levels[1].fire[0].threshold, 0.006);
        assert!(slow.summary.contains("6× over 6h and 30m pages"), "{}", slow.summary);
        assert!(
            fast.summary.contains("99.9 %") && fast.summary.contains("2 % of the 30d budget per 1h"),
            "{}",
            fast.summary
        );
    }

    #[test]
    fn burn_windows_can_be_overridden_and_are_checked() {
        let text = VALID.replace("runbook: budget\n", "runbook: budget\n    page_fast: { short: 2h }\n");
        assert_eq!(
            error(&text),
            "rules.yaml:17: rule `budget`: page_fast: the short window 2h must be above 0s and shorter than the long window 1h"
        );
        let text = VALID.replace("runbook: budget\n", "runbook: budget\n    ticket: { factor: 2, clear_factor: 3 }\n");
        assert_eq!(error(&text), "rules.yaml:17: rule `budget`: ticket: clear_factor 3 is not below the fire factor 2");
        let text = VALID.replace("slo: 0.999", "slo: 99.9");
        assert_eq!(
            error(&text),
            "rules.yaml:17: rule `budget`: slo 99.9 must lie strictly between 0 and 1 (0.995 is 99.5 %)"
        );
    }

    #[test]
    fn flow_style_rules_fall_back_to_the_id_line() {
        let text = "rules: [\n  {id: a, kind: promql, expr: up, summary: s, owner: infra, runbook: a,\n   critical: {below: 1, for: 1m}}]\n";
        assert_eq!(error(text), "rules.yaml:2: rule `a`: missing `clear_above` (where the alert resolves) (critical)");
    }

    #[test]
    fn durations_parse_and_format_like_prometheus() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(259_200)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("3650d"), Ok(crate::promql::MAX_DURATION));
        // Just under i64::MAX milliseconds: any timestamp plus it would overflow.
        for bad in ["", "5", "m", "5x", "-5m", "30m1h", "5m5m", "3650d1s", "106751991167d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for (secs, text) in [(0, "0s"), (90, "1m30s"), (3600, "1h"), (259_200, "3d"), (93_784, "1d2h3m4s")] {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn the_shipped_file_loads_without_warnings() {
        let set = shipped();
        assert!(set.warnings.is_empty(), "{:#?}", set.warnings);
        for id in [
            "high-error-rate",
            "high-p95-latency",
            "db-pool-saturation",
            "redis-memory-high",
            "cpu-high",
            "memory-high",
            "error-budget-burn-fast",
            "error-budget-burn-slow",
            "queue-admission-stall",
            "hold-expiry-backlog",
            "payment-failures",
            "telemetry-pipeline-down",
        ] {
            assert!(set.get(id).is_some(), "{id} is missing");
        }
        let roles = ["incident-lead", "backend", "infra", "dba"];
        assert!(set.owners().iter().all(|o| roles.contains(o)), "{:?}", set.owners());
        for rule in &set.rules {
            assert!(rule.id.starts_with(&rule.runbook), "{}: runbook {}", rule.id, rule.runbook);
            for level in &rule.levels {
                assert!(!level.clear.is_empty(), "{}: no clear condition", rule.id);
            }
        }
    }

    #[test]
    fn the_shipped_rules_read_only_metrics_the_booking_service_exports() {
        let known = [
            "http_server_requests_total",
            "http_server_request_duration_seconds_bucket",
            "db_pool_connections_in_use",
            "db_pool_connections_max",
            "db_replica_lag_seconds",
            "redis_memory_used_bytes",
            "redis_memory_max_bytes",
            "redis_up",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "booking_cpu_limit_cores",
            "booking_memory_limit_bytes",
            "booking_queue_waiting",
            "booking_queue_active",
            "booking_queue_admitted_total",
            "booking_holds_overdue",
            "booking_payments_total",
            "telemetry_dropped_total",
            "up",
        ];
        for rule in &shipped().rules {
            for level in &rule.levels {
                for condition in level.fire.iter().chain(&level.clear) {
                    let metrics = check_expr(&condition.expr).unwrap_or_else(|e| panic!("{}: {e}", rule.id));
                    for metric in metrics {
                        assert!(known.contains(&metric.as_str()), "{}: unknown metric {metric}", rule.id);
                    }
                }
            }
        }
    }
}
