//! Silences and maintenance windows: list, add, expire. A silence mutes
//! pages, the one thing that must not fail quietly, so it is bounded: it
//! lasts at most `ALERTING_SILENCE_MAX`, starts within a year, and one that
//! names neither a rule nor an alert must say it means to be that broad.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Extension, Json,
    extract::{Path, State, rejection::{JsonRejection, PathRejection}},
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
    incidents::{Silence, SilenceKind},
    promql::parse_duration,
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

/// Writes a duration the way `parse_duration` reads it (`7d`, `1h30m`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// A silence's window from what the client sent, at `now`: `(starts, ends)`
/// in Unix ms, or why it is refused. Pure, so every edge is a unit test.
pub fn window(now: i64, starts_at: Option<i64>, ends_at: Option<i64>, duration: Option<&str>, max: Duration) -> Result<(i64, i64), String> {
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

pub(super) async fn add(
    State(s): State<Shared>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<SilenceBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = input::json(body)?;
    if body.matchers.is_empty() || body.matchers.len() > MATCHERS_MAX {
        return Err(ApiError::bad(format!("a silence needs 1 to {MATCHERS_MAX} matchers (e.g. {{\"rule_id\": \"high-error-rate\"}})")));
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
    if let Some(why) = too_broad(&body.matchers, body.force.unwrap_or(false)) {
        return Err(ApiError::bad(why));
    }
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
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence }))))
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

    #[test]
    fn durations_are_written_as_they_are_read() {
        for d in [0, 1, 59, 3_600, 5_400, 604_800, 93_784] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
