//! The waiting queue: join it, and poll your place.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::{get, post}};
use serde::{Deserialize, Serialize};

use super::{
    AppState, ts,
    error::{ApiError, Result},
    extract::{ApiJson, AuthUser, QueuePlace},
};
use crate::{
    domain::{clock::Millis, queue::estimated_wait_seconds, rate_limit::TokenBucket, tokens::QueueClaims},
    queue::{AdmissionPolicy, PlaceStatus},
};

pub const ROUTES: &[(&str, &str)] = &[("POST", "/v1/queue/tokens"), ("GET", "/v1/queue/tokens/current")];

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/queue/tokens", post(enter)).route("/v1/queue/tokens/current", get(current))
}

impl AppState {
    /// The policy as it stands now: batch and interval may have been
    /// changed at run time (`PUT /v1/admin/queue/admission`).
    pub fn admission_policy(&self) -> AdmissionPolicy {
        let s = &self.settings;
        let tuning = *self.admission.borrow();
        AdmissionPolicy {
            batch: tuning.batch,
            interval_ms: tuning.interval_ms,
            max_active: s.admission_max_active,
            window_ms: s.active_window.as_millis() as i64,
        }
    }

    /// The caller's place, which must be active.
    pub(crate) async fn require_active(&self, place: QueueClaims, seat_id: Option<i64>) -> Result<crate::queue::Gate> {
        let gate = self.queue.gate(place, seat_id, self.clock.now_ms()).await?;
        match gate.status {
            PlaceStatus::Active { .. } => Ok(gate),
            PlaceStatus::Waiting { .. } => {
                Err(ApiError::forbidden("QUEUE_TOKEN_NOT_ACTIVE", "you are still waiting in line"))
            }
            PlaceStatus::Expired => Err(ApiError::forbidden("QUEUE_TOKEN_NOT_ACTIVE", "the queue token has expired")),
        }
    }
}

/// A place in line as the API shows it. A struct, not a `json!` map: the
/// poll is the sale's most frequent request, and a map allocates every key.
/// Fields are in alphabetical order, as the map wrote them.
#[derive(Serialize)]
struct PlaceView {
    active_until: Option<String>,
    estimated_wait_seconds: i64,
    position: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_token: Option<String>,
    status: &'static str,
}

fn describe(status: PlaceStatus, policy: AdmissionPolicy, now: Millis) -> PlaceView {
    let (name, position, last_tick, until) = match status {
        PlaceStatus::Waiting { position, last_tick } => ("WAITING", position, last_tick, None),
        PlaceStatus::Active { until } => ("ACTIVE", 0, None, Some(ts(until))),
        PlaceStatus::Expired => ("EXPIRED", 0, None, None),
    };
    PlaceView {
        active_until: until,
        estimated_wait_seconds: estimated_wait_seconds(position, policy.batch, policy.interval_ms, last_tick, now),
        position,
        queue_token: None,
        status: name,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enter {
    concert_id: i64,
}

/// The process-wide limit on queue entries: a token bucket, off unless
/// configured (`QUEUE_ENTRY_RATE_LIMIT`) or turned on at run time. While
/// off it costs one atomic load.
#[derive(Debug, Default)]
pub struct EntryRateLimit {
    on: AtomicBool,
    bucket: Mutex<Option<TokenBucket>>,
}

impl EntryRateLimit {
    pub fn new(per_second: Option<u32>, now: Millis) -> Self {
        let limit = Self::default();
        limit.set(per_second, now);
        limit
    }

    /// Limits entries to `per_second` (a full bucket to start), or lifts the
    /// limit with `None`.
    pub fn set(&self, per_second: Option<u32>, now: Millis) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        *bucket = per_second.map(|n| TokenBucket::new(n, now));
        self.on.store(bucket.is_some(), Ordering::Release);
    }

    /// Entries allowed per second, when limited.
    pub fn per_second(&self) -> Option<u32> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner()).map(|b| b.per_second())
    }

    /// Lets one entry through, or says how many seconds to wait.
    pub fn admit(&self, now: Millis) -> Result<()> {
        if !self.on.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        match bucket.as_mut().map(|b| b.take(now)) {
            Some(Err(retry_after)) => Err(ApiError::RateLimited {
                message: format!("too many queue entries right now; retry in {retry_after} s"),
                retry_after,
            }),
            _ => Ok(()),
        }
    }
}

async fn enter(State(s): State<AppState>, user: AuthUser, ApiJson(body): ApiJson<Enter>) -> Result<(StatusCode, Json<PlaceView>)> {
    s.entry_limit.admit(s.clock.now_ms())?;
    let known = s.caches.known_concerts.read().unwrap_or_else(|p| p.into_inner()).contains(&body.concert_id);
    if !known {
        if !s.store.concert_exists(body.concert_id).await? {
            return Err(ApiError::not_found("CONCERT_NOT_FOUND", "concert not found"));
        }
        s.caches.known_concerts.write().unwrap_or_else(|p| p.into_inner()).insert(body.concert_id);
    }
    let now = s.clock.now_ms();
    let place = s.queue.enter(body.concert_id, user.0, now).await?;
    let token = s.keys.issue_queue(QueueClaims { concert_id: body.concert_id, user_id: user.0, seq: place.seq });
    let mut out = describe(place.status, s.admission_policy(), now);
    out.queue_token = Some(token);
    let status = if place.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(out)))
}

/// The hot poll: a signature check and one queue round trip, no database.
async fn current(State(s): State<AppState>, QueuePlace(place): QueuePlace) -> Result<Json<PlaceView>> {
    let now = s.clock.now_ms();
    let gate = s.queue.gate(place, None, now).await?;
    Ok(Json(describe(gate.status, s.admission_policy(), now)))
}
