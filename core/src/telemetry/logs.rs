//! The JSON log line: `timestamp`, `level`, `message`, `service_name`,
//! `trace_id`, `span_id`, `parent_span_id` (W3C hex, null where none), then
//! the event's own fields. One object per line on stdout.
//!
//! The line is written field by field into the formatter's buffer (strings
//! escaped by serde_json), not built as a map first: this runs for every
//! request.

use std::{
    fmt::{self, Write as _},
    io::Write as _,
};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context, registry::LookupSpan};

/// The OpenTelemetry ids of a span known to the tracing registry.
fn otel_ids(id: &tracing::span::Id) -> Option<(TraceId, SpanId)> {
    tracing::dispatcher::get_default(|dispatch| {
        let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
    })
}

/// Appends `"key":"escaped value"`.
fn put_str(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
}

fn put_hex(out: &mut String, key: &str, value: Option<impl fmt::Display>) {
    match value {
        Some(v) => {
            let _ = write!(out, ",\"{key}\":\"{v}\"");
        }
        None => {
            let _ = write!(out, ",\"{key}\":null");
        }
    }
}

/// Stdout with one write(2) per batch of lines instead of per line.
///
/// A log line is appended whole to a shared buffer (lines never
/// interleave); a thread writes the buffer out every 50 ms, or at once when
/// it passes 64 KiB; if stdout stops being read, lines beyond 16 MiB are
/// dropped and counted. `flush` (called on shutdown) writes what is left. At
/// tens of thousands of requests a second, one syscall per request line was
/// a measurable share of the service's CPU. A crash can lose at most the
/// last 50 ms of lines; requests' effects are in the database regardless.
#[derive(Clone)]
pub struct BufferedStdout {
    shared: std::sync::Arc<Shared>,
}

struct Shared {
    buf: std::sync::Mutex<Vec<u8>>,
    full: std::sync::Condvar,
}

const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
const FLUSH_AT: usize = 64 * 1024;
/// Beyond this, lines are dropped and counted in
/// `telemetry_dropped_total{signal="stdout"}`.
const HOLD_AT_MOST: usize = 16 * 1024 * 1024;

impl BufferedStdout {
    fn unstarted() -> Self {
        let shared = Shared { buf: std::sync::Mutex::new(Vec::with_capacity(FLUSH_AT * 2)), full: std::sync::Condvar::new() };
        Self { shared: std::sync::Arc::new(shared) }
    }

    /// Starts the flushing thread.
    pub fn start() -> Self {
        let this = Self::unstarted();
        let shared = this.shared.clone();
        let flusher = shared.clone();
        let _ = std::thread::Builder::new().name("log-flush".into()).spawn(move || {
            loop {
                let taken = {
                    let Ok(guard) = flusher.buf.lock() else { return };
                    let Ok((mut guard, _)) = flusher.full.wait_timeout_while(guard, FLUSH_EVERY, |b| b.len() < FLUSH_AT) else { return };
                    std::mem::replace(&mut *guard, Vec::with_capacity(FLUSH_AT * 2))
                };
                if !taken.is_empty() {
                    let _ = std::io::stdout().lock().write_all(&taken);
                }
            }
        });
        this
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        let taken = self.shared.buf.lock().map(|mut b| std::mem::take(&mut *b)).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&taken);
        let _ = out.flush();
    }
}

impl std::io::Write for BufferedStdout {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buf) = self.shared.buf.lock() {
            if buf.len() + data.len() > HOLD_AT_MOST {
                // Whoever reads stdout has stopped reading: drop the line
                // (counted) rather than grow without bound or block requests.
                super::DROPPED.with_label_values(&["stdout"]).inc();
            } else {
                buf.extend_from_slice(data);
                if buf.len() >= FLUSH_AT {
                    self.shared.full.notify_one();
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The layer that writes one JSON line per event.
///
/// A layer of its own rather than `tracing_subscriber::fmt` with a custom
/// event format: `fmt` also formats every span's fields into a string on
/// every span (which nothing here reads), and that showed in profiles of
/// the hot path.
pub struct JsonLines<W> {
    pub service_name: String,
    pub writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(service_name: impl Into<String>, writer: W) -> Self {
        Self { service_name: service_name.into(), writer }
    }

    /// The event as one line, `\n` included.
    fn render(&self, event: &Event<'_>, ids: Option<(TraceId, SpanId)>, parent: Option<SpanId>) -> String {
        let mut line = String::with_capacity(384);
        line.push_str("{\"timestamp\":\"");
        // Not `format("%Y-…")`: that parses the format string on every line.
        line.push_str(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        line.push('"');
        put_str(&mut line, "level", event.metadata().level().as_str());
        put_str(&mut line, "service_name", &self.service_name);
        put_hex(&mut line, "trace_id", ids.map(|(t, _)| t));
        put_hex(&mut line, "span_id", ids.map(|(_, s)| s));
        put_hex(&mut line, "parent_span_id", parent);
        put_str(&mut line, "target", event.metadata().target());
        let mut fields = FieldWriter { out: &mut line, has_message: false };
        event.record(&mut fields);
        if !fields.has_message {
            line.push_str(",\"message\":null");
        }
        line.push_str("}\n");
        line
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let (mut ids, mut parent) = (None, None);
        if let Some(current) = ctx.lookup_current() {
            ids = otel_ids(&current.id());
            parent = current.parent().and_then(|p| otel_ids(&p.id())).map(|(_, s)| s);
        }
        let line = self.render(event, ids, parent);
        // One write per line: lines from concurrent requests never interleave.
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }
}

struct FieldWriter<'a> {
    out: &'a mut String,
    has_message: bool,
}

impl FieldWriter<'_> {
    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        self.has_message |= field.name() == "message";
        let _ = write!(self.out, ",\"{}\":{value}", field.name());
    }
}

impl tracing::field::Visit for FieldWriter<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, value);
        } else {
            self.raw(field, "null");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.has_message |= field.name() == "message";
        put_str(self.out, field.name(), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_is_one_json_object_with_the_documented_fields() {
        use tracing_subscriber::prelude::*;
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let layer = JsonLines::new("booking", move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(route = "/v1/x", status = 201u64, latency_ms = 1.5, quote = "a\"b", "request");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "request");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["service_name"], "booking");
        assert!(line["trace_id"].is_null() && line["span_id"].is_null() && line["parent_span_id"].is_null());
        assert_eq!((line["status"].as_u64(), line["latency_ms"].as_f64()), (Some(201), Some(1.5)));
        assert_eq!(line["quote"], "a\"b");
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn with_nobody_reading_stdout_lines_beyond_the_cap_are_dropped_and_counted() {
        use std::io::Write as _;
        let dropped = || super::super::DROPPED.with_label_values(&["stdout"]).get();
        let before = dropped();
        let mut out = BufferedStdout::unstarted();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..16 {
            out.write_all(&line).unwrap();
        }
        assert_eq!(dropped(), before, "16 MiB fit");
        out.write_all(b"one more\n").unwrap();
        assert_eq!(dropped(), before + 1);
        assert_eq!(out.shared.buf.lock().unwrap().len(), HOLD_AT_MOST, "nothing beyond the cap is kept");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
