//! The HTTP API: one module per resource, each with its `router()`, merged
//! in [`app`] under the shared layers.

pub mod caches;
pub mod error;
pub mod extract;

mod chaos;
mod clients;
mod concerts;
mod controls;
mod ops;
mod payments;
mod queue;
mod reservations;
mod users;

use std::sync::Arc;

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{
    domain::{Clock, tokens::TokenKey},
    metrics::Metrics,
    queue::Queue,
    settings::Settings,
    store::Store,
};
use error::{ErrorCode, InternalCause, error_response};

/// The target of the one log line each request writes (the access line).
pub const ACCESS: &str = "booking::access";

pub use chaos::{Chaos, ChaosPlan};
pub use clients::{ADMIN_FAILURES_PER_MINUTE, ClientIp, ClientLimits};
pub use queue::EntryRateLimit;

/// Everything a handler may use. Extractors and middleware clone it for
/// every request, so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub store: Store,
    pub queue: Queue,
    pub settings: Arc<Settings>,
    pub keys: TokenKey,
    pub clock: Clock,
    pub metrics: Metrics,
    pub caches: Caches,
    /// Injected faults for alerting drills; off until an operator turns it on.
    pub chaos: Chaos,
    /// Admission batch and interval as they stand now: the settings' values
    /// until an operator changes them. The admission loop watches it.
    pub admission: tokio::sync::watch::Sender<crate::queue::AdmissionTuning>,
    /// The process-wide limit on queue entries; off unless set.
    pub entry_limit: EntryRateLimit,
    /// Sign-ups and wrong admin keys, per client.
    pub client_limits: ClientLimits,
}

pub use caches::{Caches, Flushed, SEAT_MAP_TTL, SeatMap};

/// Request bodies above this are refused with 413; concert creation, which
/// carries whole seat maps, may send more.
const BODY_LIMIT: usize = 64 * 1024;
pub(crate) const ADMIN_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The whole service as a `Router`, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(users::router())
        .merge(concerts::router())
        .merge(queue::router())
        .merge(reservations::router())
        .merge(payments::router())
        .merge(chaos::router())
        .merge(controls::router())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .merge(concerts::admin_router())
        .merge(ops::router())
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND", "no such route") })
        .layer(middleware::from_fn(json_errors))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.settings.request_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The request's span, one log line and one metrics update per request with
/// the route template (never the raw path), and the trace id on the
/// response (see [`telemetry::http`]).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request = telemetry::http::ServerRequest::start(req.method(), req.uri(), req.headers());
    let method = request.method();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    // Injected faults happen in here, so they are timed, logged and counted
    // like real ones.
    // Pinned where it is: the request span's scope wraps a reference, so the
    // (large) future is never moved.
    let mut serving = std::pin::pin!(async {
        match state.chaos.fault_for(route) {
            None => next.run(req).await,
            Some(fault) => chaos::inject(fault, &state.metrics, req, next).await,
        }
    });
    let mut response = request.serve(serving.as_mut()).await;
    let status = response.status();
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    let cause = response.extensions().get::<InternalCause>().map(|c| c.0.clone());
    // The access line, written in the request's span so every log layer
    // sees its ids.
    request.finish(Some(&state.metrics.http), route, &mut response, code, |latency_ms| {
        if let Some(cause) = cause {
            tracing::error!(target: ACCESS, method, route, status = status.as_u16(), latency_ms, error_code = code, cause, "request failed");
        } else if route != "/metrics" && route != "/healthz" {
            tracing::info!(target: ACCESS, method, route, status = status.as_u16(), latency_ms, error_code = code, "request");
        }
    });
    response
}

/// Errors raised outside our handlers (unknown method, a body over the
/// limit, a timeout) arrive without a JSON body; give them one.
async fn json_errors(req: Request, next: Next) -> Response {
    let body_deadline = req.extensions().get::<serving::BodyTimedOut>().cloned();
    let response = next.run(req).await;
    // The client did not send its body in time: whatever the extractor made
    // of the failed read, it is the client's 408, not our 5xx.
    if body_deadline.is_some_and(|d| d.fired()) {
        return error_response(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "the request body did not arrive in time",
        );
    }
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.extensions().get::<ErrorCode>().is_some() {
        return response;
    }
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "this route does not take that method"),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "the request body is too large"),
        StatusCode::SERVICE_UNAVAILABLE => ("TIMEOUT", "the request took too long"),
        StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "the request did not arrive in time"),
        StatusCode::NOT_FOUND => ("ROUTE_NOT_FOUND", "no such route"),
        s if s.is_server_error() => ("INTERNAL", "an unexpected error occurred"),
        _ => ("BAD_REQUEST", "the request is invalid"),
    };
    let mut fixed = error_response(status, code, message);
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// The operations of this router, as `(METHOD, /path/{param})`, for the
/// OpenAPI conformance test.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    [
        users::ROUTES,
        concerts::ROUTES,
        queue::ROUTES,
        reservations::ROUTES,
        payments::ROUTES,
        chaos::ROUTES,
        controls::ROUTES,
        ops::ROUTES,
    ]
    .concat()
}

/// A timestamp field in a response.
pub(crate) fn ts(ms: i64) -> String {
    crate::domain::clock::rfc3339(ms)
}

/// The OpenAPI 3 document served at `/openapi.json`.
pub fn ops_openapi() -> &'static str {
    ops::OPENAPI
}
