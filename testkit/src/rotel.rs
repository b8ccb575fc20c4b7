//! A real OpenTelemetry collector for tests: rotel (from PyPI), receiving
//! OTLP over gRPC and HTTP and debug-logging what it receives, and parsers
//! for that log.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::free_port;

/// The `rotel-agent` binary of the rotel package (`ROTEL_AGENT` overrides).
pub fn rotel_agent() -> String {
    std::env::var("ROTEL_AGENT").unwrap_or_else(|_| {
        let out = Command::new("python3")
            .args(["-c", "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"])
            .output()
            .expect("python3 with the rotel package (scripts/test.sh installs it)");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

pub struct Rotel {
    pid_file: std::path::PathBuf,
    log_file: std::path::PathBuf,
    pub grpc: u16,
    pub http: u16,
}

impl Rotel {
    /// Starts the collector on two free ports, debug-logging every span
    /// and log record it receives into `dir`/rotel.log.
    pub fn start(dir: &std::path::Path) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let rotel = Rotel { pid_file: dir.join("rotel.pid"), log_file: dir.join("rotel.log"), grpc, http };
        let status = Command::new(rotel_agent())
            .args(["start", "--daemon", "--pid-file"])
            .arg(&rotel.pid_file)
            .arg("--log-file")
            .arg(&rotel.log_file)
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args([
                "--debug-log",
                "traces",
                "--debug-log",
                "logs",
                "--debug-log-verbosity",
                "detailed",
                "--exporter",
                "blackhole",
            ])
            .status()
            .expect("rotel-agent runs");
        assert!(status.success());
        wait_until("rotel listening", || std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok());
        rotel
    }

    /// What it logged so far, without colours.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        // Strip ANSI colours.
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Rotel {
    /// Stops the collector and waits for it to exit: it flushes its log only
    /// then, so everything it received is in the file afterwards.
    pub fn stop(&self) {
        let Ok(pid) = std::fs::read_to_string(&self.pid_file) else { return };
        let pid = pid.trim().to_owned();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_until("rotel exits", || !Command::new("kill").args(["-0", &pid]).status().is_ok_and(|s| s.success()));
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Polls `ready` every 50 ms, failing the test after 60 s.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    // Generous: the suite runs many servers side by side on two cores.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A span as rotel's debug log shows it.
#[derive(Debug, Clone)]
pub struct SpanSeen {
    pub trace_id: String,
    pub parent_id: String,
    pub id: String,
    pub name: String,
}

pub fn spans_in(log: &str) -> Vec<SpanSeen> {
    let mut spans = Vec::new();
    let mut current: Option<SpanSeen> = None;
    for line in log.lines() {
        let field = |label: &str| {
            line.trim().strip_prefix(label).map(|r| r.trim_start().trim_start_matches(':').trim().to_owned())
        };
        if line.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(SpanSeen {
                trace_id: String::new(),
                parent_id: String::new(),
                id: String::new(),
                name: String::new(),
            });
        } else if ["Resource", "Scope", "LogRecord"].iter().any(|p| line.starts_with(p)) {
            // A log record's "Trace ID" must not land on the span before it.
            spans.extend(current.take());
        } else if let Some(span) = current.as_mut() {
            if let Some(v) = field("Trace ID") {
                span.trace_id = v;
            } else if let Some(v) = field("Parent ID") {
                span.parent_id = v;
            } else if let Some(v) = field("ID") {
                span.id = v;
            } else if let Some(v) = field("Name") {
                span.name = v;
            }
        }
    }
    spans.extend(current);
    spans
}

/// A log record as rotel's debug log shows it.
#[derive(Debug, Clone)]
pub struct RecordSeen {
    pub body: String,
    pub trace_id: String,
}

pub fn log_records_in(log: &str) -> Vec<RecordSeen> {
    let mut records = Vec::new();
    let mut current: Option<RecordSeen> = None;
    for line in log.lines() {
        let trimmed = line.trim();
        if line.starts_with("LogRecord #") {
            records.extend(current.take());
            current = Some(RecordSeen { body: String::new(), trace_id: String::new() });
        } else if ["Resource", "Scope", "Span #"].iter().any(|p| line.starts_with(p)) {
            records.extend(current.take());
        } else if let Some(record) = current.as_mut() {
            if let Some(body) = trimmed.strip_prefix("Body: Str(").and_then(|b| b.strip_suffix(')')) {
                record.body = body.to_owned();
            } else if let Some(trace) = trimmed.strip_prefix("Trace ID") {
                record.trace_id = trace.trim_start().trim_start_matches(':').trim().to_owned();
            }
        }
    }
    records.extend(current);
    records
}
