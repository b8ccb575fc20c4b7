//! The durable page outbox: every page is written here before it is sent,
//! and each channel's worker claims only its own channel's rows, so a slow
//! channel never holds another's pages.
//!
//! A claim is a lease on rows. Claiming gives a row a token (`claimed_by`)
//! and moves its `next_attempt_at` to the claim's deadline; rows claimed by
//! one process are skipped by every other (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL). A sender that dies mid-send leaves the row to come due again
//! at the deadline, for any process to send. Before each send the sender
//! renews its claim, and it writes the outcome only under its own token, so
//! a sender paused past its deadline finds the row taken and sends nothing.

use sqlx::{AnyConnection, Row};

use super::{NewPage, OutboxRow, Result, Store};

/// Rows of one channel taken for sending. While a claim is alive the store
/// does not close, so every send it covers can record its outcome, and the
/// channel counts as busy; drop it as soon as the pass is over.
pub struct Claim {
    pub rows: Vec<OutboxRow>,
    channel: String,
    store: Store,
    _sending: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut busy = self.store.life.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = busy.get_mut(&self.channel) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.channel);
            }
        }
    }
}

const ROW_COLUMNS: &str = "id, incident_id, channel, recipients, page, attempts, created_at, claimed_by, traceparent";

fn row(r: &sqlx::any::AnyRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        incident_id: r.try_get("incident_id")?,
        channel: r.try_get("channel")?,
        recipients: r.try_get("recipients")?,
        page: r.try_get("page")?,
        attempts: r.try_get::<i64, _>("attempts")?,
        created_at: r.try_get("created_at")?,
        claimed_by: r.try_get("claimed_by")?,
        traceparent: r.try_get("traceparent")?,
    })
}

impl Store {
    /// Writes a page to the outbox; `false` when a page with this dedup
    /// key was already written.
    pub async fn enqueue(
        &self,
        incident_id: i64,
        dedup_key: &str,
        channel: &str,
        recipients: &str,
        page: &str,
        now: i64,
    ) -> Result<bool> {
        self.enqueue_group(&[incident_id], dedup_key, channel, recipients, page, now).await
    }

    /// Pending rows of every channel that are due, oldest first.
    pub async fn due(&self, now: i64, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// Takes up to `limit` due rows of `channel` for `hold_ms`, oldest
    /// first; `None` once the store is closing (the rows stay for the next
    /// start, or another process).
    pub async fn claim(&self, channel: &str, now: i64, limit: i64, hold_ms: i64) -> Result<Option<Claim>> {
        if self.is_closing() {
            return Ok(None);
        }
        let sending = self.life.sending.clone().read_owned().await;
        // `close` may have begun while this waited for the guard.
        if self.is_closing() {
            return Ok(None);
        }
        let n = self.life.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{}:{n}", self.instance);
        let skip_locked = if self.sqlite { "" } else { "FOR UPDATE SKIP LOCKED" };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET claimed_by = $4, next_attempt_at = $5, attempts = attempts + 1
             WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND channel = $1 AND next_attempt_at <= $2 ORDER BY id LIMIT $3 {skip_locked})
             RETURNING {ROW_COLUMNS}"
        )))
        .bind(channel)
        .bind(now)
        .bind(limit)
        .bind(&token)
        .bind(now.saturating_add(hold_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut rows = rows.iter().map(row).collect::<Result<Vec<_>>>()?;
        rows.sort_by_key(|r| r.id);
        *self.life.busy.lock().unwrap_or_else(|p| p.into_inner()).entry(channel.to_owned()).or_default() += 1;
        Ok(Some(Claim { rows, channel: channel.to_owned(), store: self.clone(), _sending: sending }))
    }

    /// The next time a pending page is due on a channel that is not busy
    /// sending, to sleep until then: a channel stuck in a hung send is not
    /// "due now" (its worker comes back to it when the send ends).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        self.next_due_where(None).await
    }

    /// [`Store::next_due`] for one channel's pages.
    pub async fn next_due_on(&self, channel: &str) -> Result<Option<i64>> {
        self.next_due_where(Some(channel)).await
    }

    async fn next_due_where(&self, only: Option<&str>) -> Result<Option<i64>> {
        let rows = sqlx::query(
            "SELECT channel, MIN(next_attempt_at) AS next FROM outbox WHERE status = 'pending' GROUP BY channel",
        )
        .fetch_all(&self.pool)
        .await?;
        let busy = self.life.busy.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut next: Option<i64> = None;
        for r in &rows {
            let channel: String = r.try_get("channel")?;
            if only.is_some_and(|c| c != channel) || busy.contains_key(&channel) {
                continue;
            }
            let at: i64 = r.try_get("next")?;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next)
    }

    /// Right before sending `row`: extends its claim to `now + hold_ms`;
    /// `false` when the claim was lost (its deadline passed and another
    /// sender took the row, or it was sent): then it must not be sent.
    pub async fn still_mine(&self, row: &OutboxRow, now: i64, hold_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $3 WHERE id = $1 AND claimed_by = $2 AND status = 'pending'",
        )
        .bind(row.id)
        .bind(row.claimed_by.as_deref())
        .bind(now.saturating_add(hold_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed row back unsent (the process is stopping), due now.
    pub async fn unclaim(&self, row: &OutboxRow, now: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET claimed_by = NULL, next_attempt_at = $3, attempts = attempts - 1 WHERE id = $1 AND claimed_by = $2 AND status = 'pending'")
            .bind(row.id)
            .bind(row.claimed_by.as_deref())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The row was sent; `false` when the claim had been lost meanwhile.
    pub async fn delivered(&self, row: &OutboxRow, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE outbox SET status = 'delivered', delivered_at = $3, last_error = NULL WHERE id = $1 AND claimed_by IS NOT DISTINCT FROM $2")
            .bind(row.id)
            .bind(row.claimed_by.as_deref())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn retry_later(&self, row: &OutboxRow, at: i64, error: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET claimed_by = NULL, next_attempt_at = $3, last_error = $4 WHERE id = $1 AND claimed_by IS NOT DISTINCT FROM $2")
            .bind(row.id)
            .bind(row.claimed_by.as_deref())
            .bind(at)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn failed(&self, row: &OutboxRow, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'failed', last_error = $3 WHERE id = $1 AND claimed_by IS NOT DISTINCT FROM $2",
        )
        .bind(row.id)
        .bind(row.claimed_by.as_deref())
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes one grouped page for `incidents` (the first owns the row, the
    /// others are its members); `false` when it was written already.
    pub async fn enqueue_group(
        &self,
        incidents: &[i64],
        dedup_key: &str,
        channel: &str,
        recipients: &str,
        page: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = NewPage {
            dedup_key: dedup_key.to_owned(),
            channel: channel.to_owned(),
            recipients: recipients.to_owned(),
            page: page.to_owned(),
        };
        let written = self.enqueue_on(&mut tx, incidents, &row, now).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// [`Store::enqueue_group`] on `conn` (inside the caller's transaction).
    pub(super) async fn enqueue_on(
        &self,
        conn: &mut AnyConnection,
        incidents: &[i64],
        row: &NewPage,
        now: i64,
    ) -> Result<bool> {
        let Some((&first, rest)) = incidents.split_first() else { return Ok(false) };
        let page = row;
        // The span writing the page (the evaluation's, or a resolve's) is
        // the parent of every attempt to send it.
        let traceparent = telemetry::spans::current_context().map(|cx| cx.traceparent());
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO outbox (incident_id, dedup_key, channel, recipients, page, status, attempts, next_attempt_at, created_at, traceparent)
             SELECT $1, $2, $3, $4, $5, 'pending', 0, $6, $6, $7 WHERE {} ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
            self.fence_sql()
        )))
        .bind(first)
        .bind(&page.dedup_key)
        .bind(&page.channel)
        .bind(&page.recipients)
        .bind(&page.page)
        .bind(now)
        .bind(traceparent)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            self.check_fence_on(conn).await?;
            return Ok(false);
        };
        let id: i64 = row.try_get("id")?;
        for incident in rest {
            sqlx::query("INSERT INTO outbox_members (outbox_id, incident_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(*incident)
                .execute(&mut *conn)
                .await?;
        }
        Ok(true)
    }

    /// When the page group `key` was last paged.
    pub async fn group_flushed(&self, key: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT flushed_at FROM page_groups WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("flushed_at").map_err(Into::into)).transpose()
    }

    /// Fenced: a stale evaluator's write changes nothing and is refused
    /// with [`IncidentError::Fenced`](super::IncidentError::Fenced), so it
    /// does not go on paging its groups.
    pub async fn set_group_flushed(&self, key: &str, at: i64) -> Result<()> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO page_groups (key, flushed_at) SELECT $1, $2 WHERE {} ON CONFLICT (key) DO UPDATE SET flushed_at = excluded.flushed_at",
            self.fence_sql()
        )))
        .bind(key)
        .bind(at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.check_fence().await?;
        }
        Ok(())
    }

    /// Everyone paged about an incident, per channel: who hears that it
    /// resolved (grouped pages included). (Retention keeps these rows while
    /// the incident is open.)
    pub async fn paged(&self, incident_id: i64) -> Result<Vec<(String, String)>> {
        paged_on(&mut *self.pool.acquire().await?, incident_id).await
    }

    /// Pages written but not yet delivered (the `outbox_due` index answers
    /// it; delivered rows are never scanned).
    pub async fn pending_pages(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE status = 'pending'").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }
}

/// [`Store::paged`] on `conn`.
pub(super) async fn paged_on(conn: &mut AnyConnection, incident_id: i64) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT channel, recipients FROM outbox
         WHERE (incident_id = $1 OR id IN (SELECT outbox_id FROM outbox_members WHERE incident_id = $1)) AND dedup_key NOT LIKE '%:resolved:%'
         ORDER BY id",
    )
    .bind(incident_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("channel")?, r.try_get("recipients")?))).collect()
}
