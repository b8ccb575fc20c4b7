//! The one error type of the HTTP API.
//!
//! Every error leaves as `{"error":{"code":"...","message":"..."}}` with a
//! stable UPPER_SNAKE code. Unexpected failures become an opaque 500; their
//! cause is attached to the response and logged once by the request-log
//! middleware, never sent to the client.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{queue::QueueError, store::StoreError};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum ApiError {
    /// The client's request cannot be served as sent.
    Client { status: StatusCode, code: &'static str, message: String },
    /// A dependency is away; the client should retry after `retry_after` seconds.
    Unavailable { code: &'static str, message: String, retry_after: u32 },
    /// Over a rate limit; the client should retry after `retry_after` seconds.
    RateLimited { message: String, retry_after: u32 },
    /// A failure the client cannot act on.
    Internal(String),
}

/// The error code of a response, for the request log and the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// The hidden cause of a 500, for the request log only.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Client { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

/// Builds the JSON error body; also used for errors raised outside handlers.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response();
    response.extensions_mut().insert(ErrorCode(code));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client { status, code, message } => error_response(status, code, &message),
            ApiError::Unavailable { code, message, retry_after } => {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, code, &message);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
            ApiError::RateLimited { message, retry_after } => {
                let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", &message);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                let code = match what {
                    "concert" => "CONCERT_NOT_FOUND",
                    "performance" => "PERFORMANCE_NOT_FOUND",
                    "seat" => "SEAT_NOT_FOUND",
                    "reservation" => "RESERVATION_NOT_FOUND",
                    "user" => "USER_NOT_FOUND",
                    _ => "NOT_FOUND",
                };
                ApiError::not_found(code, format!("{what} not found"))
            }
            StoreError::SeatUnavailable => ApiError::conflict("SEAT_UNAVAILABLE", "the seat is held or sold"),
            StoreError::HoldLimitReached => {
                ApiError::conflict("HOLD_LIMIT_REACHED", "you already hold the most seats allowed for this performance")
            }
            StoreError::HoldExpired => {
                ApiError::conflict("HOLD_EXPIRED", "the hold has expired; reserve the seat again")
            }
            StoreError::NotPayable => {
                ApiError::conflict("RESERVATION_NOT_PAYABLE", "the reservation is not a live hold of yours")
            }
            StoreError::NotHeld => ApiError::conflict("RESERVATION_NOT_HELD", "the reservation is no longer held"),
            StoreError::OtherConcert => ApiError::forbidden(
                "QUEUE_TOKEN_WRONG_CONCERT",
                "the queue token admits to another concert than this reservation's; pay with that concert's queue token",
            ),
            StoreError::InsufficientBalance { balance, price } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "INSUFFICIENT_BALANCE",
                format!("the balance of {balance} won does not cover the price of {price} won"),
            ),
            StoreError::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used with a different request",
            ),
            StoreError::Constraint(_) => ApiError::conflict("CONFLICT", "the request conflicts with existing data"),
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => ApiError::Unavailable {
                    code: "DATABASE_UNAVAILABLE",
                    message: "the database is busy or unreachable".into(),
                    retry_after: 1,
                },
                other => ApiError::Internal(format!("database: {other}")),
            },
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let QueueError::Unavailable(cause) = e;
        tracing::warn!(cause, "queue backend unavailable");
        ApiError::Unavailable {
            code: "QUEUE_UNAVAILABLE",
            message: "the waiting queue is unavailable".into(),
            retry_after: 5,
        }
    }
}
