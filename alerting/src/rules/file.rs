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
pub fn runbook_url(base: &str, rule: &Rule) -> String {
    format!("{}/{}.md", base.trim_end_matches('/'), rule.runbook)
}

/// The rule's dashboard: a full URL as given, or a path under `base` (none
/// without a base).
pub fn dashboard_url(base: Option<&str>, rule: &Rule) -> Option<String> {
    let dashboard = rule.dashboard.as_deref()?;
    if is_url(dashboard) {
        return Some(dashboard.to_string());
    }
    Some(format!("{}{dashboard}", base?.trim_end_matches('/')))
}

/// Where runbook links point when neither the rule file nor
/// `RUNBOOK_BASE_URL` says: the `runbooks/` folder of the checkout this
/// binary was built from, so a page's link opens on the laptop that runs it.
pub fn default_runbook_base() -> String {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("runbooks").display().to_string()
}

/// A runbook base is an http(s) URL or an absolute directory.
pub fn check_runbook_base(base: &str) -> Result<(), String> {
    if (is_url(base) || base.starts_with('/')) && !base.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!("runbook base `{base}` is neither an http(s) URL nor an absolute directory"))
    }
}

/// Where in a rule file something is: `rules.yaml:17`, or the file alone
/// when the YAML parser could not tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub origin: String,
    pub line: Option<usize>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.origin),
            None => f.write_str(&self.origin),
        }
    }
}

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
    let file_error = |message: String| RulesError::File { at: At { origin: origin.to_string(), line: None }, message };

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
        let at = At { origin: origin.to_string(), line };
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

fn inhibit_rule(spec: InhibitSpec) -> Result<super::InhibitRule, String> {
    let parse = |side: &str, list: &[String]| -> Result<Vec<crate::promql::Matcher>, String> {
        if list.is_empty() {
            return Err(format!("{side} is empty: it would match every alert"));
        }
        let mut out = Vec::new();
        for text in list {
            let expr = crate::promql::parse(&format!("ALERTS{{{text}}}"))
                .map_err(|e| format!("{side}: `{text}` is not a matcher (label=\"value\", !=, =~ or !~): {e}"))?;
            let crate::promql::Expr::Vector(selector) = expr else {
                return Err(format!("{side}: `{text}` is not a matcher"));
            };
            if selector.matchers.len() != 1 {
                return Err(format!("{side}: `{text}` must be exactly one matcher"));
            }
            out.extend(selector.matchers);
        }
        Ok(out)
    };
    for label in &spec.equal {
        if !is_label_name(label) {
            return Err(format!("equal: `{label}` is not a label name"));
        }
    }
    Ok(super::InhibitRule {
        source: parse("source_matchers", &spec.source_matchers)?,
        target: parse("target_matchers", &spec.target_matchers)?,
        equal: spec.equal,
        hold: spec.hold.map_or(Duration::ZERO, |d| d.0),
        source_text: spec.source_matchers,
        target_text: spec.target_matchers,
    })
}

const DEFAULT_NO_DATA_FOR: Duration = Duration::from_secs(120);
const DEFAULT_CLEAR_FOR: Duration = Duration::from_secs(120);
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_SHORT_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(15);

// ---- The schema, as written in the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    evaluation_interval: Option<Dur>,
    runbook_base_url: Option<String>,
    dashboard_base_url: Option<String>,
    #[serde(default)]
    defaults: DefaultsSpec,
    rules: Vec<RuleSpec>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitSpec>,
    grouping: Option<GroupingSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupingSpec {
    #[serde(default)]
    group_by: Vec<String>,
    group_wait: Option<Dur>,
    group_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InhibitSpec {
    source_matchers: Vec<String>,
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
    hold: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsSpec {
    no_data_for: Option<Dur>,
    no_data_severity: Option<Severity>,
    clear_for: Option<Dur>,
    window: Option<Dur>,
    short_window: Option<Dur>,
    dashboard: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Sli,
    BurnRate,
    Promql,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Sli => "sli",
            Kind::BurnRate => "burn_rate",
            Kind::Promql => "promql",
        }
    }
}

/// One entry of `rules:`. Every kind's fields in one flat struct, so that
/// serde reports type errors with their line (a tagged enum buffers the
/// entry and loses positions); fields that do not fit the kind are rejected
/// in [`build`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: Option<String>,
    kind: Option<Kind>,
    name: Option<String>,
    summary: Option<String>,
    owner: Option<String>,
    runbook: Option<String>,
    dashboard: Option<String>,
    unit: Option<Unit>,
    labels: Option<BTreeMap<String, String>>,
    no_data_for: Option<Dur>,
    no_data_severity: Option<Severity>,
    // sli
    sli: Option<Sli>,
    window: Option<Dur>,
    min_requests: Option<f64>,
    // sli and promql: the window paired with every range of the expression
    short_window: Option<Dur>,
    // promql
    expr: Option<String>,
    and: Option<Vec<ConditionSpec>>,
    // sli and promql
    warning: Option<LevelSpec>,
    critical: Option<LevelSpec>,
    // burn_rate
    slo: Option<f64>,
    slo_period: Option<Dur>,
    page_fast: Option<BurnSpec>,
    page_slow: Option<BurnSpec>,
    ticket: Option<BurnSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelSpec {
    above: Option<f64>,
    below: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<Dur>,
    clear_below: Option<f64>,
    clear_above: Option<f64>,
    clear_for: Option<Dur>,
    /// `promql` only: this level's own expression instead of the rule's.
    expr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionSpec {
    expr: String,
    above: Option<f64>,
    below: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurnSpec {
    long: Option<Dur>,
    short: Option<Dur>,
    factor: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<Dur>,
    clear_factor: Option<f64>,
    clear_window: Option<Dur>,
    clear_for: Option<Dur>,
}

/// A duration as written in the file (`90s`, `5m`, `1h30m`, `3d`); parsed
/// during deserialization so a bad one is reported at its own line.
#[derive(Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 1h30m or 3d")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(|why| E::custom(format!("bad duration `{s}`: {why}")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dur, E> {
                Err(E::custom(format!("bad duration `{n}`: add a unit (s, m, h or d)")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dur, E> {
                Err(E::custom(format!("bad duration `{n}`: add a unit (s, m, h or d)")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

use crate::promql::{format_duration, parse_duration};

// ---- Validation and expansion ----

struct Defaults {
    no_data_for: Duration,
    no_data_severity: Severity,
    clear_for: Duration,
    window: Duration,
    short_window: Duration,
    dashboard: Option<String>,
}

/// Validates one rule entry and expands it into the rules the engine runs.
/// Errors and warnings are plain messages; the caller adds file, line and id.
fn build(spec: RuleSpec, defaults: &Defaults, line: usize, warnings: &mut Vec<String>) -> Result<Vec<Rule>, String> {
    let id = spec.id.clone().ok_or("missing `id`")?;
    check_slug(&id).map_err(|m| format!("id {m}"))?;
    let kind = spec.kind.ok_or("missing `kind` (sli, burn_rate or promql)")?;
    check_fields(&spec, kind)?;

    let owner = spec.owner.clone().ok_or("missing `owner` (the role this alert pages)")?;
    check_slug(&owner).map_err(|m| format!("owner {m}"))?;
    let runbook = spec.runbook.clone().ok_or("missing `runbook` (its id: runbooks/<id>.md)")?;
    check_slug(&runbook).map_err(|m| format!("runbook {m}"))?;
    let dashboard = spec.dashboard.clone().or_else(|| defaults.dashboard.clone());
    if let Some(path) = &dashboard {
        check_dashboard(path)?;
    }
    let labels = spec.labels.clone().unwrap_or_default();
    for name in labels.keys() {
        if !is_label_name(name) {
            return Err(format!("label name `{name}` is not a valid Prometheus label name"));
        }
        if RESERVED_LABELS.contains(&name.as_str()) {
            return Err(format!("label `{name}` is set by the engine and cannot be overridden"));
        }
    }
    let name = match &spec.name {
        Some(name) if name.trim().is_empty() => return Err("`name` is empty".to_string()),
        Some(name) => name.clone(),
        None => camel_case(&id),
    };
    let base = Rule {
        id,
        name,
        summary: String::new(),
        owner,
        runbook,
        dashboard,
        unit: Unit::None,
        levels: Vec::new(),
        no_data_for: spec.no_data_for.map_or(defaults.no_data_for, |d| d.0),
        no_data_severity: spec.no_data_severity.unwrap_or(defaults.no_data_severity),
        labels,
        line,
    };
    match kind {
        Kind::Sli | Kind::Promql => build_threshold(spec, kind, base, defaults, warnings).map(|rule| vec![rule]),
        Kind::BurnRate => build_burn(spec, base, warnings),
    }
}

/// Labels every exported alert carries; a rule's own labels cannot shadow them.
const RESERVED_LABELS: [&str; 5] = ["alertname", "severity", "owner", "rule_id", "no_data"];

/// Rejects fields that belong to another kind: silently ignoring them
/// would hide a mistake (a `window` on a gauge, an `expr` on an SLI).
fn check_fields(spec: &RuleSpec, kind: Kind) -> Result<(), String> {
    let present = [
        ("unit", spec.unit.is_some(), [Kind::Promql].as_slice()),
        ("sli", spec.sli.is_some(), &[Kind::Sli, Kind::BurnRate]),
        ("window", spec.window.is_some(), &[Kind::Sli]),
        ("min_requests", spec.min_requests.is_some(), &[Kind::Sli, Kind::BurnRate]),
        ("short_window", spec.short_window.is_some(), &[Kind::Sli, Kind::Promql]),
        ("expr", spec.expr.is_some(), &[Kind::Promql]),
        ("and", spec.and.is_some(), &[Kind::Sli, Kind::Promql]),
        ("warning", spec.warning.is_some(), &[Kind::Sli, Kind::Promql]),
        ("critical", spec.critical.is_some(), &[Kind::Sli, Kind::Promql]),
        ("slo", spec.slo.is_some(), &[Kind::BurnRate]),
        ("slo_period", spec.slo_period.is_some(), &[Kind::BurnRate]),
        ("page_fast", spec.page_fast.is_some(), &[Kind::BurnRate]),
        ("page_slow", spec.page_slow.is_some(), &[Kind::BurnRate]),
        ("ticket", spec.ticket.is_some(), &[Kind::BurnRate]),
    ];
    for (field, is_present, kinds) in present {
        if is_present && !kinds.contains(&kind) {
            return Err(format!("`{field}` does not apply to kind `{}`", kind.as_str()));
        }
    }
    Ok(())
}

fn build_threshold(
    spec: RuleSpec,
    kind: Kind,
    mut rule: Rule,
    defaults: &Defaults,
    warnings: &mut Vec<String>,
) -> Result<Rule, String> {
    let summary = spec.summary.filter(|s| !s.trim().is_empty()).ok_or("missing `summary`")?;
    let (expr, unit, mut guards) = match kind {
        Kind::Sli => {
            let sli = spec
                .sli
                .ok_or("missing `sli` (error_rate, p95_latency, db_pool_saturation, redis_memory, cpu or memory)")?;
            if spec.window.is_some() && !sli.uses_window() {
                return Err(format!("`window` does not apply to `{}` (it reads gauges)", sli.as_str()));
            }
            if spec.short_window.is_some() && !sli.uses_window() {
                return Err(format!("`short_window` does not apply to `{}` (it reads gauges)", sli.as_str()));
            }
            let window = spec.window.map_or(defaults.window, |d| d.0);
            if window.is_zero() {
                return Err("window must be above 0s".to_string());
            }
            let mut guards = sli.guards();
            if let Some(min) = spec.min_requests {
                if !sli.counts_requests() {
                    return Err(format!(
                        "`min_requests` does not apply to `{}` (not measured over requests)",
                        sli.as_str()
                    ));
                }
                guards.push(min_requests_guard(min, window)?);
            }
            (Some(sli.expr(window)), sli.unit(), guards)
        }
        _ => {
            let expr = match spec.expr {
                Some(expr) if expr.trim().is_empty() => return Err("`expr` is empty".to_string()),
                Some(expr) => Some(expr.trim().to_string()),
                None => None,
            };
            if let Some(expr) = &expr {
                check_expr(expr).map_err(|m| format!("expr: {m}"))?;
            }
            (expr, spec.unit.unwrap_or_default(), Vec::new())
        }
    };
    for (i, condition) in spec.and.unwrap_or_default().into_iter().enumerate() {
        let at = format!("and[{i}]");
        if condition.expr.trim().is_empty() {
            return Err(format!("{at}: `expr` is empty"));
        }
        check_expr(&condition.expr).map_err(|m| format!("{at}: expr: {m}"))?;
        let (op, threshold) = fire_threshold(condition.above, condition.below).map_err(|m| format!("{at}: {m}"))?;
        guards.push(Condition { expr: condition.expr.trim().to_string(), op, threshold });
    }

    let short = spec.short_window.map_or(defaults.short_window, |d| d.0);
    let explicit_short = spec.short_window.is_some();
    let context = Levels {
        expr: expr.as_deref(),
        unit,
        guards: &guards,
        clear_for: defaults.clear_for,
        kind,
        short,
        explicit_short,
    };
    let mut levels = Vec::new();
    for (severity, level) in [(Severity::Warning, spec.warning), (Severity::Critical, spec.critical)] {
        if let Some(level) = level {
            levels.push(context.level(severity, level, warnings)?);
        }
    }
    if levels.is_empty() {
        return Err("no `warning` or `critical` level".to_string());
    }
    rule.summary = summary;
    rule.unit = unit;
    rule.levels = levels;
    Ok(rule)
}

fn min_requests_guard(min: f64, window: Duration) -> Result<Condition, String> {
    if !min.is_finite() || min < 0.0 {
        return Err(format!("min_requests {min} must be a number of requests, 0 or more"));
    }
    Ok(Condition { expr: super::sli::requests(window), op: Op::Above, threshold: min })
}

/// What the levels of one threshold rule share.
struct Levels<'a> {
    expr: Option<&'a str>,
    unit: Unit,
    guards: &'a [Condition],
    clear_for: Duration,
    kind: Kind,
    /// Paired with every longer range of the expression (0: none).
    short: Duration,
    /// Whether the rule asked for `short_window` itself (then it must apply).
    explicit_short: bool,
}

impl Levels<'_> {
    fn level(&self, severity: Severity, spec: LevelSpec, warnings: &mut Vec<String>) -> Result<Level, String> {
        let fail = |m: String| format!("{m} ({severity})");
        let expr = match (spec.expr, self.kind) {
            (Some(_), Kind::Sli) => return Err(fail("`expr` does not apply to a level of an `sli` rule".to_string())),
            (Some(expr), _) if expr.trim().is_empty() => return Err(fail("`expr` is empty".to_string())),
            (Some(expr), _) => {
                check_expr(&expr).map_err(|m| fail(format!("expr: {m}")))?;
                expr.trim().to_string()
            }
            (None, _) => self.expr.ok_or_else(|| fail("missing `expr`".to_string()))?.to_string(),
        };
        let (op, threshold) = fire_threshold(spec.above, spec.below).map_err(fail)?;
        let for_ = spec.for_.ok_or_else(|| fail("missing `for` (how long the condition must hold)".to_string()))?.0;
        let (clear_key, clear, wrong_key, wrong) = match op {
            Op::Above => ("clear_below", spec.clear_below, "clear_above", spec.clear_above),
            Op::Below => ("clear_above", spec.clear_above, "clear_below", spec.clear_below),
        };
        if wrong.is_some() {
            return Err(fail(format!("`{wrong_key}` does not go with `{}`; use `{clear_key}`", op_key(op))));
        }
        let clear = clear.ok_or_else(|| fail(format!("missing `{clear_key}` (where the alert resolves)")))?;
        check_number(clear_key, clear).map_err(fail)?;
        let healthy_side = match op {
            Op::Above => clear <= threshold,
            Op::Below => clear >= threshold,
        };
        if !healthy_side {
            let side = if op == Op::Above { "below" } else { "above" };
            return Err(fail(format!("{clear_key} {clear} is not {side} the fire threshold {threshold}")));
        }
        if clear == threshold {
            warnings.push(fail(format!(
                "{clear_key} equals the fire threshold {threshold}: without hysteresis the alert can flap"
            )));
        }
        if self.unit == Unit::Ratio {
            ratio_warning(op, threshold, warnings, severity);
        }
        // The multi-window pattern of the SRE workbook: pending only while
        // both the window and the short window exceed the threshold, so a
        // fault that ended stops the clock within the short window; and it
        // resolves on the short window, minutes after a fix, not a whole
        // window later.
        let short = match shorten(&expr, self.short) {
            Ok(short) => short,
            Err(why) if self.explicit_short => return Err(fail(format!("short_window: {why}"))),
            Err(_) => None,
        };
        let mut fire = vec![Condition { expr: expr.clone(), op, threshold }];
        if let Some(short) = &short {
            fire.push(Condition { expr: short.clone(), op, threshold });
        }
        fire.extend(self.guards.iter().cloned());
        let clear_op = match op {
            Op::Above => Op::Below,
            Op::Below => Op::Above,
        };
        Ok(Level {
            severity,
            fire,
            for_,
            clear: vec![Condition { expr: short.unwrap_or(expr), op: clear_op, threshold: clear }],
            clear_for: spec.clear_for.map_or(self.clear_for, |d| d.0),
        })
    }
}

/// Functions whose value grows with the range: shortening their range would
/// change what the threshold means.
const RANGE_SCALED: [&str; 5] = ["increase(", "sum_over_time(", "count_over_time(", "changes(", "resets("];

/// `expr` with every range longer than `short` cut to `short`: the same
/// signal over the last `short` only. `Ok(None)` when `short` is 0 (off);
/// an error when no range is longer, or a range feeds a function whose value
/// scales with it (`increase`, ...): a rule that asked for `short_window`
/// hears why, a default one simply has none.
fn shorten(expr: &str, short: Duration) -> Result<Option<String>, String> {
    if short.is_zero() {
        return Ok(None);
    }
    let ranges = regex::Regex::new(r"\[([0-9a-z]+)\]").expect("valid regex");
    let mut changed = false;
    let mut failed = None;
    let out = ranges.replace_all(expr, |c: &regex::Captures<'_>| match crate::promql::parse_duration(&c[1]) {
        Ok(range) if range > short => {
            changed = true;
            format!("[{}]", format_duration(short))
        }
        Ok(_) => c[0].to_string(),
        Err(e) => {
            failed = Some(e);
            c[0].to_string()
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if !changed {
        return Err(format!("no range in the expression is longer than {}", format_duration(short)));
    }
    if let Some(f) = RANGE_SCALED.iter().find(|f| expr.contains(*f)) {
        return Err(format!(
            "the expression uses {}…), whose value grows with its range; write the short window as an `and` condition",
            f
        ));
    }
    Ok(Some(out.into_owned()))
}

fn ratio_warning(op: Op, threshold: f64, warnings: &mut Vec<String>, severity: Severity) {
    let never = match op {
        Op::Above => threshold >= 1.0,
        Op::Below => threshold <= 0.0,
    };
    if never {
        warnings.push(format!(
            "{} {threshold} can never fire: a ratio stays within 0..1 (did you mean {}?) ({severity})",
            op_key(op),
            burn::tidy(threshold / 100.0)
        ));
    }
}

fn op_key(op: Op) -> &'static str {
    match op {
        Op::Above => "above",
        Op::Below => "below",
    }
}

fn fire_threshold(above: Option<f64>, below: Option<f64>) -> Result<(Op, f64), String> {
    let (op, threshold) = match (above, below) {
        (Some(t), None) => (Op::Above, t),
        (None, Some(t)) => (Op::Below, t),
        (None, None) => return Err("needs `above` or `below`".to_string()),
        (Some(_), Some(_)) => return Err("has both `above` and `below`; use two rules".to_string()),
    };
    check_number(op_key(op), threshold)?;
    Ok((op, threshold))
}

fn check_number(key: &str, value: f64) -> Result<(), String> {
    if value.is_finite() { Ok(()) } else { Err(format!("{key} {value} is not a finite number")) }
}

fn build_burn(spec: RuleSpec, base: Rule, warnings: &mut Vec<String>) -> Result<Vec<Rule>, String> {
    let sli = spec.sli.unwrap_or(Sli::ErrorRate);
    if !sli.is_event_ratio() {
        return Err(format!("a burn rate needs an error-ratio SLI (error_rate), not `{}`", sli.as_str()));
    }
    let slo = spec.slo.ok_or("missing `slo` (the availability target, e.g. 0.995)")?;
    if !(slo > 0.0 && slo < 1.0) {
        return Err(format!("slo {slo} must lie strictly between 0 and 1 (0.995 is 99.5 %)"));
    }
    let period = spec.slo_period.map_or(burn::DEFAULT_PERIOD, |d| d.0);
    if period.is_zero() {
        return Err("slo_period must be above 0s".to_string());
    }
    let min_requests = spec.min_requests.unwrap_or(burn::DEFAULT_MIN_REQUESTS);
    if !min_requests.is_finite() || min_requests < 0.0 {
        return Err(format!("min_requests {min_requests} must be a number of requests, 0 or more"));
    }
    let fast = burn_window("page_fast", spec.page_fast, burn::PAGE_FAST, slo, warnings)?;
    let slow = burn_window("page_slow", spec.page_slow, burn::PAGE_SLOW, slo, warnings)?;
    let ticket = burn_window("ticket", spec.ticket, burn::TICKET, slo, warnings)?;

    let target = percent(slo);
    let about = spec.summary.unwrap_or_else(|| format!("Error budget of the {target} availability SLO"));
    let spent = |w: &BurnWindow| percent(burn::budget_spent(w.factor, w.long, period));
    let fast_rule = Rule {
        id: format!("{}-fast", base.id),
        name: format!("{}Fast", base.name),
        summary: format!(
            "{about} is burning fast: {}× the sustainable rate over {} and {} ({} of the {} budget per {})",
            fast.factor,
            format_duration(fast.long),
            format_duration(fast.short),
            spent(&fast),
            format_duration(period),
            format_duration(fast.long),
        ),
        unit: Unit::Ratio,
        levels: vec![burn::level(Severity::Critical, &fast, slo, min_requests)],
        ..base.clone()
    };
    // The ticket sits in the slow rule: the same rule_id lets Alertmanager
    // inhibit it while the slow page fires, and the slow page is where a
    // budget that keeps burning escalates to.
    let slow_rule = Rule {
        id: format!("{}-slow", base.id),
        name: format!("{}Slow", base.name),
        summary: format!(
            "{about} is burning steadily: {}× over {} and {} pages, {}× over {} and {} opens a ticket",
            slow.factor,
            format_duration(slow.long),
            format_duration(slow.short),
            ticket.factor,
            format_duration(ticket.long),
            format_duration(ticket.short),
        ),
        unit: Unit::Ratio,
        levels: vec![
            burn::level(Severity::Warning, &ticket, slo, min_requests),
            burn::level(Severity::Critical, &slow, slo, min_requests),
        ],
        ..base
    };
    Ok(vec![fast_rule, slow_rule])
}

fn burn_window(
    key: &str,
    spec: Option<BurnSpec>,
    default: BurnWindow,
    slo: f64,
    warnings: &mut Vec<String>,
) -> Result<BurnWindow, String> {
    let window = match spec {
        None => default,
        Some(spec) => BurnWindow {
            long: spec.long.map_or(default.long, |d| d.0),
            short: spec.short.map_or(default.short, |d| d.0),
            factor: spec.factor.unwrap_or(default.factor),
            for_: spec.for_.map_or(default.for_, |d| d.0),
            clear_factor: spec.clear_factor.unwrap_or(default.clear_factor),
            clear_window: spec.clear_window.map_or(default.clear_window, |d| d.0),
            clear_for: spec.clear_for.map_or(default.clear_for, |d| d.0),
        },
    };
    if window.clear_window.is_zero() || window.clear_window > window.long {
        return Err(format!(
            "{key}: clear_window {} must be above 0s and no longer than the long window {}",
            format_duration(window.clear_window),
            format_duration(window.long)
        ));
    }
    if window.short.is_zero() || window.short >= window.long {
        return Err(format!(
            "{key}: the short window {} must be above 0s and shorter than the long window {}",
            format_duration(window.short),
            format_duration(window.long)
        ));
    }
    if !(window.factor.is_finite() && window.factor > 0.0) {
        return Err(format!("{key}: factor {} must be above 0", window.factor));
    }
    if !(window.clear_factor.is_finite() && window.clear_factor >= 0.0) {
        return Err(format!("{key}: clear_factor {} must be 0 or more", window.clear_factor));
    }
    if window.clear_factor > window.factor {
        return Err(format!(
            "{key}: clear_factor {} is not below the fire factor {}",
            window.clear_factor, window.factor
        ));
    }
    if window.clear_factor == window.factor {
        warnings.push(format!(
            "{key}: clear_factor equals the fire factor {}: without hysteresis the alert can flap",
            window.factor
        ));
    }
    let threshold = burn::ratio_threshold(window.factor, slo);
    if threshold >= 1.0 {
        warnings.push(format!(
            "{key}: burn factor {} × error budget {} = {threshold}: the error ratio cannot exceed 100 %, so it can never fire",
            window.factor,
            burn::error_budget(slo)
        ));
    }
    Ok(window)
}

/// `0.995` → `99.5 %`.
fn percent(ratio: f64) -> String {
    format!("{} %", burn::tidy(ratio * 100.0))
}

/// Ids, owners and runbooks: lowercase kebab-case, so they are safe as file
/// names, label values and URL path segments.
fn check_slug(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok { Ok(()) } else { Err(format!("`{value}` is not lowercase kebab-case (like `high-error-rate`)")) }
}

/// A path under `dashboard_base_url` (`/d/booking-overview`), or a full URL
/// for a dashboard that lives elsewhere.
fn check_dashboard(dashboard: &str) -> Result<(), String> {
    if (dashboard.starts_with('/') || is_url(dashboard)) && !dashboard.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "dashboard `{dashboard}` must be a path under dashboard_base_url (like /d/booking-overview) or a URL"
        ))
    }
}

fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

fn is_label_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// `high-error-rate` → `HighErrorRate`.
fn camel_case(id: &str) -> String {
    id.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// A serde_norway error as `file:line: message`.
fn yaml_error(error: &serde_norway::Error, origin: &str) -> RulesError {
    let text = error.to_string();
    let (line, message) = match error.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            let message = text.strip_suffix(&suffix).map(str::to_string).unwrap_or(text);
            (Some(location.line()), message)
        }
        None => (None, text),
    };
    RulesError::File { at: At { origin: origin.to_string(), line }, message }
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
