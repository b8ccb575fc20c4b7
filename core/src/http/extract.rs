//! Extractors: who is calling, with which queue place, and a JSON body whose
//! rejections speak the API's error format.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use super::{AppState, ClientIp, error::ApiError};
use crate::domain::tokens::{QueueClaims, same_secret};

/// The user named by a valid `Authorization: Bearer` token.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub i64);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = header(parts, "authorization")
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::unauthorized("UNAUTHORIZED", "send Authorization: Bearer <token>"))?;
        let claims = state
            .keys
            .verify_user(token.trim(), state.clock.now_ms())
            .map_err(|e| ApiError::unauthorized("UNAUTHORIZED", format!("bearer {e}")))?;
        Ok(AuthUser(claims.user_id))
    }
}

/// The caller's signed queue place from the `Queue-Token` header. Whether
/// it is active is asked of the queue by the handler, together with any seat.
#[derive(Debug, Clone, Copy)]
pub struct QueuePlace(pub QueueClaims);

impl FromRequestParts<AppState> for QueuePlace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = header(parts, "queue-token")
            .ok_or_else(|| ApiError::unauthorized("INVALID_QUEUE_TOKEN", "send the Queue-Token header"))?;
        let claims = state
            .keys
            .verify_queue(token.trim())
            .map_err(|e| ApiError::unauthorized("INVALID_QUEUE_TOKEN", format!("queue {e}")))?;
        Ok(QueuePlace(claims))
    }
}

impl QueuePlace {
    /// The place, if it belongs to `user`.
    pub fn of(self, user: AuthUser) -> Result<QueueClaims, ApiError> {
        if self.0.user_id != user.0 {
            return Err(ApiError::forbidden("QUEUE_TOKEN_MISMATCH", "the queue token belongs to another user"));
        }
        Ok(self.0)
    }
}

/// A client-chosen key that makes a request safe to retry.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let key = header(parts, "idempotency-key")
            .ok_or_else(|| ApiError::bad_request("MISSING_IDEMPOTENCY_KEY", "send an Idempotency-Key header"))?;
        let valid =
            (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ApiError::bad_request(
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }
}

/// Proof of the `X-Admin-Key` header.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    /// A client that sent too many wrong keys lately is refused before its
    /// key is even looked at (see [`super::ADMIN_FAILURES_PER_MINUTE`]).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let client = ClientIp::of(parts, &state.settings.trusted_proxies);
        let now = state.clock.now_ms();
        if let Err(refused) = state.client_limits.admin_allowed(client, now) {
            state.metrics.client_limited.with_label_values(&["admin_key"]).inc();
            return Err(refused);
        }
        let given = header(parts, "x-admin-key").unwrap_or_default();
        if !same_secret(given.as_bytes(), state.settings.admin_key.expose().as_bytes()) {
            state.client_limits.admin_failed(client, now);
            return Err(ApiError::unauthorized("INVALID_ADMIN_KEY", "send a valid X-Admin-Key header"));
        }
        Ok(Admin)
    }
}

fn header<'p>(parts: &'p Parts, name: &str) -> Option<&'p str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `axum::Json` whose rejections are API errors: 400 for malformed JSON and
/// for wrong or missing fields (including numbers out of range), 415 for a
/// missing JSON content type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("MALFORMED_JSON", e.body_text()),
                JsonRejection::JsonDataError(e) => ApiError::bad_request("INVALID_BODY", e.body_text()),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "send Content-Type: application/json",
                ),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the request body is too large")
                }
                other => ApiError::bad_request("INVALID_BODY", other.body_text()),
            }),
        }
    }
}

/// A path id that must be a positive integer; anything else is a 400.
pub fn parse_id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("INVALID_ID", format!("{what} must be a positive integer")))
}
