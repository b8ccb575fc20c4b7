//! Balance charges and payments. Each is one transaction that also records
//! its idempotency key and its ledger row, so a replay returns the first
//! result and no change is ever half-written.

use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError, StoreResult, holds::ReservationStatus, holds::fetch_reservation};
use crate::domain::{Won, clock::Millis};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeReceipt {
    pub charge_id: String,
    pub user_id: i64,
    pub amount: i64,
    pub balance: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReceipt {
    pub payment_id: String,
    pub reservation_id: String,
    pub seat_id: i64,
    /// The seat's performance, so the payer's instance drops that seat map
    /// only (0 in receipts stored before it was recorded).
    #[serde(default)]
    pub performance_id: i64,
    pub amount: i64,
    pub balance: i64,
}

/// An idempotent result, and whether it is a replay of an earlier request.
#[derive(Debug, Clone)]
pub struct Idempotent<T> {
    pub value: T,
    pub replayed: bool,
}

impl Store {
    pub async fn charge(
        &self,
        user_id: i64,
        key: &str,
        amount: Won,
        now: Millis,
    ) -> StoreResult<Idempotent<ChargeReceipt>> {
        self.timed("charge", self.charge_balance(user_id, key, amount, now)).await
    }

    async fn charge_balance(
        &self,
        user_id: i64,
        key: &str,
        amount: Won,
        now: Millis,
    ) -> StoreResult<Idempotent<ChargeReceipt>> {
        let mut tx = self.begin().await?;
        let fingerprint = format!("charge:{}", amount.get());
        if let Some(first) = claim_key(&mut tx, user_id, "charge", key, &fingerprint, now).await? {
            return Ok(Idempotent { value: first, replayed: true });
        }
        let balance: i64 = sqlx::query("UPDATE users SET balance = balance + $1 WHERE id = $2 RETURNING balance")
            .bind(amount.get())
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("user"))?
            .try_get(0)?;
        let charge_id = uuid::Uuid::now_v7().to_string();
        write_ledger(&mut tx, &charge_id, user_id, "CHARGE", amount.get(), key, now).await?;
        let receipt = ChargeReceipt { charge_id, user_id, amount: amount.get(), balance };
        store_result(&mut tx, user_id, "charge", key, &receipt).await?;
        tx.commit().await?;
        Ok(Idempotent { value: receipt, replayed: false })
    }

    /// The first result of a payment request, if this key already paid.
    pub async fn replay_payment(
        &self,
        user_id: i64,
        key: &str,
        reservation_id: &str,
    ) -> StoreResult<Option<Idempotent<PaymentReceipt>>> {
        let first = stored_result(&self.pool, user_id, "payment", key, &pay_fingerprint(reservation_id)).await?;
        Ok(first.map(|value| Idempotent { value, replayed: true }))
    }

    /// Pays a live hold from the balance: the reservation becomes PAID, the
    /// seat SOLD, and the balance drops by the price, all or nothing. The
    /// conditional UPDATE of the reservation races the hold's expiry and a
    /// re-claim of the seat; exactly one of them wins.
    ///
    /// The hold must be of a performance of `concert_id`, the concert the
    /// payer's queue place admits to: a place won in one concert's line does
    /// not pay for a seat of another.
    pub async fn pay(
        &self,
        user_id: i64,
        key: &str,
        reservation_id: &str,
        concert_id: i64,
        now: Millis,
    ) -> StoreResult<Idempotent<PaymentReceipt>> {
        self.timed("pay", self.pay_hold(user_id, key, reservation_id, concert_id, now)).await
    }

    async fn pay_hold(
        &self,
        user_id: i64,
        key: &str,
        reservation_id: &str,
        concert_id: i64,
        now: Millis,
    ) -> StoreResult<Idempotent<PaymentReceipt>> {
        let mut tx = self.begin().await?;
        let fingerprint = pay_fingerprint(reservation_id);
        if let Some(first) = claim_key(&mut tx, user_id, "payment", key, &fingerprint, now).await? {
            return Ok(Idempotent { value: first, replayed: true });
        }
        let paid = sqlx::query(
            // `expires_at + 0`: the expiry test must not drive an index. On
            // statistics taken before a sale (few live holds) the planner
            // would walk `reservations_held_by_expiry`, every live hold of
            // the sale, for each payment (tests/plans.rs keeps it out).
            "UPDATE reservations SET status = 'PAID', paid_at = $1
             WHERE id = $2 AND user_id = $3 AND status = 'HELD' AND expires_at + 0 > $1
               AND performance_id IN (SELECT id FROM performances WHERE concert_id = $4)
             RETURNING seat_id, price, performance_id",
        )
        .bind(now)
        .bind(reservation_id)
        .bind(user_id)
        .bind(concert_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(paid) = paid else {
            return Err(why_unpayable(&mut tx, reservation_id, user_id, concert_id, now).await);
        };
        let seat_id: i64 = paid.try_get(0)?;
        let price: i64 = paid.try_get(1)?;
        let performance_id: i64 = paid.try_get(2)?;
        let balance =
            sqlx::query("UPDATE users SET balance = balance - $1 WHERE id = $2 AND balance >= $1 RETURNING balance")
                .bind(price)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(balance) = balance else {
            let balance: i64 = sqlx::query("SELECT balance FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            return Err(StoreError::InsufficientBalance { balance, price });
        };
        let balance: i64 = balance.try_get(0)?;
        let sold = sqlx::query(
            "UPDATE seats SET sold_reservation_id = $1, hold_reservation_id = NULL, hold_user_id = NULL, hold_expires_at = NULL
             WHERE id = $2 AND hold_reservation_id = $1",
        )
        .bind(reservation_id)
        .bind(seat_id)
        .execute(&mut *tx)
        .await?;
        if sold.rows_affected() != 1 {
            // The hold lapsed and the seat went to someone else first.
            return Err(StoreError::HoldExpired);
        }
        let payment_id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO payments (id, reservation_id, user_id, amount, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&payment_id)
        .bind(reservation_id)
        .bind(user_id)
        .bind(price)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        write_ledger(&mut tx, &payment_id, user_id, "PAYMENT", -price, reservation_id, now).await?;
        let receipt = PaymentReceipt {
            payment_id,
            reservation_id: reservation_id.to_owned(),
            seat_id,
            performance_id,
            amount: price,
            balance,
        };
        store_result(&mut tx, user_id, "payment", key, &receipt).await?;
        tx.commit().await?;
        Ok(Idempotent { value: receipt, replayed: false })
    }
}

impl Store {
    /// Deletes up to `batch` idempotency keys stored before `before`: past
    /// their retention a key no longer replays, and may be used afresh.
    /// Returns how many went.
    pub async fn prune_idempotency_keys(&self, before: Millis, batch: i64) -> StoreResult<u64> {
        self.timed("prune_idempotency_keys", async {
            let done = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (user_id, scope, key) IN
                     (SELECT user_id, scope, key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
            )
            .bind(before)
            .bind(batch)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}

fn pay_fingerprint(reservation_id: &str) -> String {
    format!("pay:{reservation_id}")
}

async fn why_unpayable(
    tx: &mut Transaction<'static, Any>,
    reservation_id: &str,
    user_id: i64,
    concert_id: i64,
    now: Millis,
) -> StoreError {
    match fetch_reservation(&mut **tx, reservation_id, user_id, now).await {
        Ok(r) if r.status == ReservationStatus::Expired => StoreError::HoldExpired,
        Ok(r) if r.status == ReservationStatus::Held => {
            // A live hold of the payer's that the UPDATE did not take: it is
            // of another concert than the queue place.
            let concert = sqlx::query("SELECT concert_id FROM performances WHERE id = $1")
                .bind(r.performance_id)
                .fetch_optional(&mut **tx)
                .await;
            match concert {
                Ok(Some(row)) if row.try_get::<i64, _>(0).is_ok_and(|c| c != concert_id) => StoreError::OtherConcert,
                Ok(_) => StoreError::NotPayable,
                Err(e) => e.into(),
            }
        }
        Ok(_) => StoreError::NotPayable,
        Err(StoreError::NotFound(_)) => {
            // Someone else's reservation: it exists, but it is not payable by this user.
            let exists = sqlx::query("SELECT id FROM reservations WHERE id = $1")
                .bind(reservation_id)
                .fetch_optional(&mut **tx)
                .await;
            match exists {
                Ok(Some(_)) => StoreError::NotPayable,
                Ok(None) => StoreError::NotFound("reservation"),
                Err(e) => e.into(),
            }
        }
        Err(e) => e,
    }
}

/// Takes the idempotency key for this transaction, or returns the stored
/// first result. On PostgreSQL a concurrent duplicate blocks on the key's
/// unique index until the first commits, then replays its result; if the
/// first rolls back, the duplicate proceeds as the first.
async fn claim_key<T: for<'de> Deserialize<'de>>(
    tx: &mut Transaction<'static, Any>,
    user_id: i64,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: Millis,
) -> StoreResult<Option<T>> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, scope, key, request_hash, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    stored_result(&mut **tx, user_id, scope, key, fingerprint)
        .await?
        .ok_or(StoreError::Constraint("idempotency key without result".into()))
        .map(Some)
}

/// The stored first result for a key, if any. A key used with another
/// request is refused.
async fn stored_result<'e, T, E>(
    exec: E,
    user_id: i64,
    scope: &str,
    key: &str,
    fingerprint: &str,
) -> StoreResult<Option<T>>
where
    T: for<'de> Deserialize<'de>,
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND scope = $2 AND key = $3",
    )
    .bind(user_id)
    .bind(scope)
    .bind(key)
    .fetch_optional(exec)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored_fingerprint: String = row.try_get(0)?;
    if stored_fingerprint != fingerprint {
        return Err(StoreError::IdempotencyKeyReused);
    }
    let response: Option<String> = row.try_get(1)?;
    response
        .map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Database(sqlx::Error::Decode(e.into()))))
        .transpose()
}

async fn store_result<T: Serialize>(
    tx: &mut Transaction<'static, Any>,
    user_id: i64,
    scope: &str,
    key: &str,
    value: &T,
) -> StoreResult<()> {
    let json = serde_json::to_string(value).map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))?;
    sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE user_id = $2 AND scope = $3 AND key = $4")
        .bind(json)
        .bind(user_id)
        .bind(scope)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn write_ledger(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    user_id: i64,
    kind: &str,
    amount: i64,
    reference: &str,
    now: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ledger (id, user_id, kind, amount, reference, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(user_id)
    .bind(kind)
    .bind(amount)
    .bind(reference)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Balance after all ledger rows, for audits.
pub async fn ledger_sum(store: &Store, user_id: i64) -> StoreResult<i64> {
    let row = sqlx::query("SELECT CAST(sum(amount) AS BIGINT) FROM ledger WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(store.pool())
        .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
}
