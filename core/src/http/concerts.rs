//! The catalogue: concerts, their performances (dates) and seats.

use std::collections::HashSet;

use axum::{Json, Router, extract::{Path, State}, http::StatusCode, routing::{get, post}};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;

use super::{
    ADMIN_BODY_LIMIT, AppState, ts,
    error::{ApiError, Result},
    extract::{Admin, ApiJson, parse_id},
};
use crate::{
    domain::clock::parse_rfc3339,
    store::{NewConcert, NewPerformance, NewSeat},
};

pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/admin/concerts"),
    ("GET", "/v1/concerts"),
    ("GET", "/v1/concerts/{concert_id}/performances"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/concerts", get(list))
        .route("/v1/concerts/{concert_id}/performances", get(performances))
}

pub fn admin_router() -> Router<AppState> {
    Router::new().route("/v1/admin/concerts", post(create)).layer(RequestBodyLimitLayer::new(ADMIN_BODY_LIMIT))
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

fn validate(body: ConcertBody) -> Result<NewConcert> {
    let bad = |msg: String| ApiError::bad_request("INVALID_CONCERT", msg);
    let title = body.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(bad("title must be 1 to 200 characters".into()));
    }
    if body.performances.is_empty() || body.performances.len() > 100 {
        return Err(bad("a concert has 1 to 100 performances".into()));
    }
    let mut performances = Vec::with_capacity(body.performances.len());
    for (i, p) in body.performances.into_iter().enumerate() {
        let starts_at = parse_rfc3339(&p.starts_at)
            .ok_or_else(|| bad(format!("performances[{i}].starts_at must be an RFC 3339 timestamp")))?;
        if p.seats.is_empty() || p.seats.len() > 5000 {
            return Err(bad(format!("performances[{i}] must have 1 to 5000 seats")));
        }
        let mut seen = HashSet::with_capacity(p.seats.len());
        let mut seats = Vec::with_capacity(p.seats.len());
        for (j, s) in p.seats.into_iter().enumerate() {
            let seat_no = s.seat_no.trim().to_owned();
            let grade = s.grade.trim().to_owned();
            if seat_no.is_empty() || seat_no.chars().count() > 20 || grade.is_empty() || grade.chars().count() > 20 {
                return Err(bad(format!("performances[{i}].seats[{j}]: seat_no and grade must be 1 to 20 characters")));
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

async fn create(State(s): State<AppState>, _: Admin, ApiJson(body): ApiJson<ConcertBody>) -> Result<(StatusCode, Json<Value>)> {
    let concert = validate(body)?;
    let created = s.store.create_concert(&concert, s.clock.now_ms()).await?;
    let performances: Vec<Value> = created
        .performances
        .iter()
        .map(|p| json!({ "performance_id": p.performance_id, "starts_at": ts(p.starts_at), "seat_count": p.seat_count }))
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

async fn performances(State(s): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>> {
    let concert_id = parse_id(&raw, "concert_id")?;
    let list = s.store.performances(concert_id, s.clock.now_ms()).await?;
    let performances: Vec<Value> = list
        .iter()
        .map(|p| {
            json!({
                "performance_id": p.performance_id,
                "starts_at": ts(p.starts_at),
                "total_seats": p.total_seats,
                "available_seats": p.available_seats,
            })
        })
        .collect();
    Ok(Json(json!({ "concert_id": concert_id, "performances": performances })))
}
