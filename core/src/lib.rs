//! The booking service: a waiting queue in front of seat holds, balances
//! and payments, with the database as the only judge of who gets a seat.
//!
//! [`Application::build`] wires settings to backends; [`app`] is the whole
//! HTTP service as a `Router`, which tests drive without a socket.

pub mod background;
pub mod domain;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod queue;
pub mod seed;
pub mod settings;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};

pub use http::{AppState, app};

use crate::{
    domain::Clock,
    metrics::Metrics,
    queue::{AdmissionTuning, Queue, QueueError},
    settings::{Settings, SettingsError},
    store::{Store, StoreError},
};

/// The service's name in its log lines, spans and resources, unless
/// `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE: &str = "booking";

/// The telemetry settings from the standard `OTEL_*` variables, plus
/// `BOOKING_OTLP_ACCESS_LINES=true` (each access line over OTLP logs even
/// when its span is exported).
pub fn telemetry_config() -> telemetry::TelemetryConfig {
    let mut config = telemetry::TelemetryConfig::from_env(SERVICE);
    config.otlp_access_lines = std::env::var("BOOKING_OTLP_ACCESS_LINES")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
    config
}

/// Why the service did not start. Each variant names the setting to change
/// and shows its cause as `source()`, not in its own text, so a printed
/// chain says each thing once.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("listening on {addr} (BOOKING_LISTEN)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("opening the database {location} (DATABASE_URL)")]
    Store { location: String, source: StoreError },
    #[error("opening the read replica {location} (DATABASE_READ_URL)")]
    Replica { location: String, source: StoreError },
    #[error("connecting to Redis {location} (REDIS_URL)")]
    Queue { location: String, source: QueueError },
}

/// Connects the backends the settings name: SQLite and the in-process queue
/// unless `DATABASE_URL` / `REDIS_URL` say otherwise.
pub async fn build_state(settings: Settings, clock: Clock) -> Result<AppState, BuildError> {
    settings.validate()?;
    let metrics = Metrics::new();
    metrics.set_limits(&limits::detect());
    let database_url = settings.database_url.expose();
    let store = Store::connect(database_url, settings.database_max_connections)
        .await
        .map_err(|source| BuildError::Store { location: store::location(database_url), source })?
        .with_metrics(metrics.store.clone());
    let store = match &settings.database_read_url {
        Some(url) => {
            let replica =
                store::Replica::open(url.expose(), settings.database_max_connections, settings.database_read_max_lag)
                    .map_err(|source| BuildError::Replica { location: store::location(url.expose()), source })?;
            let store = store.with_replica(replica);
            metrics.register_replica();
            // Read from the replica at once if it is healthy now.
            if let Some(health) = store.probe_replica().await {
                health.publish(&metrics.replica);
            }
            store
        }
        None => store,
    };
    let queue = match &settings.redis_url {
        Some(url) => Queue::redis(url.expose(), &settings.redis_key_prefix, Some(metrics.redis.clone()))
            .await
            .map_err(|source| BuildError::Queue { location: settings::redact_url(url.expose()), source })?,
        None => Queue::memory(),
    };
    let admission = watch::Sender::new(AdmissionTuning {
        batch: settings.admission_batch,
        interval_ms: settings.admission_interval.as_millis() as i64,
    });
    Ok(AppState::new(http::Services {
        store,
        queue,
        keys: settings.token_key(),
        entry_limit: http::EntryRateLimit::new(settings.queue_entry_rate_limit, clock.now_ms()),
        client_limits: http::ClientLimits::new(settings.signup_rate_per_minute),
        settings: Arc::new(settings),
        clock,
        metrics,
        caches: http::Caches::default(),
        chaos: http::Chaos::default(),
        admission,
    }))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Binds `BOOKING_LISTEN` first and only then opens the backends, so a
    /// taken port fails fast and leaves nothing behind (no new SQLite file).
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        settings.validate()?;
        let addr = settings.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| BuildError::Listen { addr, source })?;
        let state = build_state(settings, Clock::default()).await?;
        Ok(Self { listener, state })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops taking connections and
    /// drains in-flight requests for at most the configured grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self { listener, state } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let loops = background::spawn(state.clone(), stop_rx.clone());
        let grace = state.settings.shutdown_grace;
        let server = serving::serve(
            listener,
            app(state.clone()),
            state.settings.http,
            state.metrics.connections.clone(),
            async move {
                shutdown.await;
                tracing::info!("shutting down: draining in-flight requests");
                let _ = stop_tx.send(true);
            },
        );
        let mut drain = stop_rx;
        let result = tokio::select! {
            r = server => r,
            _ = async { let _ = drain.wait_for(|stop| *stop).await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "drain time exceeded; dropping remaining requests");
                Ok(())
            }
        };
        for handle in loops {
            let _ = tokio::time::timeout(grace, handle).await;
        }
        state.queue.settle(grace).await;
        state.store.close().await;
        result
    }
}

pub use serving::{error_chain, shutdown_signal};

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Quoting);

    /// Quotes its cause and returns it as `source()`, as sqlx does.
    #[derive(Debug, thiserror::Error)]
    #[error("returned: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        assert_eq!(error_chain(&Outer(Quoting(io))), "outer: returned: Address already in use");
        let listen = BuildError::Listen {
            addr: "127.0.0.1:8080".parse().unwrap(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use"),
        };
        assert_eq!(error_chain(&listen), "listening on 127.0.0.1:8080 (BOOKING_LISTEN): Address already in use");
    }
}
