//! Log lines pushed straight to Loki (`LOKI_URL`), bounded like every other
//! telemetry queue.
//!
//! Each entry is the same JSON line stdout gets (so Loki's `| json` and the
//! `trace_id` derived field work on it), in one stream per level with the
//! labels `service_name`, `level` and `env` only. A background thread pushes
//! batches to `/loki/api/v1/push` in Loki's own format, snappy-compressed
//! protobuf, with a deadline on every push.
//!
//! Why not `tracing-loki`: its queue has no bound and its client no timeout,
//! so a Loki that is slow or down grows the process without limit. Here the
//! queue holds at most `LOKI_MAX_QUEUE_BYTES` (default 8 MiB) of lines;
//! beyond that, and when a push fails, lines are dropped and counted in
//! `telemetry_dropped_total{signal="loki"}`.

use std::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tracing::{Event, Subscriber};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use super::{DROPPED, logs, otlp, spans};

/// Lines are pushed at least this often...
const PUSH_EVERY: Duration = Duration::from_secs(1);
/// ...or as soon as this much waits.
const PUSH_AT: usize = 1024 * 1024;
/// One push's deadline, connection included.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// The `telemetry_dropped_total` label.
pub const SIGNAL: &str = "loki";

const LEVELS: [tracing::Level; 5] =
    [tracing::Level::ERROR, tracing::Level::WARN, tracing::Level::INFO, tracing::Level::DEBUG, tracing::Level::TRACE];

fn level_index(level: tracing::Level) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(2)
}

/// Lines waiting to be pushed, per level: (Unix nanoseconds, line).
#[derive(Default)]
struct Pending {
    by_level: [Vec<(u64, Vec<u8>)>; 5],
    bytes: usize,
    count: u64,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    closing: AtomicBool,
    max_bytes: usize,
}

/// The layer and its pushing thread. Cloning shares the queue.
#[derive(Clone)]
pub struct Loki {
    shared: Arc<Shared>,
    service_name: String,
}

/// Waits for the pushing thread on shutdown.
pub struct LokiShipper {
    shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Loki {
    /// Starts pushing to `base` (Loki's URL; `/loki/api/v1/push` is added
    /// unless the URL already ends with it).
    pub fn start(base: &str, service_name: &str, environment: &str) -> Result<(Self, LokiShipper), String> {
        let url = push_url(base)?;
        let max_bytes = std::env::var("LOKI_MAX_QUEUE_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_QUEUE_BYTES);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
            max_bytes,
        });
        let client = reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .connect_timeout(PUSH_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let labels: Vec<String> = LEVELS
            .iter()
            .map(|level| {
                format!(
                    "{{env=\"{}\", level=\"{}\", service_name=\"{}\"}}",
                    label_value(environment),
                    level.as_str().to_ascii_lowercase(),
                    label_value(service_name)
                )
            })
            .collect();
        let (done_tx, done) = std::sync::mpsc::channel();
        let pusher = shared.clone();
        std::thread::Builder::new()
            .name("loki-push".into())
            .spawn(move || {
                loop {
                    let closing = pusher.closing.load(Ordering::Acquire);
                    let batch = {
                        let guard = pusher.pending.lock().unwrap_or_else(|p| p.into_inner());
                        let (mut guard, _) = pusher
                            .wake
                            .wait_timeout_while(guard, if closing { Duration::ZERO } else { PUSH_EVERY }, |p| {
                                p.bytes < PUSH_AT && !pusher.closing.load(Ordering::Acquire)
                            })
                            .unwrap_or_else(|p| p.into_inner());
                        std::mem::take(&mut *guard)
                    };
                    if batch.count > 0 {
                        let body = encode(&labels, &batch);
                        let sent = snap::raw::Encoder::new().compress_vec(&body).map_err(|e| e.to_string()).and_then(
                            |compressed| {
                                runtime.block_on(async {
                                    let response = client
                                        .post(url.as_str())
                                        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                                        .body(compressed)
                                        .send()
                                        .await
                                        .map_err(|e| e.without_url().to_string())?;
                                    let status = response.status();
                                    let _ = response.bytes().await;
                                    if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
                                })
                            },
                        );
                        if let Err(e) = sent {
                            DROPPED.with_label_values(&[SIGNAL]).inc_by(batch.count);
                            tracing::debug!(target: "loki_push", error = %e, lines = batch.count, "Loki push failed");
                        }
                    }
                    if closing {
                        break;
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| e.to_string())?;
        Ok((Self { shared: shared.clone(), service_name: service_name.to_owned() }, LokiShipper { shared, done }))
    }

    fn push(&self, level: tracing::Level, line: &[u8]) {
        let shared = &*self.shared;
        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.bytes + line.len() > shared.max_bytes {
            drop(pending);
            DROPPED.with_label_values(&[SIGNAL]).inc();
            return;
        }
        pending.bytes += line.len();
        pending.count += 1;
        pending.by_level[level_index(level)].push((otlp::unix_nanos(), line.to_vec()));
        if pending.bytes >= PUSH_AT {
            shared.wake.notify_one();
        }
    }
}

impl LokiShipper {
    /// Pushes what is queued and stops, waiting at most `within`.
    pub fn shutdown(self, within: Duration) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let _ = self.done.recv_timeout(within);
    }
}

impl<S> Layer<S> for Loki
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Pushing a line must never produce another line to push.
        if super::from_exporter(event) {
            return;
        }
        logs::with_rendered_line(&self.service_name, event, spans::current(&ctx), |line| {
            // Loki's line is the object without the newline.
            self.push(*event.metadata().level(), line.strip_suffix(b"\n").unwrap_or(line));
        });
    }
}

fn push_url(base: &str) -> Result<String, String> {
    let base = base.trim().trim_end_matches('/');
    let url = if base.ends_with("/loki/api/v1/push") { base.to_owned() } else { format!("{base}/loki/api/v1/push") };
    reqwest::Url::parse(&url).map_err(|e| format!("{e}"))?;
    Ok(url)
}

/// A label value inside `"…"`: quotes and backslashes escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `PushRequest` (Loki's pkg/push/push.proto): one `StreamAdapter`
/// (labels = 1, entries = 2) per level with lines, each `EntryAdapter` a
/// `Timestamp` (1: seconds = 1, nanos = 2) and the line (2).
fn encode(labels: &[String], batch: &Pending) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.bytes + 64 * batch.count as usize);
    for (level, entries) in batch.by_level.iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        let mut stream = Vec::with_capacity(entries.iter().map(|(_, l)| l.len() + 24).sum());
        otlp::put_bytes(&mut stream, 1, labels[level].as_bytes());
        let mut entry = Vec::new();
        let mut timestamp = Vec::with_capacity(16);
        for (nanos, line) in entries {
            timestamp.clear();
            otlp::put_uint(&mut timestamp, 1, nanos / 1_000_000_000);
            otlp::put_uint(&mut timestamp, 2, nanos % 1_000_000_000);
            entry.clear();
            otlp::put_bytes(&mut entry, 1, &timestamp);
            otlp::put_bytes(&mut entry, 2, line);
            otlp::put_bytes(&mut stream, 2, &entry);
        }
        otlp::put_bytes(&mut out, 1, &stream);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_url_is_lokis_push_path() {
        assert_eq!(push_url("http://loki:3100").unwrap(), "http://loki:3100/loki/api/v1/push");
        assert_eq!(push_url("http://loki:3100/loki/api/v1/push/").unwrap(), "http://loki:3100/loki/api/v1/push");
        assert!(push_url("not a url").is_err());
    }

    #[test]
    fn past_its_byte_bound_the_queue_drops_and_counts() {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
            max_bytes: 100,
        });
        let loki = Loki { shared, service_name: "some-service".into() };
        let dropped = || DROPPED.with_label_values(&[SIGNAL]).get();
        let before = dropped();
        for _ in 0..10 {
            loki.push(tracing::Level::INFO, &[b'x'; 10]);
        }
        assert_eq!(dropped(), before, "100 bytes fit");
        loki.push(tracing::Level::ERROR, b"one more");
        assert_eq!(dropped(), before + 1);
        let pending = loki.shared.pending.lock().unwrap();
        assert_eq!((pending.bytes, pending.count), (100, 10));
    }
}
