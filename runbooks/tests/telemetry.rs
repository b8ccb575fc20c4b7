//! The platform's three programs speak one telemetry: booking, alerting and
//! the runbook CLI write log lines of the same shape, the seed's fields
//! first (`timestamp`, `level`, `trace_id`, `span_id`, `parent_span_id`,
//! `service_name`, `message`).

mod support;

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use support::{Process, TempDir, eventually, free_port, runbook_with, workspace_binary};

/// The fields every log line carries, in the order the seed lists them.
const SEED_FIELDS: [&str; 7] =
    ["timestamp", "level", "trace_id", "span_id", "parent_span_id", "service_name", "message"];

/// The first line of `text` that is a JSON object with a `message`, raw.
fn first_log_line(text: &str) -> Option<String> {
    text.lines().find(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("message").is_some())).map(str::to_owned)
}

/// Checks the seed's fields and returns them in the order the line has them.
fn seed_shape(raw: &str, service: &str) -> Vec<&'static str> {
    let line: Value = serde_json::from_str(raw).unwrap();
    assert!(line.is_object(), "not an object: {raw}");
    for field in SEED_FIELDS {
        assert!(line.get(field).is_some(), "{service}: no {field} in {raw}");
    }
    assert_eq!(line["service_name"], service, "{raw}");
    let t = line["timestamp"].as_str().unwrap_or_default();
    assert!(t.len() >= 20 && t.as_bytes()[10] == b'T' && t.ends_with('Z'), "RFC 3339 in UTC: {raw}");
    assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap_or_default()), "{raw}");
    for id in ["trace_id", "span_id", "parent_span_id"] {
        let v = &line[id];
        assert!(v.is_null() || v.as_str().is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit())), "{id}: {raw}");
    }
    let mut order: Vec<(usize, &'static str)> =
        SEED_FIELDS.iter().map(|f| (raw.find(&format!("\"{f}\":")).unwrap_or(usize::MAX), *f)).collect();
    order.sort();
    order.into_iter().map(|(_, f)| f).collect()
}

/// Starts `command` with its stdout in a file and returns its first log line.
async fn first_line_of(mut command: std::process::Command, dir: &TempDir, what: &str) -> String {
    let path = dir.path(&format!("{what}.log"));
    command.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(std::fs::File::create(&path).unwrap());
    let _process = Process(command.spawn().unwrap_or_else(|e| panic!("{what} starts: {e}")));
    eventually(what, Duration::from_secs(30), || {
        let line = std::fs::read_to_string(&path).ok().and_then(|t| first_log_line(&t));
        async move { line }
    })
    .await
}

#[tokio::test]
async fn booking_alerting_and_runbook_write_log_lines_of_one_shape() {
    let dir = TempDir::new("runbook-telemetry");
    let booking = first_line_of(testkit::embedded_booking(&dir.path("b.db"), free_port()), &dir, "booking").await;

    let mut alerting = std::process::Command::new(workspace_binary("alerting"));
    alerting
        .arg("serve")
        .env_clear()
        .env("ALERTING_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("ALERTING_DATABASE_URL", format!("sqlite://{}", dir.path("a.db").display()))
        .env("ALERTING_SCRAPE", "booking=http://127.0.0.1:1/metrics");
    let alerting = first_line_of(alerting, &dir, "alerting").await;

    // The CLI's stdout is its report; its log lines go to stderr.
    let run = runbook_with(
        &["run", "telemetry-pipeline-down", "--booking-url", "http://127.0.0.1:1", "--json"],
        "",
        &[("RUST_LOG", "info")],
    )
    .await;
    let runbook = first_log_line(&run.stderr).unwrap_or_else(|| panic!("no log line on stderr: {}", run.stderr));
    assert!(run.stdout.trim_start().starts_with('{'), "stdout stays the report: {}", run.stdout);

    let shapes = [seed_shape(&booking, "booking"), seed_shape(&alerting, "alerting"), seed_shape(&runbook, "runbook")];
    assert_eq!(shapes[0], shapes[1], "booking {booking}\nalerting {alerting}");
    assert_eq!(shapes[0], shapes[2], "booking {booking}\nrunbook {runbook}");
    // Quiet by default: a terminal shows the report, not log lines.
    let quiet = runbook_with(&["run", "telemetry-pipeline-down", "--booking-url", "http://127.0.0.1:1"], "", &[]).await;
    assert!(first_log_line(&quiet.stderr).is_none(), "{}", quiet.stderr);
}

/// One `runbook run` is one trace: a span per step, and booking's server
/// span for the admin call a step made hangs under that step's span (the
/// CLI sends `traceparent`), all in the real collector.
#[tokio::test]
async fn a_runbook_run_is_one_trace_that_booking_s_spans_join() {
    let dir = TempDir::new("runbook-telemetry");
    let rotel = testkit::rotel::Rotel::start(&dir.path(""));
    let endpoint = format!("http://127.0.0.1:{}", rotel.http);
    let port = free_port();
    let mut command = testkit::embedded_booking(&dir.path("b.db"), port);
    command
        .env("OTEL_SDK_DISABLED", "false")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let booking_url = format!("http://127.0.0.1:{port}");
    let mut booking = Process(command.spawn().expect("booking starts"));
    let http = support::http();
    eventually("booking up", Duration::from_secs(30), || {
        assert!(booking.0.try_wait().ok().flatten().is_none(), "booking exited");
        let up = http.get(format!("{booking_url}/healthz")).send();
        async move { up.await.ok().filter(|r| r.status().is_success()).map(drop) }
    })
    .await;

    let run = runbook_with(
        &["run", "high-error-rate", "--booking-url", &booking_url, "--skip", "failing-routes", "--json"],
        "",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_SERVICE_NAME", "runbook")],
    )
    .await;
    assert_eq!(run.step("chaos")["status"], "ok", "{}\n{}", run.stdout, run.stderr);

    // The CLI flushed its spans before it exited; SIGTERM makes booking
    // flush its own, and the collector writes its log out as it stops.
    let pid = booking.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    eventually("booking to exit", Duration::from_secs(30), || {
        let exited = booking.0.try_wait().ok().flatten().map(drop);
        async move { exited }
    })
    .await;
    rotel.stop();
    let joined = |spans: &[testkit::rotel::SpanSeen]| {
        let root = spans.iter().find(|s| s.name == "runbook high-error-rate")?;
        let step = spans.iter().find(|s| s.name == "step chaos" && s.trace_id == root.trace_id)?;
        let server = spans.iter().find(|s| s.name == "GET /v1/admin/chaos" && s.trace_id == root.trace_id)?;
        Some((root.clone(), step.clone(), server.clone()))
    };
    let spans = eventually("the run's and booking's spans in the collector's log", Duration::from_secs(60), || {
        let spans = testkit::rotel::spans_in(&rotel.log());
        let found = joined(&spans).map(|_| spans);
        async move { found }
    })
    .await;
    let (root, step, server) = joined(&spans).expect("found above");
    assert!(root.parent_id.is_empty(), "the run is the trace's root: {root:?}");
    assert_eq!(step.parent_id, root.id, "a step is a child of the run");
    assert_eq!(server.parent_id, step.id, "booking's span is a child of the step that called it");
    let steps: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id && s.parent_id == root.id)
        .map(|s| s.name.as_str())
        .collect();
    assert!(steps.contains(&"step readiness") && steps.contains(&"step db-pool"), "{steps:?}");
}
