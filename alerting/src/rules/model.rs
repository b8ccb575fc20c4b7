//! What the engine evaluates: rules after loading, validation and expansion
//! (burn-rate rules become plain conditions here). Every expression is
//! PromQL, so the same rule runs against Prometheus, against a direct scrape
//! (the subset in [`crate::promql`]), and exports to Prometheus rule files.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            other => Err(format!("severity must be warning or critical, not {other:?}")),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// value > threshold
    Above,
    /// value < threshold
    Below,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Above => value > threshold,
            Op::Below => value < threshold,
        }
    }

    /// The PromQL comparison operator.
    pub fn promql(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::Below => "<",
        }
    }
}

/// How a rule's value reads to a human (`1.52 %`, `850 ms`, `3.1 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// 0..1, shown as a percentage.
    Ratio,
    Seconds,
    Bytes,
    #[default]
    None,
}

/// `expr op threshold`, evaluated per series of `expr`'s result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    pub expr: String,
    pub op: Op,
    pub threshold: f64,
}

/// One severity of a rule. It fires when every `fire` condition has held
/// for `for_`, and resolves once every `clear` condition has held for
/// `clear_for` (hysteresis: clear thresholds sit on the healthy side of the
/// fire thresholds, so a value hovering at the line cannot flap pages).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    pub severity: Severity,
    pub fire: Vec<Condition>,
    #[serde(with = "secs")]
    pub for_: Duration,
    pub clear: Vec<Condition>,
    #[serde(with = "secs")]
    pub clear_for: Duration,
}

/// A loaded rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Stable id (kebab-case); part of every alert's dedup key.
    pub id: String,
    /// Alert name as Prometheus would show it (`HighErrorRate`).
    pub name: String,
    pub summary: String,
    /// The on-call role that owns this alert (routing for warnings).
    pub owner: String,
    /// Runbook id: `runbooks/<id>.md`.
    pub runbook: String,
    pub dashboard: Option<String>,
    pub unit: Unit,
    /// Warning first, then critical, as present.
    pub levels: Vec<Level>,
    /// How long the first fire expression may return nothing before the
    /// rule is in the no-data state (and alerts at `no_data_severity`).
    #[serde(with = "secs")]
    pub no_data_for: Duration,
    pub no_data_severity: Severity,
    pub labels: BTreeMap<String, String>,
    /// 1-based line of the rule in its file, for messages.
    pub line: usize,
}

impl Rule {
    /// What silences, inhibitions and grouping match an alert of this rule
    /// on: its series labels, then the rule's own labels, then `alertname`,
    /// `rule_id`, `severity` and `owner` (which a series cannot override).
    /// The severities an alert of this rule can page at: its levels', or,
    /// for a rule without levels (the aggregated no-data one), either.
    pub fn severities(&self) -> Vec<Severity> {
        if self.levels.is_empty() {
            return vec![Severity::Warning, Severity::Critical];
        }
        self.levels.iter().map(|l| l.severity).collect()
    }

    pub fn alert_labels(&self, severity: Severity, series: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut labels = series.clone();
        labels.extend(self.labels.clone());
        labels.insert("alertname".into(), self.name.clone());
        labels.insert("rule_id".into(), self.id.clone());
        labels.insert("severity".into(), severity.as_str().into());
        labels.insert("owner".into(), self.owner.clone());
        labels
    }
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// An inhibition, as Alertmanager's `inhibit_rules` mean it: while an alert
/// matching `source` is active, an alert matching `target` whose `equal`
/// labels have the same values is not paged. Matched labels are the alert's
/// own plus `alertname`, `rule_id`, `severity` and the rule's `labels`.
///
/// Two differences from Alertmanager, both so that one outage pages once:
/// a *pending* source inhibits too (so the order in which two alerts of one
/// outage cross their `for` does not decide whether it pages once or twice),
/// and the source counts for `hold` after it was last active (a slow burn
/// rate whose windows are still full of an outage that was paged and fixed
/// does not page it again). The export writes `hold` into the Prometheus
/// rules as `unless max_over_time(ALERTS{source}[hold])`.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<crate::promql::Matcher>,
    pub target: Vec<crate::promql::Matcher>,
    pub equal: Vec<String>,
    pub hold: Duration,
    /// The matchers as written, for the export.
    pub source_text: Vec<String>,
    pub target_text: Vec<String>,
}

/// Two inhibitions are the same when written the same.
impl PartialEq for InhibitRule {
    fn eq(&self, other: &Self) -> bool {
        (&self.source_text, &self.target_text, &self.equal, self.hold)
            == (&other.source_text, &other.target_text, &other.equal, other.hold)
    }
}

impl InhibitRule {
    pub fn is_target(&self, labels: &crate::promql::Labels) -> bool {
        self.target.iter().all(|m| m.matches(labels))
    }

    pub fn is_source(&self, labels: &crate::promql::Labels) -> bool {
        self.source.iter().all(|m| m.matches(labels))
    }

    /// Whether `source` and `target` agree on every `equal` label (absent
    /// on both counts as equal, as in Alertmanager).
    pub fn equal_on(&self, source: &crate::promql::Labels, target: &crate::promql::Labels) -> bool {
        self.equal.iter().all(|l| source.get(l) == target.get(l))
    }
}

/// How warnings are batched into pages, as an Alertmanager route's
/// `group_by`/`group_wait`/`group_interval`. Critical alerts are never
/// grouped or delayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// Labels whose values make a group (`owner`: one page per role).
    pub group_by: Vec<String>,
    /// How long a new group waits for more warnings before its first page.
    pub group_wait: Duration,
    /// How long after a group's page newcomers wait for the next one.
    pub group_interval: Duration,
}

impl Grouping {
    /// The group an alert with these labels belongs to.
    pub fn key(&self, labels: &BTreeMap<String, String>) -> String {
        let parts: Vec<String> =
            self.group_by.iter().map(|l| format!("{l}={:?}", labels.get(l).map_or("", String::as_str))).collect();
        format!("{{{}}}", parts.join(","))
    }
}
