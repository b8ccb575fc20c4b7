//! Deleting what is old: timelines hold runbook output, emails and Slack
//! ids, and the outbox keeps a copy of every page, so neither may grow
//! forever.
//!
//! What goes, given `now` from the caller (tests use virtual time):
//! - incidents resolved before the incident cutoff, with their timelines
//!   and pages, unless one of their pages is still pending;
//! - delivered and failed pages of resolved incidents, before the (usually
//!   shorter) outbox cutoff. Pages of open incidents stay: they say who
//!   hears of the resolution;
//! - silences that ended before the incident cutoff.
//!
//! Open incidents are never deleted. Work is done in batches, each in its
//! own transaction, so a large backlog never holds a long lock.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store};

/// How long rows are kept; `None` keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Resolved incidents (timelines and pages included) and ended silences.
    pub incidents: Option<Duration>,
    /// Delivered and failed pages of resolved incidents.
    pub outbox: Option<Duration>,
}

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub incidents: u64,
    pub timeline: u64,
    pub outbox: u64,
    pub silences: u64,
}

const BATCH: i64 = 500;

fn cutoff(now: i64, keep: Duration) -> i64 {
    now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Deletes what `policy` no longer keeps at `now`.
    pub async fn purge(&self, policy: &Retention, now: i64) -> Result<Purged> {
        let mut purged = Purged::default();
        if let Some(keep) = policy.incidents {
            let before = cutoff(now, keep);
            loop {
                let ids: Vec<i64> = sqlx::query(
                    "SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < $1
                     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = incidents.id AND o.status = 'pending')
                     ORDER BY id LIMIT $2",
                )
                .bind(before)
                .bind(BATCH)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    break;
                }
                // Ids come from the database as integers: the list is safe to inline.
                let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                let mut tx = self.pool.begin().await?;
                purged.timeline +=
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM timeline WHERE incident_id IN ({list})")))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                purged.outbox +=
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM outbox WHERE incident_id IN ({list})")))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                purged.incidents += sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM incidents WHERE id IN ({list}) AND state = 'resolved'"
                )))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                if (ids.len() as i64) < BATCH {
                    break;
                }
            }
            purged.silences += sqlx::query("DELETE FROM silences WHERE ends_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if let Some(keep) = policy.outbox {
            let before = cutoff(now, keep);
            loop {
                let done = sqlx::query(
                    "DELETE FROM outbox WHERE id IN (
                         SELECT o.id FROM outbox o JOIN incidents i ON i.id = o.incident_id
                         WHERE o.status <> 'pending' AND i.state = 'resolved' AND COALESCE(o.delivered_at, o.created_at) < $1
                         LIMIT $2)",
                )
                .bind(before)
                .bind(BATCH)
                .execute(&self.pool)
                .await?
                .rows_affected();
                purged.outbox += done;
                if done < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(purged)
    }
}
