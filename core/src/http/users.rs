//! Users, their bearer tokens, and their balances.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState, ClientIp,
    error::{ApiError, Result},
    extract::{ApiJson, AuthUser, IdempotencyKey},
    ts,
};
use crate::domain::{Won, tokens::UserClaims};

pub const ROUTES: &[(&str, &str)] =
    &[("POST", "/v1/users"), ("GET", "/v1/users/me/balance"), ("POST", "/v1/users/me/balance/charges")];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create))
        .route("/v1/users/me/balance", get(balance))
        .route("/v1/users/me/balance/charges", post(charge))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
}

/// Signs up. Limited per client (`SIGNUP_RATE_PER_MINUTE`): identities are
/// free, and many of them could hoard seats.
async fn create(
    State(s): State<AppState>,
    client: ClientIp,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Value>)> {
    if let Err(refused) = s.client_limits.signup(client, s.clock.now_ms()) {
        s.metrics.client_limited.with_label_values(&["signup"]).inc();
        return Err(refused);
    }
    let name = body.name.trim();
    // PostgreSQL cannot store NUL in text; refused on every backend alike.
    if name.is_empty() || name.chars().count() > 100 || name.contains('\0') {
        return Err(ApiError::bad_request("INVALID_NAME", "name must be 1 to 100 characters, without NUL"));
    }
    let now = s.clock.now_ms();
    let user_id = s.store.create_user(name, now).await?;
    let expires_at = now + s.settings.user_token_ttl.as_millis() as i64;
    let token = s.keys.issue_user(UserClaims { user_id, expires_at });
    Ok((StatusCode::CREATED, Json(json!({ "user_id": user_id, "token": token, "expires_at": ts(expires_at) }))))
}

async fn balance(State(s): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let balance = s.store.balance(user.0).await?;
    Ok(Json(json!({ "user_id": user.0, "balance": balance })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Charge {
    amount: i64,
}

async fn charge(
    State(s): State<AppState>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<Charge>,
) -> Result<(StatusCode, Json<Value>)> {
    let amount = Won::parse(body.amount).map_err(|e| ApiError::bad_request("INVALID_AMOUNT", e.to_string()))?;
    let receipt = s.store.charge(user.0, &key, amount, s.clock.now_ms()).await?;
    if !receipt.replayed {
        s.metrics.charges.inc();
    }
    let r = receipt.value;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "charge_id": r.charge_id, "user_id": r.user_id, "amount": r.amount, "balance": r.balance })),
    ))
}
