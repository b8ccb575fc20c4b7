//! What telemetry costs one request in CPU, without a network, a database
//! or a load generator in the way: drives the real router in process (a
//! request to an unknown route, which passes through every telemetry step:
//! server span, access line, metrics with exemplar, `x-trace-id`) and
//! prints CPU time per request of the request path (this thread) and of the
//! whole process (the exporter and log threads too).
//!
//! ```text
//! # telemetry as configured by the OTEL_* variables (export to a collector):
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 RUST_LOG=info \
//!   cargo run --release --example telemetry_probe -- 200000 > /dev/null
//! # off:
//! OTEL_SDK_DISABLED=true RUST_LOG=warn cargo run --release --example telemetry_probe -- 200000 > /dev/null
//! ```
//! Results go to stderr; log lines go to stdout.

use std::time::Duration;

use axum::body::Body;
use tower::ServiceExt as _;

/// Thread and process CPU clocks, read from /proc (no libc binding needed).
mod clock {
    use std::time::Duration;

    pub enum Id {
        Thread,
        Process,
    }

    pub fn now(id: Id) -> Duration {
        let path = match id {
            Id::Thread => "/proc/thread-self/stat",
            Id::Process => "/proc/self/stat",
        };
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the command name (which ends at the last ')'):
        // utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }
}

fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let telemetry = booking::telemetry::init(&booking::telemetry::TelemetryConfig::from_env())?;
        let settings = booking::settings::Settings {
            database_url: booking::settings::Secret::new("sqlite::memory:"),
            database_max_connections: 1,
            ..Default::default()
        };
        let state = booking::build_state(settings, booking::domain::Clock::default()).await?;
        let app = booking::app(state);
        let request = || axum::http::Request::builder().uri("/v1/no-such-route").body(Body::empty()).expect("valid request");
        for _ in 0..n / 10 {
            app.clone().oneshot(request()).await?;
        }
        let (thread0, process0, wall0) = (clock::now(clock::Id::Thread), clock::now(clock::Id::Process), std::time::Instant::now());
        for _ in 0..n {
            let response = app.clone().oneshot(request()).await?;
            std::hint::black_box(response);
        }
        let (thread, process, wall) =
            (clock::now(clock::Id::Thread) - thread0, clock::now(clock::Id::Process) - process0, wall0.elapsed());
        let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
        eprintln!(
            "{n} requests: request path {:.2} us CPU each, process {:.2} us CPU each, wall {:.2} us each",
            per(thread),
            per(process),
            per(wall)
        );
        telemetry.shutdown();
        anyhow::Ok(())
    })
}
