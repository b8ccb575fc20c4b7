//! Incidents: list, show, acknowledge, resolve, and the timeline's notes and
//! runbook steps. Changes name who made them: the client's `by` and the
//! key it authenticated with.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Shared,
    error::{ApiError, ApiResult},
    input::{self, NAME_MAX, TEXT_MAX},
    now_ms,
};
use crate::{
    auth::Principal,
    incidents::{State as IncidentState, Who},
};

/// Most bytes of an event's `data`, as JSON.
pub const DATA_MAX: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list(
    State(s): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = input::query(q)?;
    let limit = q.limit.as_deref().map_or(Ok(50), |l| input::count(l, "limit", 1..=1000))?;
    let store = &s.service.store;
    let incidents = match q.state.as_deref() {
        None | Some("all") => store.list(None, limit).await?,
        Some("open") => store.list_open(limit).await?,
        Some("firing") => store.list(Some(IncidentState::Firing), limit).await?,
        Some("acked") => store.list(Some(IncidentState::Acked), limit).await?,
        Some("resolved") => store.list(Some(IncidentState::Resolved), limit).await?,
        Some(other) => {
            return Err(ApiError::bad(format!("state must be open, firing, acked, resolved or all, not {other:?}")));
        }
    };
    Ok(Json(json!({ "incidents": incidents })))
}

pub(super) async fn show(State(s): State<Shared>, id: Result<Path<String>, PathRejection>) -> ApiResult<Json<Value>> {
    let id = input::id(id, "incident")?;
    let incident = s.service.store.get(id).await?;
    let timeline = s.service.store.timeline(id).await?;
    Ok(Json(json!({ "incident": incident, "timeline": timeline })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct By {
    by: Option<String>,
}

/// The client's `by` (default `api`) and the key behind the request.
fn who(by: Option<String>, principal: &Principal) -> ApiResult<Who> {
    let by = by.unwrap_or_else(|| "api".into());
    input::text(&by, "by", NAME_MAX)?;
    Ok(Who { by, key: principal.key.clone() })
}

pub(super) async fn ack(
    State(s): State<Shared>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = input::id(id, "incident")?;
    let body: By = input::optional_json(&headers, &body)?.unwrap_or_default();
    let who = who(body.by, &principal)?;
    let incident = s.service.ack(id, who, now_ms()).await?;
    Ok(Json(json!({ "incident": incident })))
}

/// Refused while the engine still has the alert pending or firing: a
/// hand-resolved incident would reopen on the next evaluation (and page
/// again). The engine resolves it itself once the alert clears.
pub(super) async fn resolve(
    State(s): State<Shared>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = input::id(id, "incident")?;
    let body: By = input::optional_json(&headers, &body)?.unwrap_or_default();
    let who = who(body.by, &principal)?;
    let incident = s.service.store.get(id).await?;
    let firing =
        incident.state != IncidentState::Resolved && s.engine.lock().is_ok_and(|e| e.is_active(&incident.fingerprint));
    if firing {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ALERT_STILL_FIRING",
            format!(
                "the alert of incident {id} ({}) is still firing, so it cannot be resolved by hand; it resolves by itself once the alert clears. \
                 Fix the cause, or silence it (`alerting silence add --match rule_id={} --for 1h --comment ...`) and acknowledge the incident",
                incident.alert, incident.rule_id
            ),
        ));
    }
    let incident = s.service.resolve(id, who, now_ms()).await?;
    s.wake.notify_one();
    Ok(Json(json!({ "incident": incident })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoteBody {
    text: String,
    by: Option<String>,
}

pub(super) async fn note(
    State(s): State<Shared>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<NoteBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = input::id(id, "incident")?;
    let body = input::json(body)?;
    input::text(&body.text, "text", TEXT_MAX)?;
    let who = who(body.by, &principal)?;
    s.service.store.record_change(id, now_ms(), crate::incidents::EventKind::Note, &who, &body.text, None).await?;
    Ok((StatusCode::CREATED, Json(json!({ "recorded": true }))))
}

/// What the runbook CLI (or a person) may add to a timeline.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum EventKind {
    RunbookStep,
    Note,
}

impl From<EventKind> for crate::incidents::EventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::RunbookStep => crate::incidents::EventKind::RunbookStep,
            EventKind::Note => crate::incidents::EventKind::Note,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBody {
    kind: EventKind,
    text: String,
    by: Option<String>,
    data: Option<Value>,
}

pub(super) async fn event(
    State(s): State<Shared>,
    Extension(principal): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EventBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = input::id(id, "incident")?;
    let body = input::json(body)?;
    input::text(&body.text, "text", TEXT_MAX)?;
    // `null` data is no data.
    let data = body.data.filter(|d| !d.is_null());
    if data.as_ref().is_some_and(|d| d.to_string().len() > DATA_MAX) {
        return Err(ApiError::bad(format!("data must be under {} KiB as JSON", DATA_MAX / 1024)));
    }
    let who = who(body.by, &principal)?;
    s.service.store.record_change(id, now_ms(), body.kind.into(), &who, &body.text, data.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "recorded": true }))))
}
