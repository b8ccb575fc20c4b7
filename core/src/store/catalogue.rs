//! Concerts, their performances (dates) and seats.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, StoreResult};
use crate::domain::clock::Millis;

#[derive(Debug, Clone)]
pub struct NewSeat {
    pub seat_no: String,
    pub grade: String,
    pub price: i64,
}

#[derive(Debug, Clone)]
pub struct NewPerformance {
    pub starts_at: Millis,
    pub seats: Vec<NewSeat>,
}

#[derive(Debug, Clone)]
pub struct NewConcert {
    pub title: String,
    pub performances: Vec<NewPerformance>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedConcert {
    pub concert_id: i64,
    pub title: String,
    pub performances: Vec<CreatedPerformance>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedPerformance {
    pub performance_id: i64,
    pub starts_at: Millis,
    pub seat_count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConcertSummary {
    pub concert_id: i64,
    pub title: String,
    pub performance_count: i64,
}

#[derive(Debug, Clone)]
pub struct PerformanceSummary {
    pub performance_id: i64,
    pub starts_at: Millis,
    pub total_seats: i64,
    pub available_seats: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeatView {
    pub seat_id: i64,
    pub seat_no: String,
    pub grade: String,
    pub price: i64,
    pub status: SeatStatus,
}

/// Rows per multi-row INSERT: few round trips, well under SQLite's limit of
/// bound parameters.
const SEAT_CHUNK: usize = 500;

/// The one definition of "available": not sold, and not held by a live hold.
pub(crate) const SEAT_AVAILABLE: &str =
    "sold_reservation_id IS NULL AND (hold_expires_at IS NULL OR hold_expires_at <= $1)";

impl Store {
    /// Creates a concert with all its performances and seats, all or nothing.
    pub async fn create_concert(&self, concert: &NewConcert, now: Millis) -> StoreResult<CreatedConcert> {
        let mut tx = self.begin().await?;
        let concert_id: i64 = sqlx::query("INSERT INTO concerts (title, created_at) VALUES ($1, $2) RETURNING id")
            .bind(&concert.title)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let mut performances = Vec::with_capacity(concert.performances.len());
        for p in &concert.performances {
            let performance_id: i64 =
                sqlx::query("INSERT INTO performances (concert_id, starts_at) VALUES ($1, $2) RETURNING id")
                    .bind(concert_id)
                    .bind(p.starts_at)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            for chunk in p.seats.chunks(SEAT_CHUNK) {
                let sql = seat_insert_sql(chunk.len());
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for s in chunk {
                    q = q.bind(performance_id).bind(&s.seat_no).bind(&s.grade).bind(s.price);
                }
                q.execute(&mut *tx).await?;
            }
            performances.push(CreatedPerformance {
                performance_id,
                starts_at: p.starts_at,
                seat_count: p.seats.len() as i64,
            });
        }
        tx.commit().await?;
        Ok(CreatedConcert { concert_id, title: concert.title.clone(), performances })
    }

    pub async fn list_concerts(&self) -> StoreResult<Vec<ConcertSummary>> {
        let sql = "SELECT c.id, c.title, (SELECT count(*) FROM performances p WHERE p.concert_id = c.id)
             FROM concerts c ORDER BY c.id LIMIT 1000";
        let rows = self.read(|pool| sqlx::query(sql).fetch_all(pool)).await?;
        rows.iter()
            .map(|r| {
                Ok(ConcertSummary { concert_id: r.try_get(0)?, title: r.try_get(1)?, performance_count: r.try_get(2)? })
            })
            .collect()
    }

    pub async fn concert_exists(&self, concert_id: i64) -> StoreResult<bool> {
        let row =
            sqlx::query("SELECT id FROM concerts WHERE id = $1").bind(concert_id).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// The concert's performances that have not started, with seat counts.
    pub async fn performances(&self, concert_id: i64, now: Millis) -> StoreResult<Vec<PerformanceSummary>> {
        self.timed("read_performances", self.performance_list(concert_id, now)).await
    }

    async fn performance_list(&self, concert_id: i64, now: Millis) -> StoreResult<Vec<PerformanceSummary>> {
        let sql = format!(
            "SELECT p.id, p.starts_at,
                    (SELECT count(*) FROM seats WHERE performance_id = p.id),
                    (SELECT count(*) FROM seats WHERE performance_id = p.id AND {SEAT_AVAILABLE})
             FROM performances p WHERE p.concert_id = $2 AND p.starts_at > $1 ORDER BY p.starts_at"
        );
        let rows = self
            .read(|pool| {
                let sql = sql.clone();
                async move {
                    if sqlx::query("SELECT id FROM concerts WHERE id = $1")
                        .bind(concert_id)
                        .fetch_optional(pool)
                        .await?
                        .is_none()
                    {
                        return Ok(None);
                    }
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(concert_id).fetch_all(pool).await.map(Some)
                }
            })
            .await?
            .ok_or(StoreError::NotFound("concert"))?;
        rows.iter()
            .map(|r| {
                Ok(PerformanceSummary {
                    performance_id: r.try_get(0)?,
                    starts_at: r.try_get(1)?,
                    total_seats: r.try_get(2)?,
                    available_seats: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The concert a performance belongs to.
    pub async fn performance_concert(&self, performance_id: i64) -> StoreResult<i64> {
        let row = self
            .read(|pool| {
                sqlx::query("SELECT concert_id FROM performances WHERE id = $1")
                    .bind(performance_id)
                    .fetch_optional(pool)
            })
            .await?;
        row.map(|r| r.try_get(0)).transpose()?.ok_or(StoreError::NotFound("performance"))
    }

    pub async fn seats(&self, performance_id: i64, now: Millis) -> StoreResult<Vec<SeatView>> {
        self.timed("read_seats", self.seat_map(performance_id, now)).await
    }

    async fn seat_map(&self, performance_id: i64, now: Millis) -> StoreResult<Vec<SeatView>> {
        let sql = "SELECT id, seat_no, grade, price,
                    CASE WHEN sold_reservation_id IS NOT NULL THEN 2
                         WHEN hold_expires_at IS NOT NULL AND hold_expires_at > $1 THEN 1
                         ELSE 0 END
             FROM seats WHERE performance_id = $2 ORDER BY id";
        let rows = self.read(|pool| sqlx::query(sql).bind(now).bind(performance_id).fetch_all(pool)).await?;
        rows.iter()
            .map(|r| {
                let status = match r.try_get::<i64, _>(4)? {
                    2 => SeatStatus::Sold,
                    1 => SeatStatus::Held,
                    _ => SeatStatus::Available,
                };
                Ok(SeatView {
                    seat_id: r.try_get(0)?,
                    seat_no: r.try_get(1)?,
                    grade: r.try_get(2)?,
                    price: r.try_get(3)?,
                    status,
                })
            })
            .collect()
    }
}

pub fn seat_insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO seats (performance_id, seat_no, grade, price) VALUES ");
    for i in 0..rows {
        let b = i * 4;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${},${},${},${})", b + 1, b + 2, b + 3, b + 4));
    }
    sql
}
