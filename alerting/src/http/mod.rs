//! The alerting HTTP API: alerts, incidents (list, show, ack, resolve,
//! notes, runbook step events), silences and maintenance windows, who is on
//! call, `/metrics`, and its own OpenAPI document. Errors are
//! `{"error":{"code","message"}}`.
//!
//! With any key configured every route but `/healthz`, `/metrics` and
//! `/openapi.json` needs `Authorization: Bearer <key>`: a read key for the
//! GET routes, a responder key for changes. With none, it is open (start-up
//! allows that only on loopback).

mod error;
mod incidents;
mod input;
mod oncall;
mod silences;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, delete, get, post},
};
use chrono::Utc;
use serde_json::{Value, json};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

pub use error::ApiError;
pub use oncall::who;

use crate::{
    auth::{Keys, Principal, Role},
    engine::Engine,
    service::Service,
};

pub struct AppState {
    pub service: Service,
    pub engine: std::sync::Mutex<Engine>,
    /// Wakes the delivery worker when new pages are written.
    pub wake: tokio::sync::Notify,
    /// Who may call the API; none: open.
    pub keys: Keys,
    /// The longest silence or maintenance window (`ALERTING_SILENCE_MAX`).
    pub silence_max: Duration,
    /// A request running longer is answered 503 `TIMEOUT`
    /// (`ALERTING_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
}

pub type Shared = Arc<AppState>;

/// Request bodies above this are refused with 413: an event's `data` (at
/// most 256 KiB) and its text fit with room to spare.
pub const BODY_LIMIT: usize = 512 * 1024;

/// The default for [`AppState::silence_max`]: a week.
pub const SILENCE_MAX: Duration = Duration::from_secs(7 * 86_400);

/// The default for [`AppState::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The OpenAPI 3 document, kept beside the code (`alerting/openapi.json`)
/// and checked against [`routes`] by the tests.
pub const OPENAPI: &str = include_str!("../../openapi.json");

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Every operation, once: the router is built from this table and the
/// OpenAPI test compares it with the document. `open` routes need no key.
struct Route {
    method: &'static str,
    path: &'static str,
    open: bool,
    handler: MethodRouter<Shared>,
}

fn table() -> Vec<Route> {
    let route = |method, path, open, handler| Route { method, path, open, handler };
    vec![
        route("GET", "/healthz", true, get(|| async { Json(json!({ "status": "ok" })) })),
        route("GET", "/metrics", true, get(metrics)),
        route("GET", "/openapi.json", true, get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) })),
        route("GET", "/v1/alerts", false, get(alerts)),
        route("GET", "/v1/incidents", false, get(incidents::list)),
        route("GET", "/v1/incidents/{id}", false, get(incidents::show)),
        route("POST", "/v1/incidents/{id}/ack", false, post(incidents::ack)),
        route("POST", "/v1/incidents/{id}/resolve", false, post(incidents::resolve)),
        route("POST", "/v1/incidents/{id}/notes", false, post(incidents::note)),
        route("POST", "/v1/incidents/{id}/events", false, post(incidents::event)),
        route("GET", "/v1/silences", false, get(silences::list)),
        route("POST", "/v1/silences", false, post(silences::add)),
        route("DELETE", "/v1/silences/{id}", false, delete(silences::expire)),
        route("GET", "/v1/oncall", false, get(oncall::who_is_on_call)),
    ]
}

/// The operations of the router, as `(METHOD, /path/{param})`.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().iter().map(|r| (r.method, r.path)).collect()
}

pub fn router(state: Shared) -> Router {
    let (mut open, mut guarded) = (Router::new(), Router::new());
    for r in table() {
        if r.open {
            open = open.route(r.path, r.handler);
        } else {
            guarded = guarded.route(r.path, r.handler);
        }
    }
    // A route layer: only requests that match a route and method are
    // authenticated; a wrong method is a 405 either way.
    let guarded = guarded.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    open.merge(guarded)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.request_timeout))
        .layer(CatchPanicLayer::custom(error::panicked))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// The target of the one log line each request writes (the access line).
pub const ACCESS: &str = "alerting::access";

/// The request's server span (its parent from an incoming `traceparent`),
/// the trace id on the response (`X-Trace-Id`) and one access line, as
/// booking writes them ([`telemetry::http`]). No HTTP metrics: the shipped
/// SLI rules sum `http_server_requests_total` over every job, so
/// alerting's own requests would count as booking's.
async fn observe(req: Request, next: Next) -> Response {
    let request = telemetry::http::ServerRequest::start(req.method(), req.uri(), req.headers());
    let method = request.method();
    let matched = req.extensions().get::<axum::extract::MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let mut serving = std::pin::pin!(next.run(req));
    let mut response = request.serve(serving.as_mut()).await;
    let status = response.status();
    request.finish(None, route, &mut response, None, |latency_ms| {
        if status.is_server_error() {
            tracing::error!(target: ACCESS, method, route, status = status.as_u16(), latency_ms, "request failed");
        } else if route != "/metrics" && route != "/healthz" {
            tracing::info!(target: ACCESS, method, route, status = status.as_u16(), latency_ms, "request");
        }
    });
    response
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, as RFC 9110 has it).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Who is calling, and whether they may: 401 without a known key, 403 for a
/// change made with a read key. The principal goes on to the handler.
async fn authenticate(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let principal = if s.keys.required() {
        match bearer(req.headers()).and_then(|k| s.keys.authenticate(k)) {
            Some(p) => p,
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "this route needs `Authorization: Bearer <key>`: ALERTING_API_KEY, ALERTING_READ_KEY or a key from ALERTING_KEYS_FILE",
                )
                .into_response();
            }
        }
    } else {
        Principal { key: None, role: Role::Responder }
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads && !principal.role.may_change() {
        let name = principal.key.as_deref().unwrap_or("this key");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("key `{name}` may only read; changes need a responder key"),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.service.metrics.render())
}

async fn alerts(State(s): State<Shared>) -> Json<Value> {
    let statuses = s.engine.lock().map(|e| e.statuses()).unwrap_or_default();
    Json(json!({ "alerts": statuses }))
}
