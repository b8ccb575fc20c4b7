//! One evaluator for a group of processes on one database.
//!
//! The `evaluator` row is a lease: the process holding it (and only it)
//! queries the metric source, steps the alert state machine, opens and
//! resolves incidents and pages their escalation steps. Every other process
//! serves the API and sends pages from the outbox, and takes the lease when
//! it expires. Times are the database's clock, so the group's hosts need not
//! agree on the time.
//!
//! Each taking of the lease raises its `epoch`, the fencing token. The
//! evaluator's writes carry it ([`Fence`]): a write is made only while this
//! epoch holds an unexpired lease, checked by the database in the same
//! statement. A process paused past its lease (SIGSTOP, a long GC-like stall,
//! a lost network) that wakes and carries on writing is refused, so it can
//! neither page from stale state nor page twice.
//!
//! The row also keeps the state machine's snapshot, saved with every renewal:
//! a new evaluator carries on pending `for` timers and `clear_for` clocks
//! where the last one left them.

use std::{sync::Arc, time::Duration};

use sqlx::Row;

use super::{Result, Store};

/// The right to evaluate under one epoch, checked by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    holder: Arc<str>,
    pub epoch: i64,
}

/// A lease just taken: its fence and the snapshot the last evaluator saved.
#[derive(Debug, Clone)]
pub struct Lease {
    pub fence: Fence,
    pub state: Option<String>,
}

/// Whoever holds the lease now, as any process sees it.
#[derive(Debug, Clone)]
pub struct Evaluator {
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds left on the lease (negative: expired).
    pub expires_in_ms: i64,
    pub state: Option<String>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// The database's clock in Unix milliseconds, as SQL.
    fn now_sql(&self) -> &'static str {
        if self.sqlite {
            "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        } else {
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        }
    }

    /// A SQL condition that holds only while `fence`'s lease is held and
    /// unexpired (`TRUE` without a fence: a write that is not the
    /// evaluator's, or a test on virtual time). The holder is this process's
    /// own name (letters, digits, `-`) and the epoch a number, so both are
    /// written into the statement rather than bound.
    pub(super) fn fence_sql(&self) -> String {
        match &self.fence {
            None => "TRUE".into(),
            Some(f) => format!("EXISTS (SELECT 1 FROM evaluator WHERE {})", self.held(f)),
        }
    }

    /// The `evaluator` row's condition for `fence`'s lease being held.
    pub(super) fn held(&self, f: &Fence) -> String {
        format!("id = 1 AND holder = '{}' AND epoch = {} AND expires_at > {}", f.holder, f.epoch, self.now_sql())
    }

    /// Takes the lease for `ttl` when nobody holds it, it has expired, or
    /// this process held it (and lost it to a database error). `force`
    /// takes it whatever it says: right for SQLite, whose file lock already
    /// makes this the only process.
    pub async fn acquire(&self, ttl: Duration, force: bool) -> Result<Option<Lease>> {
        let now = self.now_sql();
        let takeover = if force {
            "TRUE".to_owned()
        } else {
            format!("evaluator.expires_at <= {now} OR evaluator.holder = excluded.holder")
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO evaluator (id, holder, epoch, expires_at) VALUES (1, $1, 1, {now} + $2)
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, epoch = evaluator.epoch + 1, expires_at = excluded.expires_at
             WHERE {takeover}
             RETURNING epoch, state"
        )))
        .bind(&*self.instance)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Lease {
                fence: Fence { holder: self.instance.clone(), epoch: r.try_get("epoch")? },
                state: r.try_get("state")?,
            })
        })
        .transpose()
    }

    /// Extends the lease by `ttl` and saves the state machine's snapshot;
    /// `false` when the lease is no longer this epoch's (nothing saved).
    pub async fn renew(&self, fence: &Fence, ttl: Duration, state: &str) -> Result<bool> {
        let now = self.now_sql();
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE evaluator SET expires_at = {now} + $1, state = $2, saved_at = {now} WHERE {}",
            self.held(fence)
        )))
        .bind(millis(ttl))
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up at once (a clean stop), so another process takes
    /// over without waiting for it to expire.
    pub async fn release(&self, fence: &Fence) -> Result<()> {
        sqlx::query("UPDATE evaluator SET expires_at = 0 WHERE id = 1 AND holder = $1 AND epoch = $2")
            .bind(&*fence.holder)
            .bind(fence.epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The lease as it stands, and the last saved snapshot.
    pub async fn evaluator(&self) -> Result<Option<Evaluator>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT holder, epoch, expires_at - {} AS left_ms, state FROM evaluator WHERE id = 1",
            self.now_sql()
        )))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Evaluator {
                holder: r.try_get("holder")?,
                epoch: r.try_get("epoch")?,
                expires_in_ms: r.try_get("left_ms")?,
                state: r.try_get("state")?,
            })
        })
        .transpose()
    }
}
