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

use std::{sync::Arc, time::Instant};

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
    queue::Queue,
    settings::Settings,
    store::Store,
    telemetry::{ACCESS, metrics::Metrics, spans},
};
use error::{ErrorCode, InternalCause, error_response};

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

/// The response header that carries the request's trace id.
const X_TRACE_ID: header::HeaderName = header::HeaderName::from_static("x-trace-id");
/// The incoming W3C trace context.
const TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");

/// The request's span (semantic-convention attributes, parent taken from an
/// incoming W3C `traceparent`), one log line and one metrics update per
/// request with the route template (never the raw path), and the trace id on
/// the response so a user's report can be found.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = known_method(req.method());
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let span = spans::RequestSpan::start(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    // For the span's `url.path`; a clone shares the request line's bytes.
    let uri = span.as_ref().map(|_| req.uri().clone());
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
    let mut response = match &span {
        Some(span) => span.serve(serving.as_mut()).await,
        None => serving.await,
    };
    let elapsed = started.elapsed();
    let status = response.status();
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    let trace = span.as_ref().map(|s| s.cx);
    let sampled = trace.filter(|cx| cx.sampled).map(|cx| cx.trace_id);
    state.metrics.observe_http(method, route, status.as_str(), elapsed.as_secs_f64(), sampled);
    let trace_hex = trace.map(|cx| cx.trace_id.hex());
    if let Some(hex) = &trace_hex
        && let Ok(value) = header::HeaderValue::from_bytes(hex)
    {
        response.headers_mut().insert(X_TRACE_ID, value);
    }
    // The access line, written in the request's span so every log layer
    // sees its ids. To the microsecond: finer is noise, and the line stays
    // short.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    let write_line = || {
        if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
            tracing::error!(target: ACCESS, method, route, status = status.as_u16(), latency_ms, error_code = code, cause, "request failed");
        } else if route != "/metrics" && route != "/healthz" {
            tracing::info!(target: ACCESS, method, route, status = status.as_u16(), latency_ms, error_code = code, "request");
        }
    };
    match &span {
        Some(span) => span.in_scope(write_line),
        None => write_line(),
    }
    if let (Some(span), Some(uri)) = (span, uri) {
        use crate::telemetry::otlp::Value::{Int, Str};
        let failed = status.is_server_error();
        let attributes = [
            ("http.request.method", Str(method)),
            ("http.route", Str(route)),
            ("url.path", Str(uri.path())),
            ("http.response.status_code", Int(i64::from(status.as_u16()))),
            ("error.type", Str(code.unwrap_or("INTERNAL"))),
        ];
        // `error.type`, the last, only on failures.
        let attributes = if failed { &attributes[..] } else { &attributes[..attributes.len() - 1] };
        // The semantic conventions name an unknown method's span "HTTP".
        let name = if method == OTHER_METHOD { "HTTP" } else { method };
        span.end(elapsed, &[name, " ", route], attributes, failed);
    }
    response
}

/// What the metrics, the span and the log line call a method the HTTP
/// specification does not define: hyper accepts any token as a method, and
/// each new one would otherwise add label values that are never freed (the
/// OpenTelemetry semantic conventions' `_OTHER`).
const OTHER_METHOD: &str = "_OTHER";

fn known_method(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => OTHER_METHOD,
    }
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
