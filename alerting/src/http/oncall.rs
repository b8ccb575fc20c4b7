//! `GET /v1/oncall`: who would be paged, step by step, for an alert at a
//! given time.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Shared,
    error::{ApiError, ApiResult},
    input::{self, NAME_MAX},
};
use crate::{oncall, rules::Severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhoQuery {
    at: Option<String>,
    rule: Option<String>,
    severity: Option<Severity>,
    owner: Option<String>,
}

pub(super) async fn who_is_on_call(
    State(s): State<Shared>,
    q: Result<Query<WhoQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = input::query(q)?;
    let at = q.at.as_deref().map(|t| input::time(t, "at")).transpose()?.unwrap_or_else(Utc::now);
    for (field, value) in [("rule", &q.rule), ("owner", &q.owner)] {
        if value.as_ref().is_some_and(|v| v.chars().count() > NAME_MAX) {
            return Err(ApiError::bad(format!("`{field}` must be at most {NAME_MAX} characters")));
        }
    }
    let (severity, owner) = match &q.rule {
        Some(id) => {
            let rule = s.service.rule(id).ok_or_else(|| ApiError::not_found(format!("no rule {id:?}")))?;
            (q.severity.unwrap_or(Severity::Critical), rule.owner.clone())
        }
        None => (q.severity.unwrap_or(Severity::Warning), q.owner.clone().unwrap_or_else(|| "incident-lead".into())),
    };
    Ok(Json(who(&s.service.roster, severity, &owner, at)))
}

/// Who would be paged, step by step, for an alert at `at`. A step that
/// would fall past the end of time (year 9999 and later) names nobody.
pub fn who(roster: &oncall::Roster, severity: Severity, owner: &str, at: DateTime<Utc>) -> Value {
    let plan = oncall::plan(roster, severity, owner);
    let steps: Vec<Value> = plan
        .iter()
        .map(|step| {
            let when = TimeDelta::from_std(step.after).ok().and_then(|after| at.checked_add_signed(after));
            let people: Vec<Value> = when
                .map(|when| oncall::targets(roster, step, when))
                .unwrap_or_default()
                .into_iter()
                .map(|t| json!({ "role": t.role, "person": t.person.id, "name": t.person.name, "slack": t.person.slack, "email": t.person.email }))
                .collect();
            json!({ "level": step.level, "after_minutes": step.after.as_secs() / 60, "roles": step.roles, "people": people })
        })
        .collect();
    json!({ "at": at, "severity": severity, "owner": owner, "steps": steps })
}
