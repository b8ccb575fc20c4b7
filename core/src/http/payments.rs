//! Payment of a held seat from the balance.

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    error::{ApiError, Result},
    extract::{ApiJson, AuthUser, IdempotencyKey, QueuePlace},
    reservations::remember_seat,
};
use crate::{
    queue::SeatFlag,
    store::{SeatStatus, StoreError},
};

pub const ROUTES: &[(&str, &str)] = &[("POST", "/v1/payments")];

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/payments", post(pay))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    reservation_id: String,
}

async fn pay(
    State(s): State<AppState>,
    user: AuthUser,
    place: QueuePlace,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<PayBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let place = place.of(user)?;
    if uuid::Uuid::parse_str(&body.reservation_id).is_err() {
        return Err(ApiError::not_found("RESERVATION_NOT_FOUND", "reservation not found"));
    }
    // A successful payment ends the queue place, so a retry of it arrives
    // with an expired place: let the store replay it before refusing.
    let active = s.require_active(place, None).await;
    let result = match active {
        Ok(_) => s.store.pay(user.0, &key, &body.reservation_id, place.concert_id, s.clock.now_ms()).await,
        Err(refusal) => match s.store.replay_payment(user.0, &key, &body.reservation_id).await? {
            Some(first) => Ok(first),
            None => return Err(refusal),
        },
    };
    let outcome = match &result {
        Ok(r) if r.replayed => "replayed",
        Ok(_) => "paid",
        Err(StoreError::InsufficientBalance { .. }) => "insufficient_balance",
        Err(StoreError::HoldExpired) => "hold_expired",
        Err(StoreError::Database(_)) => "error",
        Err(_) => "refused",
    };
    s.metrics.payments.with_label_values(&[outcome]).inc();
    let receipt = result?;
    if !receipt.replayed {
        s.caches.seat_changed(place.concert_id, receipt.value.performance_id, receipt.value.seat_id, SeatStatus::Sold);
        remember_seat(&s, place.concert_id, receipt.value.seat_id, SeatFlag::Sold);
        if let Err(e) = s.queue.finish(place).await {
            // The place lapses at the end of its window anyway.
            tracing::warn!(error = %e, "queue place not ended after payment");
        }
    }
    let r = receipt.value;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "payment_id": r.payment_id,
            "reservation_id": r.reservation_id,
            "amount": r.amount,
            "status": "PAID",
            "balance": r.balance,
        })),
    ))
}
