//! Loops that run beside the server: admission ticks and the hold sweeper.
//! Each stops when the shutdown flag is raised.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle, time::MissedTickBehavior};

use tracing::Instrument;

use crate::AppState;

/// How often backend figures (Redis INFO, overdue holds) are sampled into
/// the metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How long past its expiry a HELD reservation may wait for the sweeper
/// before it counts as overdue: several sweep intervals, so only a sweeper
/// that is stuck or falling behind shows.
pub const OVERDUE_AFTER: Duration = Duration::from_secs(30);

/// Samples backend figures for the metrics.
pub async fn sampler(state: AppState, stop: watch::Receiver<bool>) {
    every(SAMPLE_EVERY, stop, || sample(&state)).await;
}

/// One sample: the queue backend's own figures and the overdue holds.
pub async fn sample(state: &AppState) {
    state.queue.sample().await;
    let lapsed_before = state.clock.now_ms() - OVERDUE_AFTER.as_millis() as i64;
    match state.store.count_overdue_holds(lapsed_before).await {
        Ok(n) => state.metrics.holds_overdue.set(n),
        Err(e) => tracing::warn!(error = %e, "counting overdue holds failed"),
    }
}

pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(admission(state.clone(), stop.clone())),
        tokio::spawn(sweeper(state.clone(), stop.clone())),
        tokio::spawn(retention(state.clone(), stop.clone())),
        tokio::spawn(replica_probe(state.clone(), stop.clone())),
        tokio::spawn(sampler(state, stop)),
    ]
}

/// How often the read replica's lag is measured (see `store/replica.rs`).
const REPLICA_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Probes the read replica, when there is one, opening or closing its breaker.
pub async fn replica_probe(state: AppState, stop: watch::Receiver<bool>) {
    if state.settings.database_read_url.is_none() {
        return;
    }
    every(REPLICA_PROBE_EVERY, stop, || async {
        probe_replica(&state).await;
    })
    .await;
}

/// One probe of the read replica, recorded in the metrics.
pub async fn probe_replica(state: &AppState) -> Option<crate::store::ReplicaHealth> {
    let health = state.store.probe_replica().await?;
    health.publish(&state.metrics.replica);
    Some(health)
}

/// How often stored data past its retention is deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement, so one pass never holds long locks.
const RETENTION_BATCH: i64 = 1000;

/// Deletes idempotency keys older than `IDEMPOTENCY_KEY_TTL_SECS`.
pub async fn retention(state: AppState, stop: watch::Receiver<bool>) {
    every(RETENTION_EVERY, stop, || async {
        prune_once(&state).await;
    })
    .await;
}

/// One retention pass; returns how many keys went.
pub async fn prune_once(state: &AppState) -> u64 {
    let before = state.clock.now_ms() - state.settings.idempotency_ttl.as_millis() as i64;
    let mut pruned = 0;
    loop {
        match state.store.prune_idempotency_keys(before, RETENTION_BATCH).await {
            Ok(n) => {
                pruned += n;
                if (n as i64) < RETENTION_BATCH {
                    return pruned;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning idempotency keys failed");
                return pruned;
            }
        }
    }
}

/// Runs `step` every `period` until `stop` is raised.
async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let stopped = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            break;
        }
        step().await;
    }
}

/// Asks the queue to admit the next batch several times per interval, so a
/// tick starts promptly; the queue admits once per tick however often asked
/// and however many instances ask. Each ask reads the policy afresh, and a
/// changed interval resets the pace at once, so operators tune admission
/// without a restart.
pub async fn admission(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tuning = state.admission.subscribe();
    loop {
        let interval_ms = tuning.borrow_and_update().interval_ms;
        let period = Duration::from_millis((interval_ms / 5).max(0) as u64)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            // The select only picks; the work runs after it, so no watch
            // guard is held across an await.
            let next = tokio::select! {
                _ = ticker.tick() => Next::Admit,
                Ok(()) = tuning.changed() => Next::Retune,
                _ = stop.wait_for(|s| *s) => Next::Stop,
            };
            match next {
                Next::Admit => admit_once(&state).await,
                Next::Retune => break,
                Next::Stop => return,
            }
        }
    }
}

enum Next {
    Admit,
    Retune,
    Stop,
}

async fn admit_once(state: &AppState) {
    let span = tracing::info_span!("queue.admission", otel.name = "queue admission", admitted = tracing::field::Empty);
    let result = state.queue.admit(state.admission_policy(), state.clock.now_ms()).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(Some(admitted)) => {
            span.record("admitted", admitted);
            state.metrics.admitted.inc_by(admitted);
            if admitted > 0 {
                tracing::info!(admitted, "admitted users from the waiting queue");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "admission tick failed"),
    }
}

/// Releases lapsed holds in batches until none are left.
pub async fn sweeper(state: AppState, stop: watch::Receiver<bool>) {
    let batch = state.settings.sweep_batch;
    every(state.settings.sweep_interval, stop, || async {
        loop {
            match state.store.sweep_expired(state.clock.now_ms(), batch).await {
                Ok(n) => {
                    state.metrics.expirations.inc_by(n);
                    if (n as i64) < batch {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "hold sweep failed");
                    break;
                }
            }
        }
    })
    .await;
}
