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

/// CPU time (user + system) so far of the thread or process whose `stat`
/// file this is: `/proc/thread-self/stat` or `/proc/self/stat`.
fn cpu_time(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which ends at the last ')'): utime and
    // stime are the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let telemetry = telemetry::init(&booking::telemetry_config())?;
        let settings = booking::settings::Settings {
            database_url: booking::settings::Secret::new("sqlite::memory:"),
            database_max_connections: 1,
            ..Default::default()
        };
        let state = booking::build_state(settings, booking::domain::Clock::default()).await?;
        let app = booking::app(state);
        let request =
            || axum::http::Request::builder().uri("/v1/no-such-route").body(Body::empty()).expect("valid request");
        for _ in 0..n / 10 {
            app.clone().oneshot(request()).await?;
        }
        let (thread0, process0, wall0) =
            (cpu_time("/proc/thread-self/stat"), cpu_time("/proc/self/stat"), std::time::Instant::now());
        for _ in 0..n {
            let response = app.clone().oneshot(request()).await?;
            std::hint::black_box(response);
        }
        let (thread, process, wall) =
            (cpu_time("/proc/thread-self/stat") - thread0, cpu_time("/proc/self/stat") - process0, wall0.elapsed());
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
