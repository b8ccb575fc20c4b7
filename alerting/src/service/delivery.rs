//! Sending what the outbox holds, one lane per channel. Each lane claims
//! only its own channel's rows and sends them one at a time, so a Slack
//! outage (every attempt waiting for its timeout) delays only Slack's pages.
//!
//! The guarantees of the outbox hold per lane: a page is committed before
//! its send and marked delivered right after; a lane's lock means one
//! process never sends a row from two passes at once. Every channel has a
//! lane, configured or not: a page left for a channel that is no longer
//! configured fails over to the fallback instead of waiting forever.

use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tracing::Instrument as _;

use super::{Service, ServiceError, kind_name};
use crate::{
    incidents::{EventKind, OutboxRow},
    notify::{Channel, Page, PageKind, Recipient, SendError},
};

/// Rows one pass of a lane takes at most; a lane with more due runs again at once.
pub const BATCH: i64 = 50;

#[derive(Default)]
struct Lane {
    /// Held for a whole pass.
    pass: Mutex<()>,
    /// Rung when a page for this channel is written.
    bell: Notify,
}

/// The lanes of every channel.
#[derive(Default)]
pub(super) struct Lanes {
    slack: Lane,
    email: Lane,
    console: Lane,
    /// Set once workers run the lanes; then [`Service::deliver`] only wakes them.
    workers: std::sync::atomic::AtomicBool,
}

impl Lanes {
    fn get(&self, channel: Channel) -> &Lane {
        match channel {
            Channel::Slack => &self.slack,
            Channel::Email => &self.email,
            Channel::Console => &self.console,
        }
    }
}

/// What became of one attempt.
enum Outcome {
    Delivered,
    RetryAt(i64, String),
    Failed(String),
}

/// Milliseconds, saturating: a `Retry-After` of years must not wrap.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Service {
    /// Hands the lanes to background workers (the server's); from then on
    /// [`Service::deliver`] wakes them instead of sending itself.
    pub fn use_lane_workers(&self) {
        self.lanes.workers.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Wakes `channel`'s worker (a no-op without workers).
    pub fn ring(&self, channel: Channel) {
        self.lanes.get(channel).bell.notify_one();
    }

    /// Resolves when a page for `channel` was written since the last call.
    pub async fn rung(&self, channel: Channel) {
        self.lanes.get(channel).bell.notified().await;
    }

    /// One pass over the outbox, every channel at once. With workers, only
    /// wakes them and returns 0; without (tests, on virtual time), sends and
    /// returns how many pages were delivered.
    pub async fn deliver(&self, now: i64) -> Result<usize, ServiceError> {
        if self.lanes.workers.load(std::sync::atomic::Ordering::SeqCst) {
            Channel::ALL.into_iter().for_each(|c| self.ring(c));
            return Ok(0);
        }
        let passes = futures::future::join_all(Channel::ALL.into_iter().map(|c| self.deliver_channel(c, now))).await;
        passes.into_iter().try_fold(0, |sum, n| Ok(sum + n?))
    }

    /// One pass of `channel`'s lane: sends its due pages, oldest first.
    /// Returns how many were delivered.
    pub async fn deliver_channel(&self, channel: Channel, now: i64) -> Result<usize, ServiceError> {
        let _pass = self.lanes.get(channel).pass.lock().await;
        let hold = millis(self.config.claim_timeout);
        let Some(claim) = self.store.claim(channel.as_str(), now, BATCH, hold).await? else { return Ok(0) };
        // A pass may outlast a claim (50 rows of a channel that takes its
        // full send timeout each): every renewal and outcome is stamped with
        // the time it happens, not the pass's start, or a renewal would set
        // a deadline already past and the row would be claimable by another
        // sender while this one sends it.
        let started = tokio::time::Instant::now();
        let at = || now.saturating_add(millis(started.elapsed()));
        let mut delivered = 0;
        for (i, row) in claim.rows.iter().enumerate() {
            let now = at();
            // Closing: give the rest back, due now, for another process or
            // the next start.
            if self.store.is_closing() {
                for rest in &claim.rows[i..] {
                    self.store.unclaim(rest, now).await?;
                }
                break;
            }
            // A claim held past its deadline (this process was paused, or
            // the sends before took that long) may have passed to another
            // sender: only a row still ours is sent.
            if !self.store.still_mine(row, now, hold).await? {
                self.metrics.pages.with_label_values(&[channel.as_str(), "claim_lost"]).inc();
                continue;
            }
            self.failpoint(super::Failpoint::AfterClaim)?;
            // Each attempt continues the trace of the span that wrote the
            // page (its `traceparent`): one page's path is one trace.
            let span = tracing::info_span!(
                "page deliver",
                otel.name = %format!("deliver {channel}"),
                otel.kind = "consumer",
                traceparent = row.traceparent.as_deref().unwrap_or_default(),
                alerting.channel = channel.as_str(),
                alerting.incident = row.incident_id,
                alerting.attempt = row.attempts,
                alerting.outcome = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            if self.deliver_row(channel, row, now).instrument(span).await? {
                delivered += 1;
            }
        }
        self.metrics.outbox_pending.set(self.store.pending_pages().await?);
        Ok(delivered)
    }

    /// Marks a sent row delivered, retrying while the database is away:
    /// the page went out, and until this lands its claim lapses into a
    /// second send. It gives up (and the page may be sent again) only when
    /// the claim is nearly over.
    async fn record_delivered(&self, row: &OutboxRow, now: i64) -> Result<bool, ServiceError> {
        let give_up = tokio::time::Instant::now() + self.config.claim_timeout.saturating_sub(Duration::from_secs(2));
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.delivered(row, now).await {
                Ok(mine) => return Ok(mine),
                Err(e) if tokio::time::Instant::now() + wait < give_up => {
                    tracing::warn!(incident = row.incident_id, error = %e, "page sent but not yet recorded as delivered; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let factor = 2u32.saturating_pow(attempts.clamp(0, 16) as u32);
        self.config.retry_base.saturating_mul(factor).min(self.config.retry_max)
    }

    /// One attempt at one row; `true` when it was delivered.
    async fn deliver_row(&self, channel: Channel, row: &OutboxRow, now: i64) -> Result<bool, ServiceError> {
        let attempts = row.attempts;
        let page: Option<Page> = serde_json::from_str(&row.page).ok();
        // Unreadable recipients fail the row rather than page nobody; its
        // fallback copy goes to the fallback channel addressed to no one
        // (the console shows it to whoever watches).
        let recipients: Option<Vec<Recipient>> = serde_json::from_str(&row.recipients).ok();
        let result = match (self.channels.get(channel), &page, &recipients) {
            (None, _, _) => Err(SendError::Permanent(format!("channel {channel} is not configured"))),
            (_, None, _) => Err(SendError::Permanent("unreadable page in the outbox".into())),
            (_, _, None) => Err(SendError::Permanent("unreadable recipients in the outbox".into())),
            (Some(notifier), Some(page), Some(recipients)) => notifier.send(page, recipients).await,
        };
        let fallback_to = if recipients.is_some() { row.recipients.as_str() } else { "[]" };
        let recipients = recipients.unwrap_or_default();
        let cap = self.config.retry_after_max;
        let outcome = match result {
            Ok(()) => Outcome::Delivered,
            Err(SendError::Retryable { reason, after: Some(after) }) if after > cap => Outcome::Failed(format!(
                "{reason} (its Retry-After asks for {} s, beyond the {} s this service waits: sent to the fallback instead)",
                after.as_secs(),
                cap.as_secs()
            )),
            Err(SendError::Retryable { reason, after }) if attempts < self.config.max_attempts => {
                let wait = after.unwrap_or_else(|| self.backoff(attempts - 1));
                Outcome::RetryAt(now.saturating_add(millis(wait)), reason)
            }
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let label = channel.as_str();
        let span = tracing::Span::current();
        match &outcome {
            Outcome::Delivered => span.record("alerting.outcome", "delivered"),
            Outcome::RetryAt(..) => span.record("alerting.outcome", "retry").record("error.type", "retryable"),
            Outcome::Failed(_) => span.record("alerting.outcome", "failed").record("error.type", "failed"),
        };
        match outcome {
            Outcome::Delivered => {
                if !self.record_delivered(row, now).await? {
                    // Sent, but the claim had passed to another sender,
                    // which may send it too: the one duplicate this design
                    // allows (a pause longer than the claim in mid-send).
                    tracing::warn!(
                        channel = label,
                        incident = row.incident_id,
                        "page sent after its claim was lost; it may arrive twice"
                    );
                }
                self.metrics.pages.with_label_values(&[label, "delivered"]).inc();
                self.metrics
                    .delivery_seconds
                    .with_label_values(&[label])
                    .observe(((now - row.created_at).max(0)) as f64 / 1000.0);
                let names: Vec<&str> = recipients.iter().map(|r| r.name.as_str()).collect();
                let what = page.as_ref().map_or("page", |p| kind_name(&p.kind));
                let _ = self
                    .store
                    .record(
                        row.incident_id,
                        now,
                        EventKind::Delivered,
                        None,
                        &format!("{what} delivered over {label} to {} (attempt {attempts})", names.join(", ")),
                        None,
                    )
                    .await;
                Ok(true)
            }
            Outcome::RetryAt(at, reason) => {
                self.store.retry_later(row, at, &reason).await?;
                self.metrics.pages.with_label_values(&[label, "retry"]).inc();
                tracing::warn!(
                    channel = label,
                    incident = row.incident_id,
                    attempts,
                    reason,
                    "page delivery failed; retrying"
                );
                Ok(false)
            }
            Outcome::Failed(reason) => {
                self.store.failed(row, &reason).await?;
                self.metrics.pages.with_label_values(&[label, "failed"]).inc();
                tracing::error!(
                    channel = label,
                    incident = row.incident_id,
                    attempts,
                    reason,
                    "page delivery failed; using the fallback channel"
                );
                let _ = self
                    .store
                    .record(
                        row.incident_id,
                        now,
                        EventKind::DeliveryFailed,
                        None,
                        &format!("{label} delivery failed after {attempts} attempt(s): {reason}"),
                        None,
                    )
                    .await;
                let fallback = self.config.fallback;
                if channel != fallback
                    && let Some(mut page) = page
                {
                    page.kind = PageKind::DeliveryFailed;
                    page.summary = format!("{} (could not be delivered over {label}: {reason})", page.summary);
                    let key = format!("fallback:{}", row.id);
                    self.store
                        .enqueue(
                            row.incident_id,
                            &key,
                            fallback.as_str(),
                            fallback_to,
                            &serde_json::to_string(&page)?,
                            now,
                        )
                        .await?;
                    self.ring(fallback);
                }
                Ok(false)
            }
        }
    }
}
