//! The waiting queue: join it, and poll your place.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    error::{ApiError, Result},
    extract::{ApiJson, AuthUser, QueuePlace},
    ts,
};
use crate::{
    domain::{
        clock::Millis,
        queue::{estimated_wait_seconds, tick_of},
        rate_limit::TokenBucket,
        tokens::QueueClaims,
    },
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
    /// While waiting, when to poll again (see [`poll_after_seconds`]).
    poll_after_seconds: Option<i64>,
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
    let wait = estimated_wait_seconds(position, policy.batch, policy.interval_ms, last_tick, now);
    PlaceView {
        active_until: until,
        estimated_wait_seconds: wait,
        poll_after_seconds: (name == "WAITING").then(|| poll_after_seconds(wait)),
        position,
        queue_token: None,
        status: name,
    }
}

/// How long a waiting user should wait before polling again: a fifth of
/// the wait estimate, at least 1 s and at most 30 s. The front of the line
/// (admitted at the next tick) polls every second or two; the back, minutes
/// away, every 30 s. With seed 004's sale (20,000 waiting, 500 admitted
/// every 15 s) that is about 1,000 polls a second instead of 20,000, and
/// nobody is told to wait past their own admission by more than a fifth of
/// their wait.
pub fn poll_after_seconds(estimated_wait_seconds: i64) -> i64 {
    (estimated_wait_seconds / 5).clamp(1, 30)
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

async fn enter(
    State(s): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<Enter>,
) -> Result<(StatusCode, Json<PlaceView>)> {
    s.entry_limit.admit(s.clock.now_ms())?;
    let known = s.caches.known_concerts.read().unwrap_or_else(|p| p.into_inner()).contains(&body.concert_id);
    if !known {
        if !s.store.concert_exists(body.concert_id).await? {
            return Err(ApiError::not_found("CONCERT_NOT_FOUND", "concert not found"));
        }
        s.caches.known_concerts.write().unwrap_or_else(|p| p.into_inner()).insert(body.concert_id);
    }
    let now = s.clock.now_ms();
    let policy = s.admission_policy();
    let place = s.queue.enter(body.concert_id, user.0, now, tick_of(now, policy.interval_ms)).await?;
    let token = s.keys.issue_queue(QueueClaims { concert_id: body.concert_id, user_id: user.0, seq: place.seq });
    let mut out = describe(place.status, policy, now);
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

#[cfg(test)]
mod tests {
    use super::poll_after_seconds;
    use crate::domain::queue::estimated_wait_seconds;

    #[test]
    fn the_poll_interval_grows_with_the_wait_and_20000_waiting_poll_about_1000_times_a_second() {
        assert_eq!([0, 4, 10, 15, 60, 149, 150, 600].map(poll_after_seconds), [1, 1, 2, 3, 12, 29, 30, 30]);
        // Seed 004: 20,000 in line, 500 admitted every 15 s, just after a tick.
        let rate: f64 = (1..=20_000)
            .map(|position| 1.0 / poll_after_seconds(estimated_wait_seconds(position, 500, 15_000, Some(0), 0)) as f64)
            .sum();
        assert!((800.0..1_300.0).contains(&rate), "{rate:.0} polls/s");
    }
}
