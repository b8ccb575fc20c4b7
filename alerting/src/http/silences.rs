//! Silences and maintenance windows: list, add, expire. A silence mutes
//! pages, the one thing that must not fail quietly, so it is bounded: it
//! lasts at most `ALERTING_SILENCE_MAX`, starts within a year, and one that
//! names neither a rule nor an alert must say it means to be that broad.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use axum::{
    Extension, Json,
    extract::{
        Path, State,
        rejection::{JsonRejection, PathRejection},
    },
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Shared,
    error::{ApiError, ApiResult},
    input::{self, COMMENT_MAX, NAME_MAX},
    now_ms,
};
use crate::{
    auth::Principal,
    engine::{AlertStatus, Phase},
    incidents::{Silence, SilenceKind, labels_match},
    promql::{self, parse_duration},
    rules::{Rule, Severity},
    service::no_data_rule,
};

/// Most matchers in one silence.
pub const MATCHERS_MAX: usize = 20;
/// How far ahead a silence may start: planned maintenance, not a mute
/// button left for later.
pub const SCHEDULE_AHEAD: Duration = Duration::from_secs(365 * 86_400);

pub(super) async fn list(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "silences": s.service.store.silences(now_ms()).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SilenceBody {
    matchers: BTreeMap<String, String>,
    /// `silence` (default) or `maintenance`.
    kind: Option<SilenceKind>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    /// Instead of `ends_at`: `2h`, `30m`.
    duration: Option<String>,
    created_by: Option<String>,
    comment: String,
    /// Needed for a silence without a `rule_id` or `alertname` matcher.
    force: Option<bool>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

use crate::promql::format_duration;

/// A silence's window from what the client sent, at `now`: `(starts, ends)`
/// in Unix ms, or why it is refused. Pure, so every edge is a unit test.
pub fn window(
    now: i64,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    duration: Option<&str>,
    max: Duration,
) -> Result<(i64, i64), String> {
    let starts = starts_at.unwrap_or(now);
    if starts > now.saturating_add(ms(SCHEDULE_AHEAD)) {
        return Err(format!("a silence must start within {} from now", format_duration(SCHEDULE_AHEAD)));
    }
    let ends = match (ends_at, duration) {
        (Some(end), None) => end,
        (None, Some(d)) => {
            let length = parse_duration(d).map_err(|why| format!("bad duration `{d}`: {why}"))?;
            starts.checked_add(ms(length)).ok_or_else(|| format!("bad duration `{d}`: too long"))?
        }
        _ => return Err("give exactly one of ends_at and duration".into()),
    };
    if ends <= starts || ends <= now {
        return Err("the silence must end after it starts and in the future".into());
    }
    let length = ends.saturating_sub(starts);
    if length > ms(max) {
        return Err(format!(
            "a silence may last at most {} (ALERTING_SILENCE_MAX); this one lasts {}",
            format_duration(max),
            format_duration(Duration::from_millis(u64::try_from(length).unwrap_or(u64::MAX)))
        ));
    }
    Ok((starts, ends))
}

/// A silence that names no rule and no alert mutes every alert its labels
/// match: one `severity=critical` would mute every critical page.
pub fn too_broad(matchers: &BTreeMap<String, String>, force: bool) -> Option<String> {
    let named = matchers.contains_key("rule_id") || matchers.contains_key("alertname");
    (!named && !force).then(|| {
        "this silence names no `rule_id` and no `alertname`, so it mutes every alert whose labels match \
         (a single `severity=critical` would mute every critical page). Name the rule, or send \"force\": true \
         (`--force` on `alerting silence add`) if you mean it"
            .to_string()
    })
}

/// The labels every alert carries besides its series' own.
const ALERT_LABELS: [&str; 4] = ["alertname", "rule_id", "severity", "owner"];

/// The label names alerts of `rule` can carry: the fixed ones, the rule's
/// own, and those its expressions keep (`sum by (route)` keeps `route`). An
/// expression that keeps whatever its series have (`up{job="booking"}`)
/// contributes the labels it selects on plus the scrape's `job` and
/// `instance`; the series of current alerts add theirs at the call site.
fn label_names(rule: &Rule) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ALERT_LABELS.iter().map(|n| n.to_string()).collect();
    names.extend(rule.labels.keys().cloned());
    for condition in rule.levels.iter().flat_map(|l| &l.fire) {
        let Ok(expr) = promql::parse(&condition.expr) else { continue };
        match expr.output_labels() {
            Some(kept) => names.extend(kept),
            None => {
                names.extend(["job".to_string(), "instance".to_string()]);
                names
                    .extend(expr.selectors().into_iter().flat_map(|(s, _)| s.matchers.iter().map(|m| m.label.clone())));
            }
        }
    }
    names
}

/// Whether an alert of `rule` could carry every matcher: the fixed labels
/// must agree, `severity` must be one of the rule's levels.
fn rule_can_match(rule: &Rule, severities: &[Severity], matchers: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|(name, value)| match name.as_str() {
        "alertname" => *value == rule.name,
        "rule_id" => *value == rule.id,
        "owner" => *value == rule.owner,
        "severity" => severities.iter().any(|s| s.as_str() == value),
        other => rule.labels.get(other).is_none_or(|v| v == value),
    })
}

/// Why a silence with these matchers could never mute an alert of `rules`
/// (a typo such as `rule=cpu-high` or `rule_id=no-such-rule`), or `None`.
/// `current` are the labels of the alerts pending or firing now: a label
/// only a live series carries still counts. Pure, so every case is a test.
pub fn never_matches(
    matchers: &BTreeMap<String, String>,
    rules: &[Rule],
    current: &[BTreeMap<String, String>],
) -> Option<String> {
    if current.iter().any(|labels| labels_match(matchers, labels)) {
        return None;
    }
    let no_data = no_data_rule();
    let all: Vec<(&Rule, Vec<Severity>)> = rules.iter().chain([&no_data]).map(|r| (r, r.severities())).collect();
    let mut names: BTreeSet<String> = all.iter().flat_map(|(r, _)| label_names(r)).collect();
    names.extend(current.iter().flat_map(|l| l.keys().cloned()));
    let unknown: Vec<&String> = matchers.keys().filter(|k| !names.contains(*k)).collect();
    if !unknown.is_empty() {
        let hints: Vec<String> = unknown
            .iter()
            .map(|name| match closest(name, names.iter().map(String::as_str)) {
                Some(near) => format!("`{name}` (did you mean `{near}`?)"),
                None => format!("`{name}`"),
            })
            .collect();
        return Some(format!(
            "no alert carries the label {}: the rules' alerts carry {}",
            hints.join(", "),
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    if all.iter().any(|(rule, severities)| rule_can_match(rule, severities, matchers)) {
        return None;
    }
    let known = |name: &str, values: Vec<&str>| -> Option<String> {
        let value = matchers.get(name)?;
        (!values.contains(&value.as_str())).then(|| {
            let hint =
                closest(value, values.iter().copied()).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
            format!("no rule has {name} `{value}`{hint}; the rules have {}", values.join(", "))
        })
    };
    known("rule_id", all.iter().map(|(r, _)| r.id.as_str()).collect())
        .or_else(|| known("alertname", all.iter().map(|(r, _)| r.name.as_str()).collect()))
        .or_else(|| known("severity", vec!["warning", "critical"]))
        .or_else(|| known("owner", all.iter().map(|(r, _)| r.owner.as_str()).collect::<BTreeSet<_>>().into_iter().collect()))
        .or_else(|| Some("no rule's alerts carry all of these labels together (say, a rule_id with another rule's alertname, or a severity the rule has no level for)".into()))
}

/// The candidate nearest to `word` by edit distance, if it is near (at most
/// a third of the word wrong) or `word` is its prefix: `rule` → `rule_id`.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (if c.starts_with(word) { 0 } else { edit_distance(word, c) }, c))
        .filter(|(d, _)| *d <= (word.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + usize::from(ca != *cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A current alert's labels as silences see them. A pending alert has no
/// severity yet: it is matched at each severity its rule could page.
fn current_labels(status: &AlertStatus, rule: &Rule) -> Vec<BTreeMap<String, String>> {
    let severities = status.severity.map_or_else(|| rule.severities(), |s| vec![s]);
    severities.into_iter().map(|s| rule.alert_labels(s, &status.key.labels)).collect()
}

pub(super) async fn add(
    State(s): State<Shared>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<SilenceBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = input::json(body)?;
    if body.matchers.is_empty() || body.matchers.len() > MATCHERS_MAX {
        return Err(ApiError::bad(format!(
            "a silence needs 1 to {MATCHERS_MAX} matchers (e.g. {{\"rule_id\": \"high-error-rate\"}})"
        )));
    }
    for (name, value) in &body.matchers {
        input::label_name(name)?;
        input::value(value, name)?;
    }
    input::text(&body.comment, "comment", COMMENT_MAX)?;
    let created_by = body.created_by.unwrap_or_else(|| "api".into());
    input::text(&created_by, "created_by", NAME_MAX)?;
    let starts_at = body.starts_at.as_deref().map(|t| input::time(t, "starts_at")).transpose()?;
    let ends_at = body.ends_at.as_deref().map(|t| input::time(t, "ends_at")).transpose()?;
    let force = body.force.unwrap_or(false);
    let (rules, current) = {
        let engine = s.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let no_data = no_data_rule();
        let current: Vec<(AlertStatus, Vec<BTreeMap<String, String>>)> = engine
            .statuses()
            .into_iter()
            .filter(|st| st.phase != Phase::Inactive)
            .filter_map(|st| {
                let rule = engine.rule(&st.key.rule_id).or((st.key.rule_id == no_data.id).then_some(&no_data))?;
                let labels = current_labels(&st, rule);
                Some((st, labels))
            })
            .collect();
        (engine.rules().to_vec(), current)
    };
    if !force {
        let live: Vec<BTreeMap<String, String>> = current.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
        if let Some(why) = never_matches(&body.matchers, &rules, &live) {
            return Err(ApiError::bad(format!(
                "{why}. This silence would mute nothing; send \"force\": true (`--force`) to add it anyway"
            )));
        }
    }
    // After the typo check, whose hint (`rule` → `rule_id`) is the more useful.
    if let Some(why) = too_broad(&body.matchers, force) {
        return Err(ApiError::bad(why));
    }
    // What it mutes right now, so whoever adds it sees whether it is the one they meant.
    let matched: Vec<&AlertStatus> = current
        .iter()
        .filter(|(_, labels)| labels.iter().any(|l| labels_match(&body.matchers, l)))
        .map(|(st, _)| st)
        .collect();
    let (starts_at, ends_at) = window(
        now_ms(),
        starts_at.map(|t| t.timestamp_millis()),
        ends_at.map(|t| t.timestamp_millis()),
        body.duration.as_deref(),
        s.silence_max,
    )
    .map_err(ApiError::bad)?;
    let silence = s
        .service
        .store
        .add_silence(&Silence {
            id: 0,
            kind: body.kind.unwrap_or(SilenceKind::Silence),
            matchers: body.matchers,
            starts_at,
            ends_at,
            created_by,
            comment: body.comment,
            key: principal.key,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence, "matches": matched }))))
}

pub(super) async fn expire(State(s): State<Shared>, id: Result<Path<String>, PathRejection>) -> ApiResult<StatusCode> {
    let id = input::id(id, "silence")?;
    s.service.store.expire_silence(id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn a_window_is_bounded_and_never_overflows() {
        assert_eq!(window(NOW, None, None, Some("2h"), WEEK), Ok((NOW, NOW + 7_200_000)));
        assert!(window(NOW, None, None, Some("7d"), WEEK).is_ok());
        assert!(window(NOW, None, None, Some("7d1s"), WEEK).unwrap_err().contains("at most 7d"));
        assert!(window(NOW, None, None, Some("106751991167d"), WEEK).unwrap_err().contains("duration"));
        assert!(window(NOW, Some(i64::MAX - 1), None, Some("1h"), WEEK).unwrap_err().contains("start within"));
        assert!(window(i64::MAX - 10, None, None, Some("1h"), WEEK).is_err());
        assert!(window(NOW, None, Some(i64::MAX), None, WEEK).unwrap_err().contains("at most"));
        assert!(window(NOW, None, Some(NOW - 1), None, WEEK).is_err());
        assert!(window(NOW, None, Some(NOW + 1), Some("1h"), WEEK).is_err());
        assert!(window(NOW, Some(NOW - 3_600_000), None, Some("30m"), WEEK).is_err(), "already over");
    }

    #[test]
    fn a_silence_without_rule_or_alertname_needs_force() {
        let m = |k: &str| BTreeMap::from([(k.to_string(), "x".to_string())]);
        assert!(too_broad(&m("severity"), false).is_some());
        assert!(too_broad(&m("severity"), true).is_none());
        assert!(too_broad(&m("rule_id"), false).is_none());
        assert!(too_broad(&m("alertname"), false).is_none());
    }

    fn matchers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_silence_that_could_never_mute_anything_is_refused_with_a_hint() {
        let rules = crate::rules::file::shipped().rules;
        let refused = |pairs: &[(&str, &str)]| never_matches(&matchers(pairs), &rules, &[]).unwrap_or_default();
        assert!(
            refused(&[("rule", "cpu-high")]).contains("`rule` (did you mean `rule_id`?)"),
            "{}",
            refused(&[("rule", "cpu-high")])
        );
        assert!(refused(&[("rule_id", "no-such-rule")]).contains("no rule has rule_id `no-such-rule`"));
        assert!(refused(&[("rule_id", "cpu-hihg")]).contains("did you mean `cpu-high`?"));
        assert!(refused(&[("alertname", "HighErrorRat")]).contains("did you mean `HighErrorRate`?"));
        assert!(refused(&[("severity", "page")]).contains("no rule has severity `page`"));
        assert!(refused(&[("rule_id", "high-error-rate"), ("alertname", "CpuHigh")]).contains("together"));
        for ok in [
            &[("rule_id", "cpu-high")][..],
            &[("alertname", "HighErrorRate"), ("severity", "critical")],
            &[("severity", "critical")],
            &[("owner", "backend")],
            &[("rule_id", "no-data")],
            &[("job", "booking")],
        ] {
            assert_eq!(never_matches(&matchers(ok), &rules, &[]), None, "{ok:?}");
        }
    }

    #[test]
    fn a_label_that_only_a_live_alert_carries_still_counts() {
        let rules = crate::rules::file::shipped().rules;
        let m = matchers(&[("rule_id", "high-error-rate"), ("shard", "7")]);
        assert!(never_matches(&m, &rules, &[]).is_some());
        let live = matchers(&[("rule_id", "high-error-rate"), ("shard", "7"), ("severity", "critical")]);
        assert_eq!(never_matches(&m, &rules, &[live]), None);
    }

    #[test]
    fn durations_are_written_as_they_are_read() {
        for d in [0, 1, 59, 3_600, 5_400, 604_800, 93_784] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
