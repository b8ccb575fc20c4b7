//! The catalogue: concerts, their performances (dates) and seats.

use std::collections::HashSet;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;

use super::{
    ADMIN_BODY_LIMIT, AppState,
    error::{ApiError, Result},
    extract::{Admin, ApiJson, parse_id},
    ts,
};
use crate::{
    domain::clock::Millis,
    store::{NewConcert, NewPerformance, NewSeat},
};

pub const ROUTES: &[(&str, &str)] =
    &[("POST", "/v1/admin/concerts"), ("GET", "/v1/concerts"), ("GET", "/v1/concerts/{concert_id}/performances")];

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/concerts", get(list)).route("/v1/concerts/{concert_id}/performances", get(performances))
}

/// Concert creation carries whole seat maps, so it takes bodies up to
/// [`ADMIN_BODY_LIMIT`]. axum's JSON extractor has a limit of its own (2 MB by
/// default), raised to the same value so that the documented limit is the real one.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/concerts", post(create))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(ADMIN_BODY_LIMIT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcertBody {
    title: String,
    performances: Vec<PerformanceBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerformanceBody {
    starts_at: String,
    seats: Vec<SeatBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeatBody {
    seat_no: String,
    grade: String,
    price: i64,
}

/// A trimmed text of 1 to `max` characters. PostgreSQL cannot store NUL in
/// text; it is refused on every backend alike.
fn is_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.contains('\0')
}

/// A start time whose year, as written, is 0002 to 9998: whatever its offset,
/// the instant then lies in the years 0001 to 9999, which every response can
/// write back as RFC 3339.
fn parse_starts_at(s: &str) -> Option<Millis> {
    use chrono::Datelike;
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    (2..=9998).contains(&t.year()).then(|| t.timestamp_millis())
}

fn validate(body: ConcertBody) -> Result<NewConcert> {
    let bad = |msg: String| ApiError::bad_request("INVALID_CONCERT", msg);
    let title = body.title.trim().to_owned();
    if !is_text(&title, 200) {
        return Err(bad("title must be 1 to 200 characters, without NUL".into()));
    }
    if body.performances.is_empty() || body.performances.len() > 100 {
        return Err(bad("a concert has 1 to 100 performances".into()));
    }
    let mut performances = Vec::with_capacity(body.performances.len());
    for (i, p) in body.performances.into_iter().enumerate() {
        let starts_at = parse_starts_at(&p.starts_at).ok_or_else(|| {
            bad(format!("performances[{i}].starts_at must be an RFC 3339 timestamp in the years 0002 to 9998"))
        })?;
        if p.seats.is_empty() || p.seats.len() > 5000 {
            return Err(bad(format!("performances[{i}] must have 1 to 5000 seats")));
        }
        let mut seen = HashSet::with_capacity(p.seats.len());
        let mut seats = Vec::with_capacity(p.seats.len());
        for (j, s) in p.seats.into_iter().enumerate() {
            let seat_no = s.seat_no.trim().to_owned();
            let grade = s.grade.trim().to_owned();
            if !is_text(&seat_no, 20) || !is_text(&grade, 20) {
                return Err(bad(format!(
                    "performances[{i}].seats[{j}]: seat_no and grade must be 1 to 20 characters, without NUL"
                )));
            }
            if !(0..=crate::domain::money::MAX_CHARGE).contains(&s.price) {
                return Err(bad(format!("performances[{i}].seats[{j}].price must be 0 to 1000000000")));
            }
            if !seen.insert(seat_no.clone()) {
                return Err(bad(format!("performances[{i}] repeats seat_no {seat_no:?}")));
            }
            seats.push(NewSeat { seat_no, grade, price: s.price });
        }
        performances.push(NewPerformance { starts_at, seats });
    }
    Ok(NewConcert { title, performances })
}

async fn create(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<ConcertBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let concert = validate(body)?;
    let created = s.store.create_concert(&concert, s.clock.now_ms()).await?;
    let performances: Vec<Value> = created
        .performances
        .iter()
        .map(
            |p| json!({ "performance_id": p.performance_id, "starts_at": ts(p.starts_at), "seat_count": p.seat_count }),
        )
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "concert_id": created.concert_id, "title": created.title, "performances": performances })),
    ))
}

async fn list(State(s): State<AppState>) -> Result<Json<Value>> {
    let concerts = s.store.list_concerts().await?;
    Ok(Json(json!({ "concerts": concerts })))
}

async fn performances(State(s): State<AppState>, Path(raw): Path<String>) -> Result<Response> {
    let concert_id = parse_id(&raw, "concert_id")?;
    let body = match s.caches.performance_list(concert_id) {
        Some(body) => body,
        None => s.caches.put_performance_list(concert_id, s.store.performances(concert_id, s.clock.now_ms()).await?),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::{parse_rfc3339, rfc3339};

    #[test]
    fn a_start_time_is_refused_when_its_instant_could_not_be_written_back() {
        assert_eq!(parse_starts_at("2030-01-01T19:00:00+09:00"), parse_rfc3339("2030-01-01T19:00:00+09:00"));
        for edge in ["0002-01-01T00:00:00+23:59", "9998-12-31T23:59:59-23:59"] {
            let written = rfc3339(parse_starts_at(edge).unwrap());
            assert!(written.len() == 24 && !written.starts_with("0000"), "{edge} is written back as {written}");
        }
        for refused in ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-23:00", "9999-01-01T00:00:00Z", "tomorrow"] {
            assert_eq!(parse_starts_at(refused), None, "{refused}");
        }
    }

    #[test]
    fn texts_are_refused_blank_too_long_or_with_nul() {
        assert!(is_text("A1", 20));
        assert!(!is_text("", 20));
        assert!(!is_text(&"x".repeat(21), 20));
        assert!(!is_text("A\u{0}1", 20));
    }
}
