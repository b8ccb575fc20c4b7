//! Logs, traces and metrics for every service of the platform (booking,
//! alerting, runbook): each passes its own name in, nothing here is any
//! one service's.
//!
//! - Logs: one JSON object per line on stdout with trace and span ids
//!   ([`logs::JsonLines`]); also over OTLP logs when an OTLP endpoint is set
//!   ([`logs::OtlpLogs`]), and straight to Loki ([`loki`]) when `LOKI_URL`
//!   is set.
//! - Traces: OpenTelemetry spans from `tracing` spans and from the cheap
//!   request and client spans ([`spans::Spans`], [`client_call`]),
//!   exported over OTLP gRPC or HTTP/protobuf as the standard `OTEL_*`
//!   variables say ([`otlp`]). Ids are made even when nothing is exported,
//!   so log lines always carry them.
//! - Metrics: the conventions every registry keeps, the HTTP server metrics
//!   with exemplars, and the exposition ([`metrics`]).
//!
//! Export runs in background batches: a slow or absent collector never blocks
//! a request. What cannot be delivered is dropped and counted in
//! `telemetry_dropped_total{signal}`.

pub mod http;
pub mod logs;
pub mod loki;
pub mod metrics;
pub mod otlp;
pub mod spans;

use std::{
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use prometheus::IntCounterVec;
use tracing_subscriber::{Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};

/// Telemetry this process could not deliver, by signal. One per process, as
/// the exporters are; every app's registry exposes it.
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        prometheus::Opts::new(
            "telemetry_dropped_total",
            "Telemetry dropped: spans and log records whose export failed, log lines stdout could not take",
        ),
        &["signal"],
    )
    .expect("valid metric")
});

/// How the target of the one log line each request writes (the access
/// line) ends: `booking::access`, `alerting::access`.
pub const ACCESS_SUFFIX: &str = "::access";

/// Whether a log line's target is a service's access line.
pub fn is_access(target: &str) -> bool {
    target.ends_with(ACCESS_SUFFIX)
}

/// Runs one call to a backing service inside a client span named
/// "`db|redis` `operation`" (a [`spans::Leaf`]: these calls never have
/// children), and times it into `histogram`.
pub async fn client_call<T>(
    system: &'static str,
    operation: &'static str,
    histogram: Option<&prometheus::HistogramVec>,
    call: impl Future<Output = T>,
) -> T {
    let leaf = spans::Leaf::start();
    let started = std::time::Instant::now();
    let result = call.await;
    let took = started.elapsed();
    if let Some(h) = histogram {
        h.with_label_values(&[operation]).observe(took.as_secs_f64());
    }
    if let Some(leaf) = leaf {
        use otlp::Value::Str;
        let prefix = if system == "redis" { "redis" } else { "db" };
        leaf.end(
            took,
            &[prefix, " ", operation],
            spans::KIND_CLIENT,
            &[("db.system.name", Str(system)), ("db.operation.name", Str(operation))],
        );
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
    /// Where spans go: `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` and
    /// `…_PROTOCOL` (`http/protobuf`, the default, or `grpc`); none when no
    /// endpoint is set or `OTEL_TRACES_EXPORTER=none`.
    pub traces: Option<otlp::Destination>,
    /// Where log records go, the same way (`OTEL_LOGS_EXPORTER=none` keeps
    /// them on stdout only).
    pub logs: Option<otlp::Destination>,
    /// Send each request's access line over OTLP logs even when its span is
    /// exported (see [`logs::OtlpLogs`]); off unless the service sets it.
    pub otlp_access_lines: bool,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: spans::Sampler,
    /// `service.name`, `deployment.environment` and the rest of
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    /// `LOKI_URL`: push logs straight to Loki as well.
    pub loki_url: Option<String>,
    /// The `env` label of Loki streams: `deployment.environment` from
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `DEPLOY_ENV`, else `local`.
    pub environment: String,
    /// Where the JSON log lines go; a server's to stdout, a command line
    /// tool's to stderr (its stdout is its report).
    pub log_lines: LogLines,
}

/// Where a process writes its log lines, and what it writes when `RUST_LOG`
/// is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLines {
    /// Buffered to stdout, from `info` up: a server.
    Stdout,
    /// Straight to stderr, from `warn` up: a command line tool.
    Stderr,
}

impl LogLines {
    fn default_filter(self) -> &'static str {
        match self {
            LogLines::Stdout => SERVER_LOGS,
            LogLines::Stderr => "warn",
        }
    }
}

impl TelemetryConfig {
    /// `service` is the service's name unless `OTEL_SERVICE_NAME` or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
    pub fn from_env(service: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut resource: Vec<(String, String)> = var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|attrs| {
                attrs
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .filter(|(k, _)| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let environment = resource
            .iter()
            .find(|(k, _)| k == "deployment.environment")
            .map(|(_, v)| v.clone())
            .or_else(|| var("DEPLOY_ENV"))
            .unwrap_or_else(|| "local".into());
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .unwrap_or_else(|| service.to_owned());
        resource.retain(|(k, _)| k != "service.name" && k != "deployment.environment");
        resource.splice(
            0..0,
            [
                ("service.name".to_owned(), service_name.clone()),
                ("deployment.environment".to_owned(), environment.clone()),
                ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
                ("telemetry.sdk.name".to_owned(), env!("CARGO_PKG_NAME").to_owned()),
                ("telemetry.sdk.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ],
        );
        let exporter_on = |name: &str| var(name).is_none_or(|v| v.split(',').any(|e| e.trim() == "otlp"));
        Self {
            service_name,
            disabled: var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            traces: otlp::Destination::from_env(otlp::Signal::Traces).filter(|_| exporter_on("OTEL_TRACES_EXPORTER")),
            logs: otlp::Destination::from_env(otlp::Signal::Logs).filter(|_| exporter_on("OTEL_LOGS_EXPORTER")),
            otlp_access_lines: false,
            sampler: spans::Sampler::from_env(),
            resource,
            loki_url: var("LOKI_URL"),
            environment,
            log_lines: LogLines::Stdout,
        }
    }
}

/// Keeps the exporters alive; flushes them on shutdown.
#[derive(Default)]
pub struct Telemetry {
    exporters: Vec<otlp::Exporter>,
    loki: Option<loki::LokiShipper>,
}

impl Telemetry {
    /// Ships what is queued, for at most a few seconds per signal.
    pub fn shutdown(mut self) {
        for exporter in self.exporters.drain(..) {
            exporter.shutdown(Duration::from_secs(5));
        }
        if let Some(loki) = self.loki.take() {
            loki.shutdown(Duration::from_secs(5));
        }
        // Dropping flushes the log lines.
    }
}

impl Drop for Telemetry {
    /// Buffered log lines reach stdout however the process ends its `main`
    /// (an error return included).
    fn drop(&mut self) {
        flush_logs();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Otlp(#[from] otlp::SetupError),
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
        if self.enables(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
        self.enables(meta)
    }
}

/// What a server logs when `RUST_LOG` is not set.
const SERVER_LOGS: &str = "info,sqlx=warn";

/// `RUST_LOG` (else `default`) as targets. Only `target=level` directives
/// are understood; anything else falls back to the default.
fn log_targets(default: &str) -> Targets {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| default.into());
    wanted.parse().unwrap_or_else(|e| {
        eprintln!("RUST_LOG={wanted:?} is not a list of target=level directives ({e}); using {default}");
        default.parse().unwrap_or_default()
    })
}

/// Installs the global subscriber. Call once, inside the Tokio runtime.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    // RUST_LOG chooses which log lines are written; spans are recorded
    // whatever it says, so quieting the logs never loses a trace.
    let spans: Targets = if config.disabled { "off" } else { "info,sqlx=off,h2=off,tonic=off,hyper=off" }
        .parse()
        .expect("valid directives");
    let filter = SplitFilter { spans, events: log_targets(config.log_lines.default_filter()) };
    otlp::set_value_length_limit_from_env();
    let (stdout, stderr) = match config.log_lines {
        LogLines::Stdout => {
            let buffered = STDOUT.get_or_init(logs::BufferedStdout::start).clone();
            (Some(logs::JsonLines::new(config.service_name.clone(), buffered)), None)
        }
        LogLines::Stderr => (None, Some(logs::JsonLines::new(config.service_name.clone(), std::io::stderr))),
    };
    let mut telemetry = Telemetry { exporters: Vec::new(), loki: None };
    let resource = otlp::resource(&config.resource);
    let scope = otlp::scope(&config.service_name);
    let mut exporter = |signal, to: &otlp::Destination, settings| -> Result<otlp::Queue, TelemetryError> {
        let exporter = otlp::Exporter::start(signal, to.clone(), settings, resource.clone(), scope.clone())?;
        let queue = exporter.queue();
        telemetry.exporters.push(exporter);
        Ok(queue)
    };

    let traces = if config.disabled {
        None
    } else {
        let queue = match &config.traces {
            Some(to) => Some(exporter(otlp::Signal::Traces, to, otlp::BatchSettings::from_env("OTEL_BSP", 5000))?),
            None => None,
        };
        Some(spans::Spans::new(config.sampler.clone(), queue))
    };

    // The exporters' own chatter must not loop back into them: the OTLP log
    // layer and Loki skip what the exporters' stacks log (see `from_exporter`).
    let otel_logs = match (&config.logs, config.disabled) {
        (Some(to), false) => {
            let queue = exporter(otlp::Signal::Logs, to, otlp::BatchSettings::from_env("OTEL_BLRP", 1000))?;
            Some(logs::OtlpLogs::new(queue, config.traces.is_some() && !config.otlp_access_lines))
        }
        _ => None,
    };

    let loki = match &config.loki_url {
        Some(url) => {
            let (layer, shipper) =
                loki::Loki::start(url, &config.service_name, &config.environment).map_err(TelemetryError::Loki)?;
            telemetry.loki = Some(shipper);
            Some(layer)
        }
        None => None,
    };

    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(traces)
        .with(stdout)
        .with(stderr)
        .with(otel_logs)
        .with(loki)
        .try_init();
    Ok(telemetry)
}

/// The log lines buffered for stdout by [`init`].
static STDOUT: OnceLock<logs::BufferedStdout> = OnceLock::new();

/// Writes the buffered log lines out now: call it before
/// `std::process::exit`, which runs no destructor.
pub fn flush_logs() {
    if let Some(stdout) = STDOUT.get() {
        stdout.flush();
    }
}

/// The targets of the telemetry exporters' own stacks: shipping a line or
/// a record must never produce another one to ship.
const EXPORTER_TARGETS: [&str; 6] = ["opentelemetry", "tonic", "h2", "hyper", "reqwest", "loki_push"];

/// Logs only (no spans, no export), written straight to `to` with its
/// default filter unless `RUST_LOG` says otherwise: for commands that are
/// not a server.
pub fn init_logs(service: &str, to: LogLines) {
    let registry = tracing_subscriber::registry().with(log_targets(to.default_filter()));
    let name = service.to_owned();
    let _ = match to {
        LogLines::Stdout => registry.with(logs::JsonLines::new(name, std::io::stdout)).try_init(),
        LogLines::Stderr => registry.with(logs::JsonLines::new(name, std::io::stderr)).try_init(),
    };
}

/// Whether an event comes from the telemetry exporters' own stack.
pub(crate) fn from_exporter(event: &tracing::Event<'_>) -> bool {
    let target = event.metadata().target();
    EXPORTER_TARGETS.iter().any(|t| target.starts_with(t))
}
