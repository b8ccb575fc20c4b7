//! Seat holds: the claim, its release, and reading a reservation back.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::{Dialect, Store, StoreError, StoreResult};
use crate::domain::clock::Millis;

#[derive(Debug, Clone, Copy)]
pub struct HoldRequest {
    pub user_id: i64,
    /// The concert of the caller's queue token: a seat of another concert is
    /// treated as unknown.
    pub concert_id: i64,
    pub seat_id: i64,
    pub now: Millis,
    pub expires_at: Millis,
    pub max_holds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReservationStatus {
    Held,
    Released,
    Expired,
    Paid,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub user_id: i64,
    pub seat_id: i64,
    pub performance_id: i64,
    /// The concert of the seat: its fast-path flag lives with that concert's line.
    pub concert_id: i64,
    pub price: i64,
    pub status: ReservationStatus,
    pub expires_at: Millis,
    pub payment_id: Option<String>,
}

/// Why a seat could not be claimed, with what the fast path should remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    HeldUntil(Millis),
    Sold,
}

impl Store {
    /// Claims a seat for a user: one conditional UPDATE of the seat row
    /// decides the winner, inside a transaction that also enforces the
    /// per-performance hold limit and writes the reservation. On SQLite the
    /// steps run as statements on its single connection; PostgreSQL runs the
    /// same steps in a function (see `hold_seat_in_one_trip`).
    pub async fn hold_seat(&self, req: &HoldRequest) -> Result<Reservation, (StoreError, Option<Taken>)> {
        let mut taken = None;
        let result = self
            .timed("hold_seat", async {
                self.try_hold_seat(req).await.map_err(|e| match e {
                    HoldFailure::Store(e) => e,
                    HoldFailure::Taken(t) => {
                        taken = Some(t);
                        StoreError::SeatUnavailable
                    }
                })
            })
            .await;
        result.map_err(|e| (e, taken))
    }

    async fn try_hold_seat(&self, req: &HoldRequest) -> Result<Reservation, HoldFailure> {
        if self.dialect == Dialect::Postgres {
            return self.hold_seat_in_one_trip(req).await;
        }
        let mut tx = self.begin().await?;
        // A user's claims run one at a time, so the hold limit is exact even
        // when one user fires requests in parallel. Nobody else waits.
        let lock_user = match self.dialect {
            Dialect::Postgres => "SELECT id FROM users WHERE id = $1 FOR UPDATE",
            Dialect::Sqlite => "SELECT id FROM users WHERE id = $1",
        };
        if sqlx::query(lock_user).bind(req.user_id).fetch_optional(&mut *tx).await.map_err(StoreError::from)?.is_none()
        {
            return Err(StoreError::NotFound("user").into());
        }
        let live: i64 = sqlx::query(
            "SELECT count(*) FROM reservations
             WHERE user_id = $1 AND status = 'HELD' AND expires_at > $2
               AND performance_id = (SELECT performance_id FROM seats WHERE id = $3)",
        )
        .bind(req.user_id)
        .bind(req.now)
        .bind(req.seat_id)
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(StoreError::from)?;
        if live >= req.max_holds {
            return Err(StoreError::HoldLimitReached.into());
        }
        // A lapsed hold on this seat stops being HELD, which keeps the
        // unique index `seat_hold_unique` free for the new one.
        sqlx::query(
            "UPDATE reservations SET status = 'EXPIRED' WHERE seat_id = $1 AND status = 'HELD' AND expires_at <= $2",
        )
        .bind(req.seat_id)
        .bind(req.now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let reservation_id = uuid::Uuid::now_v7().to_string();
        let claimed = sqlx::query(
            "UPDATE seats SET hold_reservation_id = $1, hold_user_id = $2, hold_expires_at = $3
             WHERE id = $4 AND sold_reservation_id IS NULL
               AND (hold_expires_at IS NULL OR hold_expires_at <= $5)
               AND performance_id IN (SELECT id FROM performances WHERE concert_id = $6)
             RETURNING performance_id, price",
        )
        .bind(&reservation_id)
        .bind(req.user_id)
        .bind(req.expires_at)
        .bind(req.seat_id)
        .bind(req.now)
        .bind(req.concert_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let Some(claimed) = claimed else {
            return Err(why_unclaimed(&mut tx, req).await);
        };
        let performance_id: i64 = claimed.try_get(0).map_err(StoreError::from)?;
        let price: i64 = claimed.try_get(1).map_err(StoreError::from)?;
        sqlx::query(
            "INSERT INTO reservations (id, user_id, seat_id, performance_id, price, status, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, 'HELD', $6, $7)",
        )
        .bind(&reservation_id)
        .bind(req.user_id)
        .bind(req.seat_id)
        .bind(performance_id)
        .bind(price)
        .bind(req.expires_at)
        .bind(req.now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Reservation {
            reservation_id,
            user_id: req.user_id,
            seat_id: req.seat_id,
            performance_id,
            concert_id: req.concert_id,
            price,
            status: ReservationStatus::Held,
            expires_at: req.expires_at,
            payment_id: None,
        })
    }

    /// PostgreSQL runs the same steps server-side (migration 0002,
    /// `hold_seat`), in one round trip instead of seven.
    async fn hold_seat_in_one_trip(&self, req: &HoldRequest) -> Result<Reservation, HoldFailure> {
        let reservation_id = uuid::Uuid::now_v7().to_string();
        let row = sqlx::query(
            "SELECT outcome, performance_id, price, sold, held_until FROM hold_seat($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&reservation_id)
        .bind(req.user_id)
        .bind(req.concert_id)
        .bind(req.seat_id)
        .bind(req.now)
        .bind(req.expires_at)
        .bind(req.max_holds)
        .fetch_one(&mut *self.acquire().await?)
        .await
        .map_err(StoreError::from)?;
        let outcome: String = row.try_get(0).map_err(StoreError::from)?;
        match outcome.as_str() {
            "HELD" => Ok(Reservation {
                reservation_id,
                user_id: req.user_id,
                seat_id: req.seat_id,
                performance_id: row.try_get(1).map_err(StoreError::from)?,
                concert_id: req.concert_id,
                price: row.try_get(2).map_err(StoreError::from)?,
                status: ReservationStatus::Held,
                expires_at: req.expires_at,
                payment_id: None,
            }),
            "LIMIT" => Err(StoreError::HoldLimitReached.into()),
            "NO_SEAT" => Err(StoreError::NotFound("seat").into()),
            _ => {
                let sold: Option<i64> = row.try_get(3).map_err(StoreError::from)?;
                let held: Option<i64> = row.try_get(4).map_err(StoreError::from)?;
                Err(match (sold, held) {
                    (Some(1), _) => HoldFailure::Taken(Taken::Sold),
                    (_, Some(until)) => HoldFailure::Taken(Taken::HeldUntil(until)),
                    _ => HoldFailure::Store(StoreError::SeatUnavailable),
                })
            }
        }
    }

    /// The reservation, if it is the user's. Another user's reservation is
    /// reported as missing, so ids reveal nothing.
    pub async fn reservation(&self, reservation_id: &str, user_id: i64, now: Millis) -> StoreResult<Reservation> {
        self.timed("read_reservation", fetch_reservation(&self.pool, reservation_id, user_id, now)).await
    }

    /// Gives a live hold back. The seat is free again at once.
    pub async fn release(&self, reservation_id: &str, user_id: i64, now: Millis) -> StoreResult<Reservation> {
        self.timed("release", self.release_hold(reservation_id, user_id, now)).await
    }

    async fn release_hold(&self, reservation_id: &str, user_id: i64, now: Millis) -> StoreResult<Reservation> {
        let mut tx = self.begin().await?;
        let released = sqlx::query(
            "UPDATE reservations SET status = 'RELEASED'
             WHERE id = $1 AND user_id = $2 AND status = 'HELD' AND expires_at > $3 RETURNING seat_id",
        )
        .bind(reservation_id)
        .bind(user_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(released) = released else {
            // Missing or not the user's: 404. Otherwise it is no longer held.
            fetch_reservation(&mut *tx, reservation_id, user_id, now).await?;
            return Err(StoreError::NotHeld);
        };
        let seat_id: i64 = released.try_get(0)?;
        sqlx::query(
            "UPDATE seats SET hold_reservation_id = NULL, hold_user_id = NULL, hold_expires_at = NULL
             WHERE id = $1 AND hold_reservation_id = $2",
        )
        .bind(seat_id)
        .bind(reservation_id)
        .execute(&mut *tx)
        .await?;
        let reservation = fetch_reservation(&mut *tx, reservation_id, user_id, now).await?;
        tx.commit().await?;
        Ok(reservation)
    }
}

enum HoldFailure {
    Store(StoreError),
    Taken(Taken),
}

impl From<StoreError> for HoldFailure {
    fn from(e: StoreError) -> Self {
        HoldFailure::Store(e)
    }
}

/// After a lost claim: is the seat unknown (or of another concert), or taken?
async fn why_unclaimed(tx: &mut Transaction<'static, Any>, req: &HoldRequest) -> HoldFailure {
    let row = sqlx::query(
        "SELECT s.sold_reservation_id, s.hold_expires_at FROM seats s
         JOIN performances p ON p.id = s.performance_id WHERE s.id = $1 AND p.concert_id = $2",
    )
    .bind(req.seat_id)
    .bind(req.concert_id)
    .fetch_optional(&mut **tx)
    .await;
    match row {
        Err(e) => HoldFailure::Store(e.into()),
        Ok(None) => HoldFailure::Store(StoreError::NotFound("seat")),
        Ok(Some(r)) => {
            let sold: Option<String> = r.try_get(0).unwrap_or_default();
            let held: Option<i64> = r.try_get(1).unwrap_or_default();
            match (sold, held) {
                (Some(_), _) => HoldFailure::Taken(Taken::Sold),
                (None, Some(until)) => HoldFailure::Taken(Taken::HeldUntil(until)),
                // Freed between our claim and this read: still a lost race.
                (None, None) => HoldFailure::Store(StoreError::SeatUnavailable),
            }
        }
    }
}

pub(crate) async fn fetch_reservation<'e, E>(
    exec: E,
    reservation_id: &str,
    user_id: i64,
    now: Millis,
) -> StoreResult<Reservation>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT r.id, r.user_id, r.seat_id, r.performance_id, r.price, r.status, r.expires_at, p.id, pf.concert_id
         FROM reservations r JOIN performances pf ON pf.id = r.performance_id
         LEFT JOIN payments p ON p.reservation_id = r.id
         WHERE r.id = $1 AND r.user_id = $2",
    )
    .bind(reservation_id)
    .bind(user_id)
    .fetch_optional(exec)
    .await?
    .ok_or(StoreError::NotFound("reservation"))?;
    let expires_at: i64 = row.try_get(6)?;
    let status = match row.try_get::<String, _>(5)?.as_str() {
        "PAID" => ReservationStatus::Paid,
        "RELEASED" => ReservationStatus::Released,
        // Expiry is lazy: a lapsed hold is expired whether swept or not.
        "HELD" if expires_at > now => ReservationStatus::Held,
        _ => ReservationStatus::Expired,
    };
    Ok(Reservation {
        reservation_id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        seat_id: row.try_get(2)?,
        performance_id: row.try_get(3)?,
        concert_id: row.try_get(8)?,
        price: row.try_get(4)?,
        status,
        expires_at,
        payment_id: row.try_get(7)?,
    })
}
