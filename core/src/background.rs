//! Loops that run beside the server: admission ticks and the hold sweeper.
//! Each stops when the shutdown flag is raised.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle, time::MissedTickBehavior};

use tracing::Instrument;

use crate::AppState;

/// How often backend figures (Redis INFO) are sampled into the metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples the queue backend's own figures for the metrics.
pub async fn sampler(state: AppState, stop: watch::Receiver<bool>) {
    every(SAMPLE_EVERY, stop, || state.queue.sample()).await;
}

pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(admission(state.clone(), stop.clone())),
        tokio::spawn(sweeper(state.clone(), stop.clone())),
        tokio::spawn(sampler(state, stop)),
    ]
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
/// and however many instances ask.
pub async fn admission(state: AppState, stop: watch::Receiver<bool>) {
    let policy = state.admission_policy();
    let period = Duration::from_millis((policy.interval_ms / 5) as u64).clamp(Duration::from_millis(50), Duration::from_secs(1));
    every(period, stop, || async {
        let span = tracing::info_span!("queue.admission", otel.name = "queue admission", admitted = tracing::field::Empty);
        let result = state.queue.admit(policy, state.clock.now_ms()).instrument(span.clone()).await;
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
    })
    .await;
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
