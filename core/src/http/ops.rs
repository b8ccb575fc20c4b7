//! Operations endpoints: liveness, readiness, the API document, metrics.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, chaos};

pub const ROUTES: &[(&str, &str)] =
    &[("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("GET", "/metrics")];

/// The OpenAPI 3 document, kept beside the code and checked against the
/// router by a test.
pub(crate) const OPENAPI: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/metrics", get(metrics))
}

/// Ready, or not and why: `reasons` from a fixed set (`chaos`, `database`,
/// `queue`), so a probe's log or a runbook can tell a drill from an outage.
/// `chaos` says whether the switch is on at all: a drill of other routes
/// leaves `/readyz` ready, and says so.
async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let drilled = match s.chaos.readiness_fault() {
        Some(fault) => chaos::endure(fault, &s.metrics).await,
        None => false,
    };
    let (db, queue) = tokio::join!(s.store.ping(), s.queue.ping());
    let reasons: Vec<&str> = [(drilled, "chaos"), (db.is_err(), "database"), (queue.is_err(), "queue")]
        .into_iter()
        .filter_map(|(failed, reason)| failed.then_some(reason))
        .collect();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if reasons.is_empty() { "ready" } else { "not_ready" },
            "reasons": reasons,
            "database": word(db.is_ok()),
            "queue": word(queue.is_ok()),
            "chaos": s.chaos.plan().is_some(),
        })),
    )
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let m = &s.metrics;
    let pool = s.store.pool_stats();
    m.db_pool_max.set(pool.max.into());
    m.db_pool_open.set(pool.size.into());
    m.db_pool_idle.set(pool.idle.into());
    m.db_pool_in_use.set(i64::from(pool.size) - i64::from(pool.idle));
    if let Ok(depth) = s.queue.depth(s.clock.now_ms()).await {
        m.queue_waiting.set(depth.waiting);
        m.queue_active.set(depth.active);
    }
    // Prometheus asks for OpenMetrics first; only that format carries exemplars.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (body, content_type) = m.render(openmetrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}
