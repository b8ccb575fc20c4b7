//! Seats of a performance, and holds on them.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    error::{ApiError, Result},
    extract::{ApiJson, AuthUser, QueuePlace, parse_id},
    ts,
};
use crate::{
    queue::SeatFlag,
    store::{HoldRequest, Reservation, SeatStatus, StoreError, Taken},
};

pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/performances/{performance_id}/seats"),
    ("POST", "/v1/reservations"),
    ("GET", "/v1/reservations/{reservation_id}"),
    ("DELETE", "/v1/reservations/{reservation_id}"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/performances/{performance_id}/seats", get(seats))
        .route("/v1/reservations", post(hold))
        .route("/v1/reservations/{reservation_id}", get(show).delete(release))
}

async fn seats(
    State(s): State<AppState>,
    user: AuthUser,
    place: QueuePlace,
    Path(raw): Path<String>,
) -> Result<Response> {
    let place = place.of(user)?;
    let performance_id = parse_id(&raw, "performance_id")?;
    s.require_active(place, None).await?;
    let map = match s.caches.seat_map(performance_id) {
        Some(map) => map,
        None => {
            let concert_id = s.store.performance_concert(performance_id).await?;
            let seats = s.store.seats(performance_id, s.clock.now_ms()).await?;
            s.caches.put_seat_map(performance_id, concert_id, seats)
        }
    };
    // A map is only shown to holders of a place in its own concert.
    if map.concert_id != place.concert_id {
        return Err(ApiError::not_found("PERFORMANCE_NOT_FOUND", "performance not found in your queue's concert"));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], map.body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    seat_id: i64,
}

pub(crate) fn reservation_json(r: &Reservation) -> Value {
    json!({
        "reservation_id": r.reservation_id,
        "seat_id": r.seat_id,
        "performance_id": r.performance_id,
        "status": r.status,
        "expires_at": ts(r.expires_at),
        "price": r.price,
        "payment_id": r.payment_id,
    })
}

/// Holds a seat. A seat the queue already knows to be taken is refused
/// without touching the database; every grant is decided by the database.
async fn hold(
    State(s): State<AppState>,
    user: AuthUser,
    place: QueuePlace,
    ApiJson(body): ApiJson<HoldBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let place = place.of(user)?;
    let gate = s.require_active(place, Some(body.seat_id)).await?;
    let holds = &s.metrics.holds;
    if gate.seat_taken {
        holds.with_label_values(&["rejected_fast"]).inc();
        return Err(StoreError::SeatUnavailable.into());
    }
    let now = s.clock.now_ms();
    let req = HoldRequest {
        user_id: user.0,
        concert_id: place.concert_id,
        seat_id: body.seat_id,
        now,
        expires_at: now + s.settings.hold_duration.as_millis() as i64,
        max_holds: s.settings.max_holds_per_user,
    };
    match s.store.hold_seat(&req).await {
        Ok(r) => {
            holds.with_label_values(&["held"]).inc();
            s.caches.seat_changed(r.concert_id, r.performance_id, r.seat_id, SeatStatus::Held);
            remember_seat(&s, r.concert_id, r.seat_id, SeatFlag::HeldUntil(r.expires_at));
            Ok((StatusCode::CREATED, Json(reservation_json(&r))))
        }
        Err((e, taken)) => {
            let outcome = match &e {
                StoreError::SeatUnavailable => "conflict",
                StoreError::HoldLimitReached => "limit",
                StoreError::NotFound(_) => "not_found",
                _ => "error",
            };
            holds.with_label_values(&[outcome]).inc();
            if let Some(taken) = taken {
                let flag = match taken {
                    Taken::Sold => SeatFlag::Sold,
                    Taken::HeldUntil(until) => SeatFlag::HeldUntil(until),
                };
                remember_seat(&s, place.concert_id, body.seat_id, flag);
            }
            Err(e.into())
        }
    }
}

/// Tells the fast path about a seat (see [`crate::queue::Queue::remember_seat`]).
pub(crate) fn remember_seat(s: &AppState, concert_id: i64, seat_id: i64, flag: SeatFlag) {
    s.queue.remember_seat(concert_id, seat_id, flag, s.clock.now_ms());
}

fn reservation_id(raw: &str) -> Result<&str> {
    // Ids are UUIDs; anything else cannot exist.
    uuid::Uuid::parse_str(raw)
        .map(|_| raw)
        .map_err(|_| ApiError::not_found("RESERVATION_NOT_FOUND", "reservation not found"))
}

async fn show(State(s): State<AppState>, user: AuthUser, Path(raw): Path<String>) -> Result<Json<Value>> {
    let r = s.store.reservation(reservation_id(&raw)?, user.0, s.clock.now_ms()).await?;
    Ok(Json(reservation_json(&r)))
}

async fn release(State(s): State<AppState>, user: AuthUser, Path(raw): Path<String>) -> Result<Json<Value>> {
    let r = s.store.release(reservation_id(&raw)?, user.0, s.clock.now_ms()).await?;
    s.caches.seat_changed(r.concert_id, r.performance_id, r.seat_id, SeatStatus::Available);
    s.queue.forget_seat(r.concert_id, r.seat_id).await;
    Ok(Json(reservation_json(&r)))
}
