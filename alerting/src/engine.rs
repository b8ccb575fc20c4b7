//! The alert state machine: inactive → pending → firing → resolved, per
//! rule and series, plus one "no data" alert for rules whose expressions
//! return nothing (a dead exporter must not look healthy).
//!
//! It is a pure function of the rules, the expression results and the
//! evaluation time, so every transition is tested without clocks or I/O.
//!
//! One alert per rule and label set, whatever its severity: a warning that
//! worsens to critical is upgraded in place (and pages the critical plan),
//! never a second incident. Firing alerts resolve only when their clear
//! conditions have held for `clear_for` (hysteresis); an alert whose series
//! vanished stays firing rather than looking resolved.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{
    promql::{Labels, Sample},
    rules::{Condition, InhibitRule, Op, Rule, Severity},
    source::Results,
};

/// The id of the synthetic alert that collects rules without data.
pub const NO_DATA: &str = "no-data";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AlertKey {
    pub rule_id: String,
    pub labels: Labels,
}

impl AlertKey {
    /// Stable text form, the dedup key of incidents and pages.
    pub fn fingerprint(&self) -> String {
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{}{{{}}}", self.rule_id, labels.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Transition {
    Fired {
        key: AlertKey,
        severity: Severity,
        value: f64,
        threshold: f64,
        op: Op,
        since_ms: i64,
        detail: String,
    },
    /// A firing warning became critical.
    Upgraded {
        key: AlertKey,
        severity: Severity,
        value: f64,
        threshold: f64,
        op: Op,
        detail: String,
    },
    Resolved {
        key: AlertKey,
        value: f64,
    },
    /// A firing alert is muted by an inhibition: not paged (or not upgraded)
    /// while `by` (a fingerprint) is active or within the rule's hold.
    Inhibited {
        key: AlertKey,
        severity: Severity,
        by: String,
    },
}

/// Ordered by urgency: a rule's phase is its most urgent alert's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    Pending,
    Firing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AlertState {
    /// Per level: since when its fire conditions have held.
    pending_since: Vec<Option<i64>>,
    firing: Option<(Severity, i64)>,
    clear_since: Option<i64>,
    /// The inhibiting alert's fingerprint while this one is muted.
    #[serde(default)]
    muted_by: Option<String>,
    /// The severity the service was last told of (`None`: never paged).
    #[serde(default)]
    notified: Option<Severity>,
    /// NaN (a quiet service's ratio) is saved as null.
    #[serde(serialize_with = "nan_as_null", deserialize_with = "null_as_nan")]
    value: f64,
}

fn nan_as_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() { s.serialize_some(v) } else { s.serialize_none() }
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The engine's memory, as the group's evaluator saves it with each lease
/// renewal and the next evaluator takes it over.
#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    alerts: Vec<(String, Vec<(Labels, AlertState)>)>,
    no_data_since: Vec<(String, i64)>,
    no_data_firing: Option<(Severity, i64)>,
    #[serde(default)]
    last_active: Vec<(String, Labels, i64, bool)>,
}

/// What `GET /v1/alerts` and the metrics show.
#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    pub key: AlertKey,
    pub fingerprint: String,
    pub phase: Phase,
    pub severity: Option<Severity>,
    pub value: f64,
    pub since_ms: Option<i64>,
    /// The fingerprint of the alert inhibiting this one (then it is not paged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inhibited_by: Option<String>,
}

pub struct Engine {
    rules: Vec<Rule>,
    /// Per rule, per label set: only series pending or firing.
    alerts: BTreeMap<String, HashMap<Labels, AlertState>>,
    /// Per rule id: since when its primary expression has returned nothing.
    no_data_since: HashMap<String, i64>,
    no_data_firing: Option<(Severity, i64)>,
    inhibitions: Vec<InhibitRule>,
    /// Per fingerprint: the labels inhibitions match on, when the alert was
    /// last pending or firing (kept for the longest hold), and whether it
    /// was paged then (an inhibitor with an incident is named first).
    last_active: HashMap<String, (Labels, i64, bool)>,
}

impl Engine {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            alerts: BTreeMap::new(),
            no_data_since: HashMap::new(),
            no_data_firing: None,
            inhibitions: Vec::new(),
            last_active: HashMap::new(),
        }
    }

    /// The same engine, muting alerts by `inhibitions`.
    pub fn with_inhibitions(mut self, inhibitions: Vec<InhibitRule>) -> Self {
        self.inhibitions = inhibitions;
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every pending timer, firing alert and clear clock, as JSON: what a
    /// process taking over evaluation needs to carry on without restarting
    /// or skipping a `for` or `clear_for`. An error (never an empty text)
    /// when it cannot be encoded.
    pub fn snapshot(&self) -> Result<String, serde_json::Error> {
        let snapshot = Snapshot {
            alerts: self
                .alerts
                .iter()
                .map(|(id, states)| (id.clone(), states.iter().map(|(l, s)| (l.clone(), s.clone())).collect()))
                .collect(),
            no_data_since: self.no_data_since.iter().map(|(id, t)| (id.clone(), *t)).collect(),
            no_data_firing: self.no_data_firing,
            last_active: self.last_active.iter().map(|(f, (l, t, p))| (f.clone(), l.clone(), *t, *p)).collect(),
        };
        serde_json::to_string(&snapshot)
    }

    /// Replaces the engine's memory with a [`Engine::snapshot`]. Rules this
    /// process does not have are left out (the group should run one rule
    /// file). `false`, and nothing changed, when the text is not a snapshot.
    pub fn restore(&mut self, json: &str) -> bool {
        let Ok(snapshot) = serde_json::from_str::<Snapshot>(json) else { return false };
        let levels: HashMap<&str, usize> = self.rules.iter().map(|r| (r.id.as_str(), r.levels.len())).collect();
        self.alerts = snapshot
            .alerts
            .into_iter()
            .filter_map(|(id, states)| {
                let n = *levels.get(id.as_str())?;
                let states = states
                    .into_iter()
                    .map(|(labels, mut s)| {
                        s.pending_since.resize(n, None);
                        (labels, s)
                    })
                    .collect();
                Some((id, states))
            })
            .collect();
        self.no_data_since =
            snapshot.no_data_since.into_iter().filter(|(id, _)| levels.contains_key(id.as_str())).collect();
        self.no_data_firing = snapshot.no_data_firing;
        self.last_active = snapshot.last_active.into_iter().map(|(f, l, t, p)| (f, (l, t, p))).collect();
        true
    }

    /// Takes up the alerts the incident store holds open that this memory
    /// does not hold firing: `(key, severity, since_ms)` per open incident.
    ///
    /// The saved state and the incidents are written apart. An evaluator
    /// that opened (and maybe paged) an incident, then lost the lease or its
    /// database before saving its state, hands on a memory from before the
    /// fire. Held as firing and already paged, such an alert resolves when
    /// its clear conditions hold, and is not paged again while it fires; left
    /// out, its incident would stay open with nothing left to close it.
    /// Returns the fingerprints it took up.
    pub fn adopt(&mut self, open: impl IntoIterator<Item = (AlertKey, Severity, i64)>) -> Vec<String> {
        let mut adopted = Vec::new();
        for (key, severity, since) in open {
            if key.rule_id == NO_DATA {
                if self.no_data_firing.is_none() {
                    self.no_data_firing = Some((severity, since));
                    adopted.push(key.fingerprint());
                }
                continue;
            }
            let Some(levels) = self.rule(&key.rule_id).map(|r| r.levels.len()) else { continue };
            let fingerprint = key.fingerprint();
            let state = self.alerts.entry(key.rule_id).or_default().entry(key.labels).or_default();
            if state.firing.is_some() {
                continue;
            }
            state.pending_since.resize(levels, None);
            state.firing = Some((severity, since));
            state.clear_since = None;
            state.notified = Some(severity);
            adopted.push(fingerprint);
        }
        adopted
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// Every distinct expression the rules need, for one query each.
    pub fn expressions(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| r.levels.iter())
            .flat_map(|l| l.fire.iter().chain(&l.clear))
            .map(|c| c.expr.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether a rule's first expression has been returning nothing.
    pub fn without_data(&self, rule_id: &str) -> bool {
        self.no_data_since.contains_key(rule_id)
    }

    /// Whether the alert with this fingerprint is pending or firing. Its
    /// incident is not closed by hand while it is: the engine resolves it
    /// once its clear conditions hold.
    pub fn is_active(&self, fingerprint: &str) -> bool {
        self.statuses().iter().any(|s| s.fingerprint == fingerprint && s.phase != Phase::Inactive)
    }

    pub fn statuses(&self) -> Vec<AlertStatus> {
        let mut out: Vec<AlertStatus> = self
            .alerts
            .iter()
            .flat_map(|(rule_id, states)| {
                states.iter().map(move |(labels, s)| (AlertKey { rule_id: rule_id.clone(), labels: labels.clone() }, s))
            })
            .map(|(key, s)| {
                let pending = s.pending_since.iter().flatten().min().copied();
                let phase = if s.firing.is_some() {
                    Phase::Firing
                } else if pending.is_some() {
                    Phase::Pending
                } else {
                    Phase::Inactive
                };
                AlertStatus {
                    key: key.clone(),
                    fingerprint: key.fingerprint(),
                    phase,
                    severity: s.firing.map(|f| f.0),
                    value: s.value,
                    since_ms: s.firing.map(|f| f.1).or(pending),
                    inhibited_by: s.muted_by.clone(),
                }
            })
            .collect();
        if let Some((severity, since)) = self.no_data_firing {
            let key = AlertKey { rule_id: NO_DATA.into(), labels: Labels::new() };
            out.push(AlertStatus {
                fingerprint: key.fingerprint(),
                key,
                phase: Phase::Firing,
                severity: Some(severity),
                value: self.no_data_since.len() as f64,
                since_ms: Some(since),
                inhibited_by: None,
            });
        }
        out
    }

    /// One evaluation at `now_ms`. A missing or failed expression counts as
    /// "no data" for the rules that use it.
    pub fn evaluate(&mut self, results: &Results, now_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        let empty: Vec<Sample> = Vec::new();
        let get = |expr: &str| -> &Vec<Sample> { results.get(expr).and_then(|r| r.as_ref().ok()).unwrap_or(&empty) };
        // Each result indexed by label set once, so matching a rule's
        // conditions is a hash lookup per series, not a scan.
        let index: HashMap<&str, Indexed> = results
            .iter()
            .filter_map(|(expr, r)| r.as_ref().ok().map(|samples| (expr.as_str(), Indexed::new(samples))))
            .collect();
        let none = Indexed::default();
        let at = |expr: &str| -> &Indexed { index.get(expr).unwrap_or(&none) };
        for rule in &self.rules {
            let Some(first) = rule.levels.first().and_then(|l| l.fire.first()) else { continue };
            // The series this rule speaks about: the union over its levels.
            let mut seen: HashSet<&Labels> = HashSet::new();
            let keys: Vec<&Labels> = rule
                .levels
                .iter()
                .filter_map(|l| l.fire.first())
                .flat_map(|c| get(&c.expr).iter().map(|s| &s.labels))
                .filter(|l| seen.insert(*l))
                .collect();
            if get(&first.expr).is_empty() {
                self.no_data_since.entry(rule.id.clone()).or_insert(now_ms);
            } else {
                self.no_data_since.remove(&rule.id);
            }
            let states = self.alerts.entry(rule.id.clone()).or_default();
            for labels in keys {
                // Quiet series cost a lookup, never an allocation.
                if !states.contains_key(labels) && !rule.levels.iter().any(|l| all_hold(&l.fire, labels, &at)) {
                    continue;
                }
                let key = AlertKey { rule_id: rule.id.clone(), labels: labels.clone() };
                let state = states.entry(labels.clone()).or_default();
                state.pending_since.resize(rule.levels.len(), None);
                let mut eligible: Option<(usize, f64)> = None;
                for (i, level) in rule.levels.iter().enumerate() {
                    let held = all_hold(&level.fire, &key.labels, &at);
                    state.pending_since[i] = match (held, state.pending_since[i]) {
                        (true, Some(since)) => Some(since),
                        (true, None) => Some(now_ms),
                        (false, _) => None,
                    };
                    if let Some(since) = state.pending_since[i]
                        && now_ms - since >= level.for_.as_millis() as i64
                    {
                        let value = at(&level.fire[0].expr).lookup(&key.labels).unwrap_or(f64::NAN);
                        eligible = Some((i, value));
                    }
                }
                if let Some(v) = at(&first.expr).lookup(&key.labels) {
                    state.value = v;
                }
                match (state.firing, eligible) {
                    (None, Some((i, value))) => {
                        let level = &rule.levels[i];
                        state.firing = Some((level.severity, now_ms));
                        state.clear_since = None;
                        out.push(Transition::Fired {
                            key: key.clone(),
                            severity: level.severity,
                            value,
                            threshold: level.fire[0].threshold,
                            op: level.fire[0].op,
                            since_ms: state.pending_since[i].unwrap_or(now_ms),
                            detail: rule.summary.clone(),
                        });
                    }
                    (Some((current, since)), Some((i, value))) if rule.levels[i].severity > current => {
                        let level = &rule.levels[i];
                        state.firing = Some((level.severity, since));
                        state.clear_since = None;
                        out.push(Transition::Upgraded {
                            key: key.clone(),
                            severity: level.severity,
                            value,
                            threshold: level.fire[0].threshold,
                            op: level.fire[0].op,
                            detail: rule.summary.clone(),
                        });
                    }
                    (Some(_), _) => {
                        // The lowest level's clear conditions are the last
                        // to hold on the way down.
                        let lowest = &rule.levels[0];
                        let clear = if lowest.clear.is_empty() {
                            !all_hold(&lowest.fire, &key.labels, &at)
                        } else {
                            all_clear(&lowest.clear, &key.labels, &at)
                        };
                        let any_fire = state.pending_since.iter().any(Option::is_some);
                        if clear && !any_fire {
                            let since = *state.clear_since.get_or_insert(now_ms);
                            if now_ms - since >= lowest.clear_for.as_millis() as i64 {
                                state.firing = None;
                                state.clear_since = None;
                                // The value it resolved at is the clear
                                // condition's (the short window), not the
                                // long window still full of the fault.
                                let value = lowest
                                    .clear
                                    .first()
                                    .and_then(|c| at(&c.expr).lookup(&key.labels))
                                    .unwrap_or(state.value);
                                out.push(Transition::Resolved { key: key.clone(), value });
                            }
                        } else {
                            state.clear_since = None;
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        out.extend(self.no_data_transition(now_ms));
        self.inhibit(&mut out, now_ms);
        // Forget quiet series so label churn cannot grow the map forever.
        for states in self.alerts.values_mut() {
            states.retain(|_, s| s.firing.is_some() || s.pending_since.iter().any(Option::is_some));
        }
        out
    }

    /// Applies the inhibitions to this evaluation's transitions: a firing
    /// alert whose inhibitor is active (or within its hold) is muted (its
    /// `Fired` or `Upgraded` held back); once it is not, the service hears
    /// what it missed (a `Fired`, or an `Upgraded` to the severity it
    /// reached); an alert that was never paged resolves silently.
    fn inhibit(&mut self, out: &mut Vec<Transition>, now_ms: i64) {
        if self.inhibitions.is_empty() {
            return;
        }
        let Engine { rules, alerts, no_data_firing, inhibitions, last_active, .. } = self;
        for rule in rules.iter() {
            let Some(states) = alerts.get(&rule.id) else { continue };
            for (labels, s) in states {
                let pending = rule
                    .levels
                    .iter()
                    .zip(&s.pending_since)
                    .filter(|(_, p)| p.is_some())
                    .map(|(l, _)| l.severity)
                    .max();
                let Some(severity) = s.firing.map(|f| f.0).max(pending) else { continue };
                let matched = rule.alert_labels(severity, labels);
                let key = AlertKey { rule_id: rule.id.clone(), labels: labels.clone() };
                let paged = s.notified.is_some() && s.muted_by.is_none();
                last_active.insert(key.fingerprint(), (matched, now_ms, paged));
            }
        }
        if let Some((severity, _)) = *no_data_firing {
            let key = AlertKey { rule_id: NO_DATA.into(), labels: Labels::new() };
            let matched: Labels =
                [("alertname", "NoData"), ("rule_id", NO_DATA), ("severity", severity.as_str()), ("no_data", "true")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
            last_active.insert(key.fingerprint(), (matched, now_ms, true));
        }
        let longest = inhibitions.iter().map(|r| r.hold.as_millis() as i64).max().unwrap_or(0);
        last_active.retain(|_, (_, at, _)| now_ms - *at <= longest);

        let mut late = Vec::new();
        for rule in rules.iter() {
            let Some(states) = alerts.get_mut(&rule.id) else { continue };
            for (labels, s) in states.iter_mut() {
                let key = AlertKey { rule_id: rule.id.clone(), labels: labels.clone() };
                let ours = |t: &Transition| match t {
                    Transition::Fired { key: k, .. }
                    | Transition::Upgraded { key: k, .. }
                    | Transition::Resolved { key: k, .. } => k == &key,
                    Transition::Inhibited { .. } => false,
                };
                let Some((severity, since)) = s.firing else {
                    // Resolved now: silently, if it was never paged.
                    if s.notified.is_none() {
                        out.retain(|t| !ours(t));
                    }
                    s.notified = None;
                    s.muted_by = None;
                    continue;
                };
                let fingerprint = key.fingerprint();
                let matched = rule.alert_labels(severity, labels);
                let by = inhibitions.iter().filter(|r| r.is_target(&matched)).find_map(|r| {
                    let hold = r.hold.as_millis() as i64;
                    last_active
                        .iter()
                        .filter(|(f, (source, at, _))| {
                            **f != fingerprint
                                && now_ms - *at <= hold
                                && r.is_source(source)
                                && r.equal_on(source, &matched)
                        })
                        .min_by_key(|(f, (_, _, paged))| (!*paged, (*f).clone()))
                        .map(|(f, _)| f.clone())
                });
                if let Some(by) = by {
                    // Said once, and only when it holds a page back (an
                    // alert paged already stays paged).
                    let held_back = s.notified.is_none() || out.iter().any(&ours);
                    out.retain(|t| !ours(t));
                    if held_back && s.muted_by.as_ref() != Some(&by) {
                        late.push(Transition::Inhibited { key: key.clone(), severity, by: by.clone() });
                    }
                    s.muted_by = Some(by);
                    continue;
                }
                s.muted_by = None;
                let announced = out.iter().any(&ours);
                let level = rule.levels.iter().position(|l| l.severity == severity).unwrap_or(0);
                let (threshold, op) = rule
                    .levels
                    .get(level)
                    .and_then(|l| l.fire.first())
                    .map_or((f64::NAN, Op::Above), |c| (c.threshold, c.op));
                match s.notified {
                    None if !announced => late.push(Transition::Fired {
                        key,
                        severity,
                        value: s.value,
                        threshold,
                        op,
                        since_ms: s.pending_since.get(level).copied().flatten().unwrap_or(since),
                        detail: rule.summary.clone(),
                    }),
                    Some(told) if told < severity && !announced => late.push(Transition::Upgraded {
                        key,
                        severity,
                        value: s.value,
                        threshold,
                        op,
                        detail: rule.summary.clone(),
                    }),
                    _ => {}
                }
                s.notified = Some(severity);
            }
        }
        out.extend(late);
    }

    fn no_data_transition(&mut self, now_ms: i64) -> Option<Transition> {
        let overdue: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| {
                self.no_data_since.get(&r.id).is_some_and(|since| now_ms - since >= r.no_data_for.as_millis() as i64)
            })
            .collect();
        let key = AlertKey { rule_id: NO_DATA.into(), labels: Labels::new() };
        match (self.no_data_firing, overdue.iter().map(|r| r.no_data_severity).max()) {
            (None, Some(severity)) => {
                let since =
                    overdue.iter().filter_map(|r| self.no_data_since.get(&r.id)).min().copied().unwrap_or(now_ms);
                self.no_data_firing = Some((severity, since));
                let ids: Vec<&str> = overdue.iter().map(|r| r.id.as_str()).collect();
                Some(Transition::Fired {
                    key,
                    severity,
                    value: overdue.len() as f64,
                    threshold: 0.0,
                    op: Op::Above,
                    since_ms: since,
                    detail: format!("No data for {} rule(s): {}", ids.len(), ids.join(", ")),
                })
            }
            (Some((current, since)), Some(severity)) if severity > current => {
                self.no_data_firing = Some((severity, since));
                Some(Transition::Upgraded {
                    key,
                    severity,
                    value: overdue.len() as f64,
                    threshold: 0.0,
                    op: Op::Above,
                    detail: format!("No data for {} rule(s)", overdue.len()),
                })
            }
            (Some(_), None) if self.no_data_since.is_empty() => {
                self.no_data_firing = None;
                Some(Transition::Resolved { key, value: 0.0 })
            }
            _ => None,
        }
    }
}

/// One expression's result, indexed by label set.
#[derive(Default)]
struct Indexed<'a> {
    /// A single unlabelled result (an aggregate such as a traffic guard)
    /// applies to every series.
    only: Option<f64>,
    by_labels: HashMap<&'a Labels, f64>,
}

impl<'a> Indexed<'a> {
    fn new(samples: &'a [Sample]) -> Self {
        if let [only] = samples
            && only.labels.is_empty()
        {
            return Self { only: Some(only.value), by_labels: HashMap::new() };
        }
        Self { only: None, by_labels: samples.iter().map(|s| (&s.labels, s.value)).collect() }
    }

    /// The value of the series with exactly these labels.
    fn lookup(&self, labels: &Labels) -> Option<f64> {
        self.only.or_else(|| self.by_labels.get(labels).copied())
    }
}

/// Whether every clear condition holds. A NaN counts as clear (a ratio over
/// a quiet minute: no requests, so none failing), while a missing series
/// does not (a vanished alert stays firing rather than looking resolved).
fn all_clear<'a>(conditions: &[Condition], labels: &Labels, at: &impl Fn(&str) -> &'a Indexed<'a>) -> bool {
    !conditions.is_empty()
        && conditions
            .iter()
            .all(|c| at(&c.expr).lookup(labels).is_some_and(|v| v.is_nan() || c.op.holds(v, c.threshold)))
}

fn all_hold<'a>(conditions: &[Condition], labels: &Labels, at: &impl Fn(&str) -> &'a Indexed<'a>) -> bool {
    !conditions.is_empty()
        && conditions
            .iter()
            .all(|c| at(&c.expr).lookup(labels).is_some_and(|v| !v.is_nan() && c.op.holds(v, c.threshold)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rules::{Level, Unit};

    const E: &str = "error_ratio";

    fn cond(op: Op, threshold: f64) -> Condition {
        Condition { expr: E.into(), op, threshold }
    }

    fn rule() -> Rule {
        Rule {
            id: "high-error-rate".into(),
            name: "HighErrorRate".into(),
            summary: "errors".into(),
            owner: "backend".into(),
            runbook: "high-error-rate".into(),
            dashboard: None,
            unit: Unit::Ratio,
            levels: vec![
                Level {
                    severity: Severity::Warning,
                    fire: vec![cond(Op::Above, 0.005)],
                    for_: Duration::from_secs(60),
                    clear: vec![cond(Op::Below, 0.004)],
                    clear_for: Duration::from_secs(120),
                },
                Level {
                    severity: Severity::Critical,
                    fire: vec![cond(Op::Above, 0.01)],
                    for_: Duration::from_secs(120),
                    clear: vec![cond(Op::Below, 0.008)],
                    clear_for: Duration::from_secs(120),
                },
            ],
            no_data_for: Duration::from_secs(120),
            no_data_severity: Severity::Warning,
            labels: Default::default(),
            line: 1,
        }
    }

    fn at(value: Option<f64>) -> Results {
        let mut r = Results::new();
        r.insert(E.into(), Ok(value.into_iter().map(|v| Sample { labels: Labels::new(), value: v }).collect()));
        r
    }

    /// Runs the engine over (second, value) steps, every 5 s between them.
    fn run(engine: &mut Engine, steps: &[(i64, Option<f64>)]) -> Vec<(i64, Transition)> {
        let mut out = Vec::new();
        for w in
            steps.windows(2).chain(std::iter::once(&[steps[steps.len() - 1], (steps[steps.len() - 1].0 + 5, None)][..]))
        {
            let (from, value) = w[0];
            let mut t = from;
            while t < w[1].0 {
                out.extend(engine.evaluate(&at(value), t * 1000).into_iter().map(|x| (t, x)));
                t += 5;
            }
        }
        out
    }

    #[test]
    fn an_alert_fires_after_its_for_and_upgrades_to_critical_on_the_same_key() {
        let mut e = Engine::new(vec![rule()]);
        let t = run(&mut e, &[(0, Some(0.02)), (300, Some(0.02))]);
        assert!(matches!(&t[0], (60, Transition::Fired { severity: Severity::Warning, since_ms: 0, .. })), "{t:?}");
        assert!(matches!(&t[1], (120, Transition::Upgraded { severity: Severity::Critical, .. })), "{t:?}");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_flapping_signal_does_not_repage() {
        let mut e = Engine::new(vec![rule()]);
        // Fires, then hovers between the clear and fire thresholds, dipping
        // below the clear line for less than clear_for, for an hour.
        let mut steps = vec![(0, Some(0.006))];
        for i in 0..60 {
            let base = 100 + i * 60;
            steps.push((base, Some(if i % 2 == 0 { 0.0045 } else { 0.0052 })));
            steps.push((base + 30, Some(0.003)));
        }
        let t = run(&mut e, &steps);
        let fired = t.iter().filter(|(_, x)| matches!(x, Transition::Fired { .. })).count();
        let resolved = t.iter().filter(|(_, x)| matches!(x, Transition::Resolved { .. })).count();
        assert_eq!((fired, resolved), (1, 0), "{t:?}");
        // Then a real recovery resolves once clear_for has passed.
        // (The last dip began at 3670 and simply continues.)
        let t = run(&mut e, &[(3675, Some(0.001)), (3900, Some(0.001))]);
        assert!(matches!(t.as_slice(), [(3790, Transition::Resolved { .. })]), "{t:?}");
    }

    #[test]
    fn a_short_spike_stays_pending_and_never_pages() {
        let mut e = Engine::new(vec![rule()]);
        let t = run(&mut e, &[(0, Some(0.5)), (55, Some(0.0)), (400, Some(0.0))]);
        assert!(t.is_empty(), "{t:?}");
    }

    #[test]
    fn no_data_is_its_own_alert_and_missing_series_do_not_resolve() {
        let mut e = Engine::new(vec![rule()]);
        let t = run(&mut e, &[(0, Some(0.02)), (200, None), (400, None)]);
        let kinds: Vec<_> = t.iter().map(|(s, x)| format!("{s} {}", what(x))).collect();
        assert_eq!(kinds, ["60 fired high-error-rate", "120 upgraded high-error-rate", "320 fired no-data"]);
        assert_eq!(e.statuses().iter().filter(|s| s.phase == Phase::Firing).count(), 2);
        let t = run(&mut e, &[(400, Some(0.0))]);
        assert!(matches!(&t[0].1, Transition::Resolved { key, .. } if key.rule_id == NO_DATA), "{t:?}");
    }

    #[test]
    fn a_restored_snapshot_carries_timers_on_where_they_were() {
        // One engine goes pending at 0 and fires the warning at 60; another
        // takes over from its snapshot at 100 and upgrades at 120, as the
        // first would have: the critical's `for` (120 s) is not restarted.
        let mut first = Engine::new(vec![rule()]);
        let t = run(&mut first, &[(0, Some(0.02)), (100, Some(0.02))]);
        assert_eq!(t.len(), 1, "{t:?}");
        let mut second = Engine::new(vec![rule()]);
        assert!(second.restore(&first.snapshot().unwrap()));
        let t = run(&mut second, &[(100, Some(0.02)), (200, Some(0.02))]);
        assert!(matches!(t.as_slice(), [(120, Transition::Upgraded { severity: Severity::Critical, .. })]), "{t:?}");
        // ...and its clear clock.
        let t = run(&mut second, &[(200, Some(0.001)), (250, Some(0.001))]);
        assert!(t.is_empty(), "{t:?}");
        let mut third = Engine::new(vec![rule()]);
        assert!(third.restore(&second.snapshot().unwrap()));
        let t = run(&mut third, &[(250, Some(0.001)), (400, Some(0.001))]);
        assert!(
            matches!(t.as_slice(), [(320, Transition::Resolved { .. })]),
            "clear_for counts from 200, not 250: {t:?}"
        );
        assert!(!third.restore("not json"));
        // A NaN value (JSON has none) is saved as null and read back as NaN.
        let state = AlertState { value: f64::NAN, ..Default::default() };
        let back: AlertState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert!(back.value.is_nan());
    }

    #[test]
    fn an_open_incident_the_saved_state_missed_is_taken_up_and_resolves_on_clearing() {
        // The last saved state is from before the fire (pending at 0); the
        // incident store holds the warning open since 0.
        let mut first = Engine::new(vec![rule()]);
        assert!(run(&mut first, &[(0, Some(0.006)), (30, Some(0.006))]).is_empty());
        let mut next = Engine::new(vec![rule()]);
        assert!(next.restore(&first.snapshot().unwrap()));
        let key = AlertKey { rule_id: "high-error-rate".into(), labels: Labels::new() };
        let unknown = AlertKey { rule_id: "gone".into(), labels: Labels::new() };
        let open = [(key.clone(), Severity::Warning, 0), (unknown, Severity::Warning, 0)];
        assert_eq!(next.adopt(open.clone()), ["high-error-rate{}"], "an unknown rule's incident is left alone");
        assert!(next.adopt(open).is_empty(), "taken up once");
        // Still firing: it is not paged a second time.
        assert!(run(&mut next, &[(30, Some(0.006)), (200, Some(0.006))]).is_empty());
        // Cleared for clear_for: it resolves.
        let t = run(&mut next, &[(200, Some(0.001)), (400, Some(0.001))]);
        assert!(matches!(t.as_slice(), [(320, Transition::Resolved { .. })]), "{t:?}");
        // The no-data alert is taken up too, and resolves once data is back.
        let no_data = AlertKey { rule_id: NO_DATA.into(), labels: Labels::new() };
        assert_eq!(next.adopt([(no_data, Severity::Warning, 0)]), ["no-data{}"]);
        let t = run(&mut next, &[(400, Some(0.001))]);
        assert!(matches!(&t[..], [(_, Transition::Resolved { key, .. })] if key.rule_id == NO_DATA), "{t:?}");
    }

    #[test]
    fn a_taken_up_alert_that_was_muted_resolves_loudly_since_it_was_paged() {
        let mut e = inhibiting("0s");
        let symptom = AlertKey { rule_id: "symptom".into(), labels: Labels::new() };
        assert_eq!(e.adopt([(symptom, Severity::Critical, 0)]), ["symptom{}"]);
        let t = steps(&mut e, 0, 30, 0.0, 0.0);
        assert_eq!(t, ["10 resolved symptom"]);
    }

    /// A transition in a word or three, for assertions.
    fn what(t: &Transition) -> String {
        match t {
            Transition::Fired { key, .. } => format!("fired {}", key.rule_id),
            Transition::Upgraded { key, .. } => format!("upgraded {}", key.rule_id),
            Transition::Resolved { key, .. } => format!("resolved {}", key.rule_id),
            Transition::Inhibited { key, by, .. } => format!("{} inhibited by {by}", key.rule_id),
        }
    }

    /// Two rules on the gauges `a` (the inhibitor) and `b`, firing above 1
    /// after 30 s and clearing below 1 after 10 s; `a` mutes `b` for `hold`.
    fn inhibiting(hold: &str) -> Engine {
        let text = format!(
            r#"
rules:
  - {{ id: outage, kind: promql, expr: max(a), summary: s, owner: backend, runbook: r, critical: {{ above: 1, for: 30s, clear_below: 1, clear_for: 10s }} }}
  - {{ id: symptom, kind: promql, expr: max(b), summary: s, owner: backend, runbook: r, critical: {{ above: 1, for: 10s, clear_below: 1, clear_for: 10s }} }}
inhibit_rules:
  - {{ source_matchers: ['rule_id="outage"'], target_matchers: ['rule_id="symptom"'], hold: {hold} }}
"#
        );
        let set = crate::rules::file::parse(&text, "rules.yaml").unwrap();
        Engine::new(set.rules).with_inhibitions(set.inhibit_rules)
    }

    fn both(a: f64, b: f64) -> Results {
        let mut r = Results::new();
        for (expr, v) in [("max(a)", a), ("max(b)", b)] {
            r.insert(expr.into(), Ok(vec![Sample { labels: Labels::new(), value: v }]));
        }
        r
    }

    fn steps(e: &mut Engine, from: i64, to: i64, a: f64, b: f64) -> Vec<String> {
        let mut out = Vec::new();
        for t in (from..to).step_by(5) {
            for x in e.evaluate(&both(a, b), t * 1000) {
                out.push(format!("{t} {}", what(&x)));
            }
        }
        out
    }

    #[test]
    fn a_pending_inhibitor_mutes_its_target_which_resolves_unpaged() {
        let mut e = inhibiting("0s");
        // The symptom crosses its `for` first, while the outage is pending: muted.
        let t = steps(&mut e, 0, 60, 5.0, 5.0);
        assert_eq!(t, ["10 symptom inhibited by outage{}", "30 fired outage"]);
        let muted = e.statuses().into_iter().find(|s| s.key.rule_id == "symptom").unwrap();
        assert_eq!((muted.phase, muted.inhibited_by.as_deref()), (Phase::Firing, Some("outage{}")));
        // Both clear: the outage resolves, the symptom (never paged) silently.
        let t = steps(&mut e, 60, 120, 0.0, 0.0);
        assert_eq!(t, ["70 resolved outage"]);
    }

    #[test]
    fn a_target_still_firing_after_the_hold_pages_then() {
        let mut e = inhibiting("30s");
        let t = steps(&mut e, 0, 60, 5.0, 5.0);
        assert_eq!(t, ["10 symptom inhibited by outage{}", "30 fired outage"]);
        // The outage clears (resolved at 70, last active at 65); the
        // symptom goes on, muted for the 30 s hold, then pages.
        let t = steps(&mut e, 60, 120, 0.0, 5.0);
        assert_eq!(t, ["70 resolved outage", "100 fired symptom"]);
        // A snapshot carries the hold's clock over a failover.
        let mut again = inhibiting("30s");
        let t = steps(&mut e, 120, 130, 5.0, 5.0);
        assert!(again.restore(&e.snapshot().unwrap()));
        assert!(t.is_empty(), "the symptom is paged already: {t:?}");
        let t = steps(&mut again, 130, 200, 5.0, 5.0);
        assert_eq!(t, ["150 fired outage"], "no second page of the symptom");
    }

    #[test]
    fn nan_from_a_quiet_service_is_not_an_error_and_not_no_data() {
        let mut e = Engine::new(vec![rule()]);
        let t = run(&mut e, &[(0, Some(f64::NAN)), (600, Some(f64::NAN))]);
        assert!(t.is_empty(), "{t:?}");
    }
}
