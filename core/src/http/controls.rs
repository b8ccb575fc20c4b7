//! Controls runbooks turn while the service runs: the admission batch and
//! interval, the queue-entry rate limit, and the in-process caches.
//!
//! Each acts on this instance only and lasts until it restarts; with several
//! replicas, call every one (the settings give the values a restart brings back).

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    error::{ApiError, Result},
    extract::{Admin, ApiJson},
};
use crate::queue::AdmissionTuning;

pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/admin/queue/admission"),
    ("PUT", "/v1/admin/queue/admission"),
    ("POST", "/v1/admin/caches/flush"),
    ("GET", "/v1/admin/rate-limit"),
    ("PUT", "/v1/admin/rate-limit"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/queue/admission", get(admission).put(tune_admission))
        .route("/v1/admin/caches/flush", post(flush_caches))
        .route("/v1/admin/rate-limit", get(rate_limit).put(set_rate_limit))
}

/// Users admitted per tick and concert.
const BATCH_RANGE: std::ops::RangeInclusive<i64> = 1..=100_000;
/// Time between ticks: from a tenth of a second to an hour.
const INTERVAL_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=3_600_000;
/// Queue entries per second.
const PER_SECOND_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;

fn admission_view(s: &AppState) -> Json<Value> {
    let policy = s.admission_policy();
    Json(json!({
        "batch": policy.batch,
        "interval_ms": policy.interval_ms,
        "active_window_secs": s.settings.active_window.as_secs(),
    }))
}

async fn admission(State(s): State<AppState>, _: Admin) -> Json<Value> {
    admission_view(&s)
}

/// Either field may be left out to keep its value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdmissionBody {
    batch: Option<i64>,
    interval_ms: Option<i64>,
}

fn tuned(now: AdmissionTuning, body: AdmissionBody) -> Result<AdmissionTuning> {
    let bad = |msg: String| ApiError::bad_request("INVALID_ADMISSION", msg);
    if body.batch.is_none() && body.interval_ms.is_none() {
        return Err(bad("send batch, interval_ms or both".into()));
    }
    let batch = body.batch.unwrap_or(now.batch);
    let interval_ms = body.interval_ms.unwrap_or(now.interval_ms);
    if !BATCH_RANGE.contains(&batch) {
        return Err(bad(format!("batch must be {} to {}", BATCH_RANGE.start(), BATCH_RANGE.end())));
    }
    if !INTERVAL_MS_RANGE.contains(&interval_ms) {
        return Err(bad(format!("interval_ms must be {} to {}", INTERVAL_MS_RANGE.start(), INTERVAL_MS_RANGE.end())));
    }
    Ok(AdmissionTuning { batch, interval_ms })
}

async fn tune_admission(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<AdmissionBody>,
) -> Result<Json<Value>> {
    let before = *s.admission.borrow();
    let after = tuned(before, body)?;
    s.admission.send_replace(after);
    tracing::info!(
        batch = after.batch,
        interval_ms = after.interval_ms,
        previous_batch = before.batch,
        previous_interval_ms = before.interval_ms,
        "admission tuned"
    );
    Ok(admission_view(&s))
}

async fn flush_caches(State(s): State<AppState>, _: Admin) -> Json<Value> {
    let flushed = s.caches.flush();
    tracing::info!(seat_maps = flushed.seat_maps, known_concerts = flushed.known_concerts, "caches flushed");
    Json(json!({ "flushed": flushed }))
}

fn rate_limit_view(s: &AppState) -> Json<Value> {
    let per_second = s.entry_limit.per_second();
    Json(json!({ "enabled": per_second.is_some(), "per_second": per_second }))
}

async fn rate_limit(State(s): State<AppState>, _: Admin) -> Json<Value> {
    rate_limit_view(&s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    enabled: bool,
    per_second: Option<i64>,
}

fn limit_of(body: RateLimitBody) -> Result<Option<u32>> {
    if !body.enabled {
        return Ok(None);
    }
    match body.per_second {
        Some(n) if PER_SECOND_RANGE.contains(&n) => Ok(Some(n as u32)),
        _ => Err(ApiError::bad_request(
            "INVALID_RATE_LIMIT",
            format!("enabled needs per_second from {} to {}", PER_SECOND_RANGE.start(), PER_SECOND_RANGE.end()),
        )),
    }
}

async fn set_rate_limit(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<RateLimitBody>,
) -> Result<Json<Value>> {
    let per_second = limit_of(body)?;
    s.entry_limit.set(per_second, s.clock.now_ms());
    tracing::info!(per_second, "queue entry rate limit {}", if per_second.is_some() { "set" } else { "lifted" });
    Ok(rate_limit_view(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_keeps_what_is_not_sent_and_refuses_out_of_range_values() {
        let now = AdmissionTuning { batch: 500, interval_ms: 15_000 };
        let body = |batch, interval_ms| AdmissionBody { batch, interval_ms };
        assert_eq!(tuned(now, body(Some(20), None)).unwrap(), AdmissionTuning { batch: 20, interval_ms: 15_000 });
        assert_eq!(tuned(now, body(None, Some(100))).unwrap(), AdmissionTuning { batch: 500, interval_ms: 100 });
        assert!(tuned(now, body(None, None)).is_err());
        assert!(tuned(now, body(Some(0), None)).is_err());
        assert!(tuned(now, body(Some(100_001), None)).is_err());
        assert!(tuned(now, body(None, Some(99))).is_err());
        assert!(tuned(now, body(None, Some(3_600_001))).is_err());
    }

    #[test]
    fn a_rate_limit_needs_a_positive_rate_only_when_enabled() {
        let body = |enabled, per_second| RateLimitBody { enabled, per_second };
        assert_eq!(limit_of(body(true, Some(50))).unwrap(), Some(50));
        assert_eq!(limit_of(body(false, None)).unwrap(), None);
        assert_eq!(limit_of(body(false, Some(-1))).unwrap(), None);
        assert!(limit_of(body(true, None)).is_err());
        assert!(limit_of(body(true, Some(0))).is_err());
        assert!(limit_of(body(true, Some(1_000_001))).is_err());
    }
}
