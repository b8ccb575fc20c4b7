//! Logs, traces and metrics.
//!
//! - Logs: one JSON object per line on stdout with trace and span ids
//!   ([`logs::JsonLines`]); also over OTLP logs when an OTLP endpoint is set,
//!   and straight to Loki (`tracing-loki`) when `LOKI_URL` is set.
//! - Traces: OpenTelemetry spans for each request, database operation, Redis
//!   call, admission tick, reservation and payment, exported over OTLP gRPC
//!   or HTTP/protobuf as the standard `OTEL_*` variables say. Ids are made
//!   even when nothing is exported, so log lines always carry them.
//! - Metrics: Prometheus text at `/metrics` ([`metrics`]).
//!
//! Export runs in background batches: a slow or absent collector never blocks
//! a request. What cannot be delivered is dropped and counted in
//! `telemetry_dropped_total{signal}`.

pub mod limits;
pub mod logs;
pub mod metrics;

use std::sync::LazyLock;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    logs::{LogBatch, LogExporter, SdkLoggerProvider},
    trace::{SdkTracerProvider, SpanData, SpanExporter},
    error::OTelSdkResult,
};
use prometheus::IntCounterVec;
use tracing_subscriber::{Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};

/// Telemetry this process could not deliver, by signal. One per process, as
/// the exporters are; every app's registry exposes it.
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        prometheus::Opts::new("telemetry_dropped_total", "Telemetry dropped: spans and log records whose export failed, log lines stdout could not take"),
        &["signal"],
    )
    .expect("valid metric")
});

/// Runs one call to a backing service (database, Redis) inside a client span
/// named "`system` `operation`", and times it into `histogram`.
pub async fn client_call<T>(
    system: &'static str,
    operation: &'static str,
    histogram: Option<&prometheus::HistogramVec>,
    call: impl Future<Output = T>,
) -> T {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "client",
        otel.name = format!("{} {operation}", if system == "redis" { "redis" } else { "db" }),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
    );
    let started = std::time::Instant::now();
    let result = call.instrument(span).await;
    if let Some(h) = histogram {
        h.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
    }
    result
}

/// What to turn on; read from the standard OpenTelemetry variables.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub service_name: String,
    /// `OTEL_SDK_DISABLED=true` turns tracing off entirely (log lines then
    /// carry null ids). Used to measure what telemetry costs.
    pub disabled: bool,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or the `_TRACES_`/`_LOGS_` variants).
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or `http/protobuf`.
    pub otlp_http: bool,
    /// `OTEL_LOGS_EXPORTER`: `otlp` (the default) also sends log records
    /// over OTLP when an endpoint is set; `none` keeps them on stdout only.
    pub otlp_logs: bool,
    /// `LOKI_URL`: push logs straight to Loki as well.
    pub loki_url: Option<String>,
    /// The `env` label of Loki streams: `deployment.environment` from
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `DEPLOY_ENV`, else `local`.
    pub environment: String,
}

impl TelemetryConfig {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let environment = var("OTEL_RESOURCE_ATTRIBUTES")
            .and_then(|attrs| {
                attrs.split(',').find_map(|kv| kv.trim().strip_prefix("deployment.environment=").map(str::to_owned))
            })
            .or_else(|| var("DEPLOY_ENV"))
            .unwrap_or_else(|| "local".into());
        Self {
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "booking".into()),
            disabled: var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            otlp_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT")),
            otlp_http: var("OTEL_EXPORTER_OTLP_PROTOCOL").is_some_and(|p| p.starts_with("http")),
            otlp_logs: var("OTEL_LOGS_EXPORTER").is_none_or(|v| v.split(',').any(|e| e.trim() == "otlp")),
            loki_url: var("LOKI_URL"),
            environment,
        }
    }
}

/// Keeps the exporters alive; flushes them on shutdown.
#[derive(Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    logger_provider: Option<SdkLoggerProvider>,
    stdout: Option<logs::BufferedStdout>,
}

impl Telemetry {
    /// Flushes what is buffered, for at most a few seconds.
    pub fn shutdown(mut self) {
        if let Some(p) = self.tracer_provider.take() {
            let _ = p.shutdown();
        }
        if let Some(p) = self.logger_provider.take() {
            let _ = p.shutdown();
        }
        // Dropping flushes the log lines.
    }
}

impl Drop for Telemetry {
    /// Buffered log lines reach stdout however the process ends its `main`
    /// (an error return included).
    fn drop(&mut self) {
        if let Some(stdout) = &self.stdout {
            stdout.flush();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("LOKI_URL: {0}")]
    Loki(String),
}

/// One filter for the whole subscriber: spans by one set of directives,
/// events (log lines) by `RUST_LOG`.
///
/// Deliberately not per-layer filters (`layer.with_filter(..)`): those keep
/// their verdicts in a thread-local that a nested event (an exporter or SDK
/// logging while another event is being handled) overwrites, and the outer
/// event then silently vanishes from every log layer
/// (tokio-rs/tracing#2704). We lost request log lines that way under load.
/// A plain global filter has no such state, and its verdict is cached per
/// callsite, so disabled log statements cost one atomic load.
struct SplitFilter {
    spans: Targets,
    events: Targets,
}

impl SplitFilter {
    fn enables(&self, meta: &tracing::Metadata<'_>) -> bool {
        let targets = if meta.is_span() { &self.spans } else { &self.events };
        targets.would_enable(meta.target(), meta.level())
    }
}

impl<S: tracing::Subscriber> Layer<S> for SplitFilter {
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if self.enables(meta) { tracing::subscriber::Interest::always() } else { tracing::subscriber::Interest::never() }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
        self.enables(meta)
    }
}

/// `RUST_LOG` (default `info,sqlx=warn`) as targets. Only `target=level`
/// directives are understood; anything else falls back to the default.
fn log_targets() -> Targets {
    const DEFAULT: &str = "info,sqlx=warn";
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT.into());
    wanted.parse().unwrap_or_else(|e| {
        eprintln!("RUST_LOG={wanted:?} is not a list of target=level directives ({e}); using {DEFAULT}");
        DEFAULT.parse().expect("valid default")
    })
}

/// Installs the global subscriber. Call once, inside the Tokio runtime.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    // RUST_LOG chooses which log lines are written; spans are recorded
    // whatever it says, so quieting the logs never loses a trace.
    let spans: Targets = if config.disabled { "off" } else { "info,sqlx=off,h2=off,tonic=off,hyper=off" }
        .parse()
        .expect("valid directives");
    let filter = SplitFilter { spans, events: log_targets() };
    let buffered = logs::BufferedStdout::start();
    let stdout = logs::JsonLines::new(config.service_name.clone(), buffered.clone());
    let mut telemetry = Telemetry { tracer_provider: None, logger_provider: None, stdout: Some(buffered) };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("deployment.environment", config.environment.clone()))
        .build();

    let otel_traces = if config.disabled {
        None
    } else {
        let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
        if let Some(endpoint) = &config.otlp_endpoint {
            builder = builder.with_batch_exporter(Counting { inner: span_exporter(endpoint, config.otlp_http)? });
        }
        let provider = builder.build();
        let tracer = provider.tracer("booking");
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        telemetry.tracer_provider = Some(provider);
        // Spans carry their semantic-convention attributes only: the code
        // location, thread and busy/idle timings would cost attributes and
        // clock reads on every span of every request.
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
                .with_level(false),
        )
    };

    // The exporters' own chatter must not loop back into them: the SDK runs
    // its exports with telemetry suppressed, and the OTLP log bridge and
    // Loki skip what their HTTP clients log (see `Quiet`).
    let otel_logs = match (&config.otlp_endpoint, config.disabled || !config.otlp_logs) {
        (Some(endpoint), false) => {
            let provider = SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(Counting { inner: log_exporter(endpoint, config.otlp_http)? })
                .build();
            let layer = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&provider);
            telemetry.logger_provider = Some(provider);
            Some(Quiet(layer))
        }
        _ => None,
    };

    let loki = match &config.loki_url {
        Some(url) => {
            let url = tracing_loki::url::Url::parse(url).map_err(|e| TelemetryError::Loki(e.to_string()))?;
            let (layer, task) = tracing_loki::builder()
                .label("service_name", config.service_name.clone())
                .and_then(|b| b.label("env", config.environment.clone()))
                .and_then(|b| b.build_url(url))
                .map_err(|e| TelemetryError::Loki(e.to_string()))?;
            tokio::spawn(task);
            Some(Quiet(layer))
        }
        None => None,
    };

    let _ = tracing_subscriber::registry().with(filter).with(otel_traces).with(stdout).with(otel_logs).with(loki).try_init();
    Ok(telemetry)
}

/// A log-shipping layer that ignores events from the telemetry exporters'
/// own stack, so shipping a line can never produce another line to ship.
/// An `on_event` check, not a per-layer filter (see [`SplitFilter`]).
struct Quiet<L>(L);

const EXPORTER_TARGETS: [&str; 6] = ["opentelemetry", "tonic", "h2", "hyper", "reqwest", "tracing_loki"];

impl<S, L> Layer<S> for Quiet<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx)
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_record(id, values, ctx)
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let target = event.metadata().target();
        if !EXPORTER_TARGETS.iter().any(|t| target.starts_with(t)) {
            self.0.on_event(event, ctx)
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_exit(id, ctx)
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, ctx)
    }
}

/// Logs only, for commands that are not the server.
pub fn init_logs() {
    let stdout = logs::JsonLines::new("booking", std::io::stdout);
    let _ = tracing_subscriber::registry().with(log_targets()).with(stdout).try_init();
}

fn span_exporter(endpoint: &str, http: bool) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    Ok(if http {
        builder.with_http().with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/'))).build()?
    } else {
        builder.with_tonic().with_endpoint(endpoint).build()?
    })
}

fn log_exporter(endpoint: &str, http: bool) -> Result<opentelemetry_otlp::LogExporter, TelemetryError> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    Ok(if http {
        builder.with_http().with_endpoint(format!("{}/v1/logs", endpoint.trim_end_matches('/'))).build()?
    } else {
        builder.with_tonic().with_endpoint(endpoint).build()?
    })
}

/// An exporter that counts what it failed to deliver.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if result.is_err() {
            DROPPED.with_label_values(&["spans"]).inc_by(n);
        }
        result
    }
    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counting<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        let result = self.inner.export(batch).await;
        if result.is_err() {
            DROPPED.with_label_values(&["logs"]).inc_by(n);
        }
        result
    }
    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
