//! The alerting HTTP API: alerts, incidents (list, show, ack, resolve,
//! notes, runbook step events), silences and maintenance windows, who is on
//! call, and `/metrics`. Errors are `{"error":{"code","message"}}`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    engine::Engine,
    incidents::{IncidentError, Silence, SilenceKind, State as IncidentState},
    oncall,
    promql::parse_duration,
    rules::Severity,
    service::{Service, ServiceError},
};

pub struct AppState {
    pub service: Service,
    pub engine: std::sync::Mutex<Engine>,
    /// Wakes the delivery worker when new pages are written.
    pub wake: tokio::sync::Notify,
    /// When set, changes need `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
}

pub type Shared = Arc<AppState>;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": { "code": self.code, "message": self.message } }))).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let ServiceError::Incident(e) = e;
        e.into()
    }
}

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::NotFound(_) | IncidentError::SilenceNotFound(_) => Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string()),
            IncidentError::Resolved(_) => Self::new(StatusCode::CONFLICT, "ALREADY_RESOLVED", e.to_string()),
            other => {
                tracing::error!(error = %other, "incident store failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::bad(e.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(key) = &state.api_key else { return Ok(()) };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "this change needs `Authorization: Bearer <ALERTING_API_KEY>`")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/metrics", get(metrics))
        .route("/v1/alerts", get(alerts))
        .route("/v1/incidents", get(list_incidents))
        .route("/v1/incidents/{id}", get(show_incident))
        .route("/v1/incidents/{id}/ack", post(ack))
        .route("/v1/incidents/{id}/resolve", post(resolve))
        .route("/v1/incidents/{id}/notes", post(note))
        .route("/v1/incidents/{id}/events", post(event))
        .route("/v1/silences", get(list_silences).post(add_silence))
        .route("/v1/silences/{id}", axum::routing::delete(expire_silence))
        .route("/v1/oncall", get(oncall_who))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .with_state(state)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.service.metrics.render())
}

async fn alerts(State(s): State<Shared>) -> Json<Value> {
    let statuses = s.engine.lock().map(|e| e.statuses()).unwrap_or_default();
    Json(json!({ "alerts": statuses }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_incidents(State(s): State<Shared>, q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit must be between 1 and 1000"));
    }
    let store = &s.service.store;
    let incidents = match q.state.as_deref() {
        None | Some("all") => store.list(None, limit).await?,
        Some("open") => store.list_open(limit).await?,
        Some("firing") => store.list(Some(IncidentState::Firing), limit).await?,
        Some("acked") => store.list(Some(IncidentState::Acked), limit).await?,
        Some("resolved") => store.list(Some(IncidentState::Resolved), limit).await?,
        Some(other) => return Err(ApiError::bad(format!("state must be open, firing, acked, resolved or all, not {other:?}"))),
    };
    Ok(Json(json!({ "incidents": incidents })))
}

fn incident_id(raw: &str) -> ApiResult<i64> {
    raw.parse().map_err(|_| ApiError::bad(format!("incident id must be a number, not {raw:?}")))
}

async fn show_incident(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = incident_id(&id)?;
    let incident = s.service.store.get(id).await?;
    let timeline = s.service.store.timeline(id).await?;
    Ok(Json(json!({ "incident": incident, "timeline": timeline })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct By {
    by: Option<String>,
}

/// `{"by": ...}`, or nothing at all.
fn optional_by(body: &[u8]) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<By>(body).map(|b| b.by).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

fn actor(by: Option<String>) -> ApiResult<String> {
    let by = by.unwrap_or_else(|| "api".into());
    if by.trim().is_empty() || by.len() > 200 {
        return Err(ApiError::bad("`by` must be 1 to 200 characters"));
    }
    Ok(by)
}

async fn ack(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult<Json<Value>> {
    authorize(&s, &headers)?;
    let id = incident_id(&id)?;
    let by = actor(optional_by(&body)?)?;
    let incident = s.service.ack(id, &by, now_ms()).await?;
    Ok(Json(json!({ "incident": incident })))
}

async fn resolve(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult<Json<Value>> {
    authorize(&s, &headers)?;
    let id = incident_id(&id)?;
    let by = actor(optional_by(&body)?)?;
    let incident = s.service.resolve(id, &by, now_ms()).await?;
    s.wake.notify_one();
    Ok(Json(json!({ "incident": incident })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
    by: Option<String>,
}

async fn note(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<NoteBody>, JsonRejection>) -> ApiResult<(StatusCode, Json<Value>)> {
    authorize(&s, &headers)?;
    let id = incident_id(&id)?;
    let Json(body) = body?;
    if body.text.trim().is_empty() || body.text.len() > 10_000 {
        return Err(ApiError::bad("text must be 1 to 10000 characters"));
    }
    let by = actor(body.by)?;
    s.service.store.record(id, now_ms(), "note", Some(&by), &body.text, None).await?;
    Ok((StatusCode::CREATED, Json(json!({ "recorded": true }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    /// `runbook_step` (the runbook CLI) or `note`.
    kind: String,
    text: String,
    by: Option<String>,
    data: Option<Value>,
}

async fn event(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>, body: Result<Json<EventBody>, JsonRejection>) -> ApiResult<(StatusCode, Json<Value>)> {
    authorize(&s, &headers)?;
    let id = incident_id(&id)?;
    let Json(body) = body?;
    if !matches!(body.kind.as_str(), "runbook_step" | "note") {
        return Err(ApiError::bad("kind must be runbook_step or note"));
    }
    if body.text.trim().is_empty() || body.text.len() > 10_000 {
        return Err(ApiError::bad("text must be 1 to 10000 characters"));
    }
    if body.data.as_ref().is_some_and(|d| d.to_string().len() > 256 * 1024) {
        return Err(ApiError::bad("data must be under 256 KiB"));
    }
    let by = actor(body.by)?;
    s.service.store.record(id, now_ms(), &body.kind, Some(&by), &body.text, body.data.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "recorded": true }))))
}

async fn list_silences(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "silences": s.service.store.silences(now_ms()).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    matchers: BTreeMap<String, String>,
    /// `silence` (default) or `maintenance`.
    kind: Option<SilenceKind>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    /// Instead of `ends_at`: `2h`, `30m`.
    duration: Option<String>,
    created_by: Option<String>,
    comment: String,
}

async fn add_silence(State(s): State<Shared>, headers: HeaderMap, body: Result<Json<SilenceBody>, JsonRejection>) -> ApiResult<(StatusCode, Json<Value>)> {
    authorize(&s, &headers)?;
    let Json(body) = body?;
    if body.matchers.is_empty() {
        return Err(ApiError::bad("a silence needs at least one matcher (e.g. {\"rule_id\": \"high-error-rate\"})"));
    }
    if body.comment.trim().is_empty() {
        return Err(ApiError::bad("say why in `comment`"));
    }
    let now = now_ms();
    let starts_at = body.starts_at.map_or(now, |t| t.timestamp_millis());
    let ends_at = match (body.ends_at, body.duration.as_deref()) {
        (Some(end), None) => end.timestamp_millis(),
        (None, Some(d)) => starts_at + parse_duration(d).map_err(|why| ApiError::bad(format!("bad duration `{d}`: {why}")))?.as_millis() as i64,
        _ => return Err(ApiError::bad("give exactly one of ends_at and duration")),
    };
    if ends_at <= starts_at || ends_at <= now {
        return Err(ApiError::bad("the silence must end after it starts and in the future"));
    }
    let silence = s
        .service
        .store
        .add_silence(&Silence {
            id: 0,
            kind: body.kind.unwrap_or(SilenceKind::Silence),
            matchers: body.matchers,
            starts_at,
            ends_at,
            created_by: actor(body.created_by)?,
            comment: body.comment,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence }))))
}

async fn expire_silence(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<StatusCode> {
    authorize(&s, &headers)?;
    let id: i64 = id.parse().map_err(|_| ApiError::bad("silence id must be a number"))?;
    s.service.store.expire_silence(id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhoQuery {
    at: Option<DateTime<Utc>>,
    rule: Option<String>,
    severity: Option<Severity>,
    owner: Option<String>,
}

async fn oncall_who(State(s): State<Shared>, q: Result<Query<WhoQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let at = q.at.unwrap_or_else(Utc::now);
    let (severity, owner) = match &q.rule {
        Some(id) => {
            let rule = s.service.rule(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no rule {id:?}")))?;
            (q.severity.unwrap_or(Severity::Critical), rule.owner.clone())
        }
        None => (q.severity.unwrap_or(Severity::Warning), q.owner.clone().unwrap_or_else(|| "incident-lead".into())),
    };
    Ok(Json(who(&s.service.roster, severity, &owner, at)))
}

/// Who would be paged, step by step, for an alert at `at`.
pub fn who(roster: &oncall::Roster, severity: Severity, owner: &str, at: DateTime<Utc>) -> Value {
    let plan = oncall::plan(roster, severity, owner);
    let steps: Vec<Value> = plan
        .iter()
        .map(|step| {
            let people: Vec<Value> = oncall::targets(roster, step, at + chrono::Duration::from_std(step.after).unwrap_or_default())
                .into_iter()
                .map(|t| json!({ "role": t.role, "person": t.person.id, "name": t.person.name, "slack": t.person.slack, "email": t.person.email }))
                .collect();
            json!({ "level": step.level, "after_minutes": step.after.as_secs() / 60, "roles": step.roles, "people": people })
        })
        .collect();
    json!({ "at": at, "severity": severity, "owner": owner, "steps": steps })
}
