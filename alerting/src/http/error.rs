//! The one error type of the HTTP API. Every error leaves as
//! `{"error":{"code","message"}}` with a stable UPPER_SNAKE code, including
//! the framework's own (unknown method, bad JSON, body too large, panic).
//! Unexpected failures become an opaque 500; their cause rides on the
//! response and is logged once by [`json_errors`], never sent.

use axum::{
    Json,
    extract::{Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{incidents::IncidentError, service::ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request cannot be served as sent.
    #[error("{message}")]
    Client { status: StatusCode, code: &'static str, message: String },
    /// A failure the client cannot act on.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T, E = ApiError> = Result<T, E>;

/// The code of an error response, so [`json_errors`] leaves it alone.
#[derive(Debug, Clone, Copy)]
struct ErrorCode;

/// The hidden cause of a 500, for the log only.
#[derive(Debug, Clone)]
struct InternalCause(String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client { status, code, message: message.into() }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

/// The JSON envelope; also used for errors raised outside handlers.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response();
    response.extensions_mut().insert(ErrorCode);
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client { status, code, message } => {
                let mut response = error_response(status, code, &message);
                if status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"alerting\""));
                }
                response
            }
            ApiError::Internal(cause) => {
                let mut response =
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "an unexpected error occurred");
                response.extensions_mut().insert(InternalCause(cause));
                response
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Incident(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::NotFound(_) | IncidentError::SilenceNotFound(_) => Self::not_found(e.to_string()),
            IncidentError::Resolved(_) => Self::new(StatusCode::CONFLICT, "ALREADY_RESOLVED", e.to_string()),
            other => ApiError::Internal(format!("incident store: {other}")),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        match e.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => unsupported_media_type(),
            StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            _ => Self::bad(e.body_text()),
        }
    }
}

pub fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "send the body as JSON, with `Content-Type: application/json`",
    )
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("the request body is over {} KiB", super::BODY_LIMIT / 1024),
    )
}

/// Errors raised outside our handlers (an unknown method, a body over the
/// limit) arrive without a JSON body: give them one, keeping their headers
/// (a 405's `Allow`). Logs the cause of every 500, once.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let body_deadline = req.extensions().get::<serving::BodyTimedOut>().cloned();
    let response = next.run(req).await;
    // The client did not send its body in time: its 408, not our 5xx.
    if body_deadline.is_some_and(|d| d.fired()) {
        return error_response(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "the request body did not arrive in time",
        );
    }
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(cause, "request failed");
    }
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.extensions().get::<ErrorCode>().is_some() {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "this route does not take that method"),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("UNSUPPORTED_MEDIA_TYPE", "send the body as JSON, with `Content-Type: application/json`")
        }
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such endpoint"),
        StatusCode::SERVICE_UNAVAILABLE => ("TIMEOUT", "the request took too long"),
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

/// A panicking handler answers an opaque 500 (and is logged) instead of
/// dropping the connection.
pub fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let cause = cause
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| cause.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a handler panicked".into());
    ApiError::Internal(format!("panic: {cause}")).into_response()
}
