//! A PostgreSQL read replica for the catalogue, behind a circuit breaker.
//!
//! `DATABASE_READ_URL` names a streaming replica. The concert list, the
//! performance lists and seat maps are read there while it is healthy;
//! everything that decides a seat or moves money stays on the primary.
//!
//! Health is probed every second: the primary's current WAL position is read
//! first, then asked of the replica whether it has replayed that far. If it
//! has, it was caught up at the instant the primary was asked; if not, its
//! lag is the time since it last was. Measured this way the lag is right
//! within one probe on an idle primary (where "now minus the last replayed
//! transaction's time" grows without bound) and on a replica cut off from
//! its primary (whose receive and replay positions agree, looking caught
//! up). A replica that does not answer, or lags past the bound
//! (`DATABASE_READ_MAX_LAG_SECS`), trips the breaker: reads go to the
//! primary until a probe finds it healthy again. A read that fails on the
//! replica trips it too and is retried on the primary, so a replica that
//! dies between probes costs no request an error.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{AnyPool, Row, any::AnyPoolOptions};

use super::{StoreError, StoreResult};

/// What the breaker and the metrics see of the replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaHealth {
    /// The last probe reached the replica.
    pub up: bool,
    /// Seconds behind the primary, at most (one probe's precision).
    pub lag_seconds: f64,
    /// Reads go to the replica.
    pub in_use: bool,
}

impl ReplicaHealth {
    /// Sets the replica's gauges to this probe's findings.
    pub fn publish(&self, metrics: &crate::metrics::ReplicaMetrics) {
        metrics.lag.set(self.lag_seconds);
        metrics.up.set(i64::from(self.up));
        metrics.in_use.set(i64::from(self.in_use));
    }
}

pub struct Replica {
    pool: AnyPool,
    max_lag: Duration,
    in_use: AtomicBool,
    up: AtomicBool,
    /// Milliseconds behind, as of the last probe.
    lag_ms: AtomicI64,
    /// When the replica was last seen caught up (`None`: never yet, and its
    /// lag counts from when the pool was opened).
    caught_up_at: std::sync::Mutex<Option<Instant>>,
    opened: Instant,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("health", &self.health()).finish_non_exhaustive()
    }
}

impl Replica {
    /// A pool on the replica; connects lazily, so a replica that is down at
    /// start leaves the service up, reading from the primary.
    pub fn open(url: &str, max_connections: u32, max_lag: Duration) -> StoreResult<Arc<Self>> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(1))
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy(&super::with_application_name(url))?;
        Ok(Arc::new(Self {
            pool,
            max_lag,
            in_use: AtomicBool::new(false),
            up: AtomicBool::new(false),
            lag_ms: AtomicI64::new(0),
            caught_up_at: std::sync::Mutex::new(None),
            opened: Instant::now(),
        }))
    }

    /// The pool to read from: the replica's while the breaker is closed.
    pub fn pool(&self) -> Option<&AnyPool> {
        self.in_use.load(Ordering::Acquire).then_some(&self.pool)
    }

    /// A read failed on the replica: stop using it until a probe says otherwise.
    pub fn trip(&self, error: &StoreError) {
        if self.in_use.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %error, "read replica failed a read; reading from the primary");
        }
    }

    pub fn health(&self) -> ReplicaHealth {
        ReplicaHealth {
            up: self.up.load(Ordering::Acquire),
            lag_seconds: self.lag_ms.load(Ordering::Acquire) as f64 / 1000.0,
            in_use: self.in_use.load(Ordering::Acquire),
        }
    }

    /// One probe (see the module's text); opens or closes the breaker.
    pub async fn probe(&self, primary: &AnyPool) -> ReplicaHealth {
        let asked_at = Instant::now();
        let position: Result<String, sqlx::Error> =
            sqlx::query("SELECT pg_current_wal_lsn()::text").fetch_one(primary).await.and_then(|r| r.try_get(0));
        let Ok(position) = position else {
            // Without the primary there is nothing to compare with; the
            // breaker stays as it is (writes fail anyway).
            return self.health();
        };
        let replayed = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, TRUE)")
                .bind(&position)
                .fetch_one(&self.pool),
        )
        .await;
        let replayed: Option<bool> = match replayed {
            Ok(Ok(row)) => row.try_get(0).ok(),
            _ => None,
        };
        let mut caught_up_at = self.caught_up_at.lock().unwrap_or_else(|p| p.into_inner());
        if replayed == Some(true) {
            *caught_up_at = Some(asked_at);
        }
        let lag = if replayed == Some(true) { Duration::ZERO } else { caught_up_at.unwrap_or(self.opened).elapsed() };
        drop(caught_up_at);
        let up = replayed.is_some();
        self.up.store(up, Ordering::Release);
        self.lag_ms.store(i64::try_from(lag.as_millis()).unwrap_or(i64::MAX), Ordering::Release);
        let healthy = up && lag <= self.max_lag;
        let was = self.in_use.swap(healthy, Ordering::AcqRel);
        if was != healthy {
            if healthy {
                tracing::info!("read replica healthy again; catalogue reads go to it");
            } else {
                tracing::warn!(
                    up,
                    lag_ms = self.lag_ms.load(Ordering::Acquire),
                    max_lag_ms = self.max_lag.as_millis() as u64,
                    "read replica down or behind; catalogue reads go to the primary"
                );
            }
        }
        self.health()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
