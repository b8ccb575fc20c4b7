//! The JSON log line: `timestamp`, `level`, `message`, `service_name`,
//! `trace_id`, `span_id`, `parent_span_id` (W3C hex, null where none), then
//! the event's own fields. One object per line on stdout.
//!
//! The line is written field by field into the formatter's buffer (strings
//! escaped by serde_json), not built as a map first: this runs for every
//! request.

use std::{fmt, io::Write as _};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context, registry::LookupSpan};

use super::{
    otlp,
    spans::{self, FieldsAre, SpanContext},
};

/// Appends `value` as JSON string contents (no quotes), escaped.
fn escape_into(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    // Most values (routes, codes, messages) need no escape: one pass to
    // check, one copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        return;
    }
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// Escapes what is formatted into it (for `Debug` and `Display` values).
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Appends `,"key":`.
fn put_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    escape_into(out, key);
    out.extend_from_slice(b"\":");
}

/// Appends `"key":"escaped value"`.
fn put_str(out: &mut Vec<u8>, key: &str, value: &str) {
    put_key(out, key);
    out.push(b'"');
    escape_into(out, value);
    out.push(b'"');
}

/// Appends `"key":"hex digits"`, or `"key":null`.
fn put_hex(out: &mut Vec<u8>, key: &str, digits: Option<&[u8]>) {
    put_key(out, key);
    match digits {
        Some(d) => {
            out.push(b'"');
            out.extend_from_slice(d);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends the current time as RFC 3339 UTC with microseconds. The part up
/// to the second is formatted once per second per thread.
fn put_timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (now.as_secs(), now.subsec_micros());
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let at = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            cached.1 = at.format("%Y-%m-%dT%H:%M:%S").to_string();
            cached.0 = secs;
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    let mut fraction = *b".000000Z";
    let mut rest = micros;
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&fraction);
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
        let shared =
            Shared { buf: std::sync::Mutex::new(Vec::with_capacity(FLUSH_AT * 2)), full: std::sync::Condvar::new() };
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
                    let Ok((mut guard, _)) =
                        flusher.full.wait_timeout_while(guard, FLUSH_EVERY, |b| b.len() < FLUSH_AT)
                    else {
                        return;
                    };
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
}

/// Appends the event as one line, `\n` included: what stdout and Loki get.
fn render(service_name: &str, line: &mut Vec<u8>, event: &Event<'_>, cx: Option<SpanContext>) {
    line.extend_from_slice(b"{\"timestamp\":\"");
    put_timestamp(line);
    line.push(b'"');
    put_str(line, "level", event.metadata().level().as_str());
    put_str(line, "service_name", service_name);
    put_hex(line, "trace_id", cx.map(|c| c.trace_id.hex()).as_ref().map(|h| &h[..]));
    put_hex(line, "span_id", cx.map(|c| c.span_id.hex()).as_ref().map(|h| &h[..]));
    put_hex(line, "parent_span_id", cx.and_then(|c| c.parent).map(|p| p.hex()).as_ref().map(|h| &h[..]));
    put_str(line, "target", event.metadata().target());
    let mut fields = FieldWriter { out: line, has_message: false };
    event.record(&mut fields);
    if !fields.has_message {
        line.extend_from_slice(b",\"message\":null");
    }
    line.extend_from_slice(b"}\n");
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // One write per line: lines from concurrent requests never interleave.
        with_rendered_line(&self.service_name, event, spans::current(&ctx), |line| {
            let _ = self.writer.make_writer().write_all(line);
        });
    }
}

/// Renders `event` as its JSON line (`\n` included) into this thread's
/// buffer, reused so that no line allocates, and hands it to `sink`.
pub(crate) fn with_rendered_line(
    service_name: &str,
    event: &Event<'_>,
    cx: Option<SpanContext>,
    sink: impl FnOnce(&[u8]),
) {
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with(|cell| {
        // A line written while another is being rendered on this thread
        // (a writer that logs) gets a buffer of its own.
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let line = borrowed.as_deref_mut().unwrap_or(&mut own);
        line.clear();
        render(service_name, line, event, cx);
        sink(line);
        if line.capacity() > 64 * 1024 {
            *line = Vec::new();
        }
    });
}

/// The layer that sends each event as an OTLP log record, with the trace
/// and span ids of the span it happens in.
///
/// One exception, when `spans_carry_access` is set (spans are exported):
/// a request's access line (a target ending in [`super::ACCESS_SUFFIX`], info level) is not
/// sent when the request's span is sampled, since that span goes over the
/// same OTLP connection with every field of the line (method, route, status,
/// duration, error type) and the same ids. The line still goes to stdout and
/// to Loki's direct path; failed requests' lines (error level) and every
/// other event are always sent. At 100% sampling this halves what the
/// collector has to take per request.
pub struct OtlpLogs {
    queue: otlp::Queue,
    spans_carry_access: bool,
}

impl OtlpLogs {
    pub fn new(queue: otlp::Queue, spans_carry_access: bool) -> Self {
        Self { queue, spans_carry_access }
    }
}

impl<S> Layer<S> for OtlpLogs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Shipping a record must never produce another record to ship.
        if super::from_exporter(event) {
            return;
        }
        // One buffer per thread, reused, as for the JSON line.
        thread_local! {
            static RECORD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let cx = spans::current(&ctx);
        let meta = event.metadata();
        if self.spans_carry_access
            && super::is_access(meta.target())
            && *meta.level() != tracing::Level::ERROR
            && cx.is_some_and(|c| c.sampled)
        {
            return;
        }
        RECORD.with(|cell| {
            let mut buf = cell.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)).unwrap_or_default();
            buf.clear();
            let buf = self.encode(buf, event, cx);
            self.queue.push(&buf);
            if let Ok(mut b) = cell.try_borrow_mut()
                && buf.capacity() <= 64 * 1024
            {
                *b = buf;
            }
        });
    }
}

impl OtlpLogs {
    /// Appends the event to `buf` as an OTLP `LogRecord`.
    fn encode(&self, buf: Vec<u8>, event: &Event<'_>, cx: Option<SpanContext>) -> Vec<u8> {
        let mut fields = spans::Fields::new(buf, FieldsAre::LogRecord);
        event.record(&mut fields);
        let mut record = fields.buf;
        let now = otlp::unix_nanos();
        otlp::put_fixed64(&mut record, 1, now);
        otlp::put_fixed64(&mut record, 11, now);
        let level = *event.metadata().level();
        let severity = match level {
            tracing::Level::TRACE => 1,
            tracing::Level::DEBUG => 5,
            tracing::Level::INFO => 9,
            tracing::Level::WARN => 13,
            tracing::Level::ERROR => 17,
        };
        otlp::put_uint(&mut record, 2, severity);
        otlp::put_bytes(&mut record, 3, level.as_str().as_bytes());
        if let Some(cx) = cx {
            otlp::put_fixed32(&mut record, 8, u32::from(cx.sampled));
            otlp::put_bytes(&mut record, 9, &cx.trace_id.0.to_be_bytes());
            otlp::put_bytes(&mut record, 10, &cx.span_id.0.to_be_bytes());
        }
        record
    }
}

struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
    has_message: bool,
}

impl FieldWriter<'_> {
    /// A number or `true`/`false` as serde_json writes it (its integer and
    /// float formatting is several times faster than `Display`'s, and a
    /// non-finite float becomes `null`).
    fn raw(&mut self, field: &Field, value: impl serde::Serialize) {
        self.has_message |= field.name() == "message";
        put_key(self.out, field.name());
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }
}

impl tracing::field::Visit for FieldWriter<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.raw(field, value);
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
        // The line has its own `trace_id` (see `observe`'s access line).
        if field.name() == "trace_id" {
            return;
        }
        self.has_message |= field.name() == "message";
        put_str(self.out, field.name(), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.has_message |= field.name() == "message";
        put_key(self.out, field.name());
        self.out.push(b'"');
        let _ = fmt::Write::write_fmt(&mut Escaping(self.out), format_args!("{value:?}"));
        self.out.push(b'"');
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
        let layer = JsonLines::new("some-service", move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(route = "/v1/x", status = 201u64, latency_ms = 1.5, quote = "a\"b", tricky = "line\nbreak\ttab\u{1}bell \\ \"é\"", debugged = ?Some("x\ny"), not_a_number = f64::NAN, big = u64::MAX, negative = -3i64, "request");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "request");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["service_name"], "some-service");
        assert!(line["trace_id"].is_null() && line["span_id"].is_null() && line["parent_span_id"].is_null());
        assert_eq!((line["status"].as_u64(), line["latency_ms"].as_f64()), (Some(201), Some(1.5)));
        assert_eq!(line["quote"], "a\"b");
        assert_eq!(line["tricky"], "line\nbreak\ttab\u{1}bell \\ \"é\"");
        assert_eq!(line["debugged"], "Some(\"x\\ny\")", "Debug output is escaped too");
        assert!(line["not_a_number"].is_null(), "JSON has no NaN");
        assert_eq!((line["big"].as_u64(), line["negative"].as_i64()), (Some(u64::MAX), Some(-3)));
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok());
        assert_eq!(timestamp.len(), "2026-01-01T00:00:00.000000Z".len(), "microseconds: {timestamp}");
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
