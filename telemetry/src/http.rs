//! One HTTP server request's telemetry, the same in every service: its
//! server span (semantic-convention attributes, the parent taken from an
//! incoming W3C `traceparent`), its metrics, the trace id on the response
//! (`X-Trace-Id`, so a user's report can be found), and the access line,
//! which the service writes (its target is the service's own) in the
//! request's scope.

use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};

use crate::{
    metrics::HttpMetrics,
    otlp::Value::{Int, Str},
    spans::RequestSpan,
};

/// The response header that carries the request's trace id.
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// The incoming W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What the metrics, the span and the log line call a method the HTTP
/// specification does not define: hyper accepts any token as a method, and
/// each new one would otherwise add label values that are never freed (the
/// OpenTelemetry semantic conventions' `_OTHER`).
pub const OTHER_METHOD: &str = "_OTHER";

/// The method's name, or [`OTHER_METHOD`].
pub fn known_method(method: &Method) -> &'static str {
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

/// A request being served. Start it before the handler runs, serve the
/// handler in it, then [`ServerRequest::finish`] with the response.
pub struct ServerRequest {
    started: Instant,
    method: &'static str,
    span: Option<RequestSpan>,
    /// For the span's `url.path`; a clone shares the request line's bytes.
    uri: Option<Uri>,
}

impl ServerRequest {
    pub fn start(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        let span = RequestSpan::start(headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()));
        let uri = span.as_ref().map(|_| uri.clone());
        Self { started: Instant::now(), method: known_method(method), span, uri }
    }

    /// The method as the metrics, span and log line name it.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// Runs the handler with this request's span current (pass a pinned
    /// `&mut` for a large future: it is never moved).
    pub async fn serve<F: Future>(&self, handler: F) -> F::Output {
        match &self.span {
            Some(span) => span.serve(handler).await,
            None => handler.await,
        }
    }

    /// Ends the request: counts it in `metrics` (if any) under `route` (the
    /// template, never the raw path), puts `X-Trace-Id` on `response`, calls
    /// `access_line(latency_ms)` in the request's scope (so the line carries
    /// its ids), and exports the span. `error_code` is the error the
    /// response carries (the span's `error.type` when it is a 5xx).
    pub fn finish<B>(
        self,
        metrics: Option<&HttpMetrics>,
        route: &str,
        response: &mut Response<B>,
        error_code: Option<&str>,
        access_line: impl FnOnce(f64),
    ) {
        let elapsed = self.started.elapsed();
        let status = response.status();
        let trace = self.span.as_ref().map(|s| s.cx);
        if let Some(metrics) = metrics {
            let sampled = trace.filter(|cx| cx.sampled).map(|cx| cx.trace_id);
            metrics.observe(self.method, route, status.as_str(), elapsed.as_secs_f64(), sampled);
        }
        if let Some(cx) = trace
            && let Ok(value) = HeaderValue::from_bytes(&cx.trace_id.hex())
        {
            response.headers_mut().insert(X_TRACE_ID, value);
        }
        // To the microsecond: finer is noise, and the line stays short.
        let latency_ms = elapsed.as_micros() as f64 / 1000.0;
        match &self.span {
            Some(span) => span.in_scope(|| access_line(latency_ms)),
            None => access_line(latency_ms),
        }
        if let (Some(span), Some(uri)) = (self.span, self.uri) {
            let failed = status.is_server_error();
            let attributes = [
                ("http.request.method", Str(self.method)),
                ("http.route", Str(route)),
                ("url.path", Str(uri.path())),
                ("http.response.status_code", Int(i64::from(status.as_u16()))),
                ("error.type", Str(error_code.unwrap_or("INTERNAL"))),
            ];
            // `error.type`, the last, only on failures.
            let attributes = if failed { &attributes[..] } else { &attributes[..attributes.len() - 1] };
            // The semantic conventions name an unknown method's span "HTTP".
            let name = if self.method == OTHER_METHOD { "HTTP" } else { self.method };
            span.end(elapsed, &[name, " ", route], attributes, failed);
        }
    }
}
