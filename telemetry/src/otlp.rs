//! OTLP on the wire: spans and log records encoded straight into OTLP
//! protobuf as they end, queued as bytes, and shipped in batches by one
//! background thread over gRPC or HTTP/protobuf.
//!
//! Why not the OpenTelemetry SDK and `opentelemetry-otlp`: with every
//! request traced, the SDK's path (a large `SpanData` per span, moved through
//! the batch processor, then converted into the generated protobuf structs,
//! one `String` per attribute key, before prost encodes them) cost a third of
//! the hot path's throughput on this two-core machine (BENCHMARKS.md). Here a
//! span is a byte buffer from the start: attributes are encoded when they are
//! recorded, and ending the span appends it to the batch. The batch becomes an
//! `ExportTraceServiceRequest` by prefixing the resource and scope once.
//!
//! The encoding is checked against the official generated types
//! (`opentelemetry-proto`) in the tests below, and end to end against a real
//! collector in `core/tests/api/telemetry.rs`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::DROPPED;

// --- protobuf wire format -------------------------------------------------

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, u64::from(field << 3 | u32::from(wire)));
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A length-delimited field whose value is `parts` one after another.
pub(crate) fn put_concat(out: &mut Vec<u8>, field: u32, parts: &[&str]) {
    put_tag(out, field, LEN);
    put_varint(out, parts.iter().map(|p| p.len() as u64).sum());
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
}

pub(crate) fn put_fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    put_tag(out, field, FIXED32);
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(out, field, VARINT);
    put_varint(out, v);
}

/// A value of an attribute (`AnyValue`).
pub enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// The longest string value an attribute (or a log body) may carry, in
/// characters; longer ones are cut at a character boundary. The standard
/// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, by default [`DEFAULT_VALUE_LENGTH_LIMIT`]
/// (the specification leaves it unlimited, but values such as `url.path`
/// come from clients, and a span must not grow with what they send).
static VALUE_LENGTH_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_VALUE_LENGTH_LIMIT);
pub const DEFAULT_VALUE_LENGTH_LIMIT: usize = 1024;

/// Sets the limit from `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, if set.
pub fn set_value_length_limit_from_env() {
    if let Some(limit) =
        std::env::var("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT").ok().and_then(|v| v.trim().parse::<usize>().ok())
    {
        VALUE_LENGTH_LIMIT.store(limit, Ordering::Relaxed);
    }
}

/// `s`, cut to the value length limit.
fn limited(s: &str) -> &str {
    let limit = VALUE_LENGTH_LIMIT.load(Ordering::Relaxed);
    // A string of at most `limit` bytes has at most `limit` characters.
    if s.len() <= limit {
        return s;
    }
    match s.char_indices().nth(limit) {
        Some((cut, _)) => &s[..cut],
        None => s,
    }
}

/// Appends `AnyValue` as field `field`.
pub(crate) fn put_any(out: &mut Vec<u8>, field: u32, value: &Value<'_>) {
    match value {
        Value::Str(s) => {
            let s = limited(s);
            put_tag(out, field, LEN);
            put_varint(out, (1 + varint_len(s.len() as u64) + s.len()) as u64);
            put_bytes(out, 1, s.as_bytes());
        }
        Value::Bool(b) => {
            put_tag(out, field, LEN);
            put_varint(out, 2);
            put_uint(out, 2, u64::from(*b));
        }
        Value::Int(i) => {
            put_tag(out, field, LEN);
            put_varint(out, (1 + varint_len(*i as u64)) as u64);
            put_uint(out, 3, *i as u64);
        }
        Value::Double(d) => {
            put_tag(out, field, LEN);
            put_varint(out, 9);
            put_fixed64(out, 4, d.to_bits());
        }
    }
}

fn any_len(value: &Value<'_>) -> usize {
    match value {
        Value::Str(s) => {
            let s = limited(s);
            1 + varint_len(s.len() as u64) + s.len()
        }
        Value::Bool(_) => 2,
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Double(_) => 9,
    }
}

/// Appends a `KeyValue` as field `field` (9 on a span, 6 on a log record,
/// 1 on a resource).
pub(crate) fn put_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: &Value<'_>) {
    let value_len = any_len(value);
    let len = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(value_len as u64) + value_len;
    put_tag(out, field, LEN);
    put_varint(out, len as u64);
    put_bytes(out, 1, key.as_bytes());
    put_any(out, 2, value);
}

pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

// --- the two signals ------------------------------------------------------

/// What one signal's batches are wrapped in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn grpc_path(self) -> &'static str {
        match self {
            Self::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Self::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "/v1/traces",
            Self::Logs => "/v1/logs",
        }
    }

    /// The `telemetry_dropped_total` label.
    fn label(self) -> &'static str {
        match self {
            Self::Traces => "spans",
            Self::Logs => "logs",
        }
    }
}

/// `ExportTraceServiceRequest` / `ExportLogsServiceRequest` around encoded
/// `Span`s / `LogRecord`s (each already tagged as field 2 of its scope).
/// Both requests have the same shape: field 1 is `Resource{Spans,Logs}`
/// with the resource (1) and one `Scope{Spans,Logs}` (2) holding the scope
/// (1) and the items (2).
pub(crate) fn wrap(resource: &[u8], scope: &[u8], items: &[u8]) -> Vec<u8> {
    let scope_body = 1 + varint_len(scope.len() as u64) + scope.len() + items.len();
    let resource_body =
        1 + varint_len(resource.len() as u64) + resource.len() + 1 + varint_len(scope_body as u64) + scope_body;
    let mut out = Vec::with_capacity(resource_body + 16);
    put_tag(&mut out, 1, LEN);
    put_varint(&mut out, resource_body as u64);
    put_bytes(&mut out, 1, resource);
    put_tag(&mut out, 2, LEN);
    put_varint(&mut out, scope_body as u64);
    put_bytes(&mut out, 1, scope);
    out.extend_from_slice(items);
    out
}

/// `Resource` with its attributes.
pub(crate) fn resource(attributes: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in attributes {
        put_attribute(&mut out, 1, k, &Value::Str(v));
    }
    out
}

/// `InstrumentationScope` named `name`.
pub(crate) fn scope(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, name.as_bytes());
    out
}

// --- where finished items wait ---------------------------------------------

/// The standard batch settings (`OTEL_BSP_*`, `OTEL_BLRP_*`), the SDK's
/// defaults unless set.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Items waiting beyond this are dropped (and counted).
    pub max_queue: usize,
    /// Bytes waiting beyond this are dropped (and counted) too, however few
    /// the items: `OTLP_MAX_QUEUE_BYTES`, default 8 MiB per signal.
    pub max_queue_bytes: usize,
    /// An export starts once this many items wait...
    pub max_batch: usize,
    /// ...or this long after the previous one.
    pub delay: Duration,
    /// One export's deadline (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub timeout: Duration,
}

impl BatchSettings {
    /// `prefix` is `OTEL_BSP` or `OTEL_BLRP`.
    pub fn from_env(prefix: &str, default_delay_ms: u64) -> Self {
        let ms = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(default)
        };
        let max_queue = ms(&format!("{prefix}_MAX_QUEUE_SIZE"), 2048).max(1) as usize;
        Self {
            max_queue,
            max_queue_bytes: ms("OTLP_MAX_QUEUE_BYTES", 8 * 1024 * 1024).max(1024) as usize,
            max_batch: (ms(&format!("{prefix}_MAX_EXPORT_BATCH_SIZE"), 512).max(1) as usize).min(max_queue),
            delay: Duration::from_millis(ms(&format!("{prefix}_SCHEDULE_DELAY"), default_delay_ms)),
            // The signal's own variable wins over the general one.
            timeout: Duration::from_millis(ms(
                &format!("OTEL_EXPORTER_OTLP_{}_TIMEOUT", if prefix == "OTEL_BSP" { "TRACES" } else { "LOGS" }),
                ms("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000),
            )),
        }
    }
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    count: usize,
}

/// Encoded items of one signal on their way out. Cloning shares the queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    signal: Signal,
    settings: BatchSettings,
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    closing: AtomicBool,
}

impl Queue {
    pub(crate) fn new(signal: Signal, settings: BatchSettings) -> Self {
        let inner = QueueInner {
            signal,
            settings,
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Queues one encoded item as field 2 of its scope. Never blocks on the
    /// network: a full queue drops the item and counts it.
    pub fn push(&self, item: &[u8]) {
        let inner = &*self.inner;
        let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.count >= inner.settings.max_queue
            || pending.bytes.len() + item.len() > inner.settings.max_queue_bytes
        {
            drop(pending);
            DROPPED.with_label_values(&[inner.signal.label()]).inc();
            return;
        }
        put_bytes(&mut pending.bytes, 2, item);
        pending.count += 1;
        if pending.count == inner.settings.max_batch {
            drop(pending);
            inner.wake.notify_one();
        }
    }

    #[cfg(test)]
    pub(crate) fn take_bytes(&self) -> Vec<u8> {
        self.take().bytes
    }

    fn take(&self) -> Pending {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = pending.bytes.capacity();
        std::mem::replace(&mut *pending, Pending { bytes: Vec::with_capacity(capacity), count: 0 })
    }
}

// --- shipping ---------------------------------------------------------------

/// Where and how one signal is sent.
#[derive(Clone, Debug)]
pub struct Destination {
    /// Full URL for HTTP (`…/v1/traces`), the collector's base URL for gRPC.
    pub url: String,
    pub http: bool,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs sent with every export.
    pub headers: Vec<(String, String)>,
}

impl Destination {
    /// The standard variables for `signal`: `OTEL_EXPORTER_OTLP_{TRACES,LOGS}_ENDPOINT`
    /// (used as given) or `OTEL_EXPORTER_OTLP_ENDPOINT` (plus `/v1/traces`
    /// or `/v1/logs` over HTTP), `…_PROTOCOL` (`http/protobuf`, the
    /// default, or `grpc`) and `…_HEADERS`.
    pub fn from_env(signal: Signal) -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let which = match signal {
            Signal::Traces => "TRACES",
            Signal::Logs => "LOGS",
        };
        let protocol =
            var(&format!("OTEL_EXPORTER_OTLP_{which}_PROTOCOL")).or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        // HTTP/protobuf unless gRPC is asked for: the specification's default.
        let http = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => true,
            Some(p) if p.eq_ignore_ascii_case("grpc") => false,
            Some(other) => {
                eprintln!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: only grpc and http/protobuf are supported; using http/protobuf"
                );
                true
            }
        };
        let url = match var(&format!("OTEL_EXPORTER_OTLP_{which}_ENDPOINT")) {
            Some(url) => url.trim().to_owned(),
            None => {
                let base = var("OTEL_EXPORTER_OTLP_ENDPOINT")?;
                let base = base.trim().trim_end_matches('/');
                if http { format!("{base}{}", signal.http_path()) } else { base.to_owned() }
            }
        };
        let headers = var(&format!("OTEL_EXPORTER_OTLP_{which}_HEADERS"))
            .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|h| parse_headers(&h))
            .unwrap_or_default();
        Some(Self { url, http, headers })
    }
}

/// `key=value,key2=value2`, values percent-decoded (the W3C Baggage form the
/// OTel spec uses for these variables).
fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("OTLP endpoint {0:?}: {1}")]
    Endpoint(String, String),
}

/// One signal's queue and the thread that ships it.
pub struct Exporter {
    queue: Queue,
    done: std::sync::mpsc::Receiver<()>,
}

impl Exporter {
    /// Starts the shipping thread. `resource` and `scope` are encoded once
    /// (see [`resource`], [`scope`]).
    pub fn start(
        signal: Signal,
        to: Destination,
        settings: BatchSettings,
        resource: Vec<u8>,
        scope: Vec<u8>,
    ) -> Result<Self, SetupError> {
        let queue = Queue::new(signal, settings);
        // The transport belongs to the exporter's own runtime: a gRPC
        // channel spawns its connection task on the runtime it is made in,
        // and on the caller's runtime that task would compete with requests
        // (or never run, on a single-threaded runtime that is kept busy).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SetupError::Endpoint(to.url.clone(), format!("no runtime for the exporter: {e}")))?;
        let mut transport = {
            let _in_exporter_runtime = runtime.enter();
            Transport::new(&to, settings.timeout)?
        };
        let (done_tx, done) = std::sync::mpsc::channel();
        let shipper = queue.clone();
        std::thread::Builder::new()
            .name(format!("otlp-{}", signal.label()))
            .spawn(move || {
                runtime.block_on(async {
                    let inner = &*shipper.inner;
                    loop {
                        let closing = inner.closing.load(Ordering::Acquire);
                        if !closing {
                            let _ = tokio::time::timeout(inner.settings.delay, inner.wake.notified()).await;
                        }
                        let batch = shipper.take();
                        if batch.count > 0 {
                            let body = wrap(&resource, &scope, &batch.bytes);
                            if let Err(e) = transport.send(signal, body).await {
                                DROPPED.with_label_values(&[signal.label()]).inc_by(batch.count as u64);
                                tracing::debug!(target: "opentelemetry", error = %e, items = batch.count, "OTLP export failed");
                            }
                        }
                        if closing {
                            break;
                        }
                    }
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| SetupError::Endpoint(to.url.clone(), e.to_string()))?;
        Ok(Self { queue, done })
    }

    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// Ships what is queued and stops, waiting at most `within`.
    pub fn shutdown(self, within: Duration) {
        self.queue.inner.closing.store(true, Ordering::Release);
        self.queue.inner.wake.notify_one();
        let _ = self.done.recv_timeout(within);
    }
}

/// gRPC (tonic over HTTP/2) or HTTP/protobuf (reqwest).
enum Transport {
    Grpc { client: tonic::client::Grpc<tonic::transport::Channel>, headers: tonic::metadata::MetadataMap },
    Http { client: reqwest::Client, url: String, headers: reqwest::header::HeaderMap },
}

impl Transport {
    fn new(to: &Destination, timeout: Duration) -> Result<Self, SetupError> {
        let bad = |e: &dyn std::fmt::Display| SetupError::Endpoint(to.url.clone(), e.to_string());
        if to.http {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/x-protobuf"),
            );
            for (k, v) in &to.headers {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?;
                headers.insert(name, reqwest::header::HeaderValue::from_str(v).map_err(|e| bad(&e))?);
            }
            let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| bad(&e))?;
            reqwest::Url::parse(&to.url).map_err(|e| bad(&e))?;
            Ok(Self::Http { client, url: to.url.clone(), headers })
        } else {
            let endpoint = tonic::transport::Endpoint::from_shared(to.url.clone()).map_err(|e| bad(&e))?;
            let channel = endpoint.timeout(timeout).connect_timeout(timeout).connect_lazy();
            let mut headers = tonic::metadata::MetadataMap::new();
            for (k, v) in &to.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?;
                headers.insert(key, v.parse().map_err(|e| bad(&e))?);
            }
            Ok(Self::Grpc { client: tonic::client::Grpc::new(channel), headers })
        }
    }

    async fn send(&mut self, signal: Signal, body: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Http { client, url, headers } => {
                let response = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                // The response body (a partial-success message) is read so the
                // connection can be reused.
                let _ = response.bytes().await;
                if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
            }
            Self::Grpc { client, headers } => {
                client.ready().await.map_err(|e| e.to_string())?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = headers.clone();
                let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
                client.unary::<_, (), _>(request, path, RawCodec).await.map(|_| ()).map_err(|s| s.to_string())
            }
        }
    }
}

/// Sends pre-encoded protobuf as the gRPC message; the response (an
/// `Export…ServiceResponse`, whose only content is an optional partial
/// success) is read and ignored.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        use bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
        common::v1::any_value,
    };
    use prost::Message as _;

    use super::*;

    #[test]
    fn varints_and_their_lengths_agree() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn a_wrapped_batch_decodes_as_the_official_trace_request() {
        let mut span = Vec::new();
        put_bytes(&mut span, 1, &7u128.to_be_bytes());
        put_bytes(&mut span, 2, &9u64.to_be_bytes());
        put_bytes(&mut span, 5, b"GET /v1/concerts");
        put_uint(&mut span, 6, 2);
        put_fixed64(&mut span, 7, 1_000);
        put_fixed64(&mut span, 8, 2_000);
        put_attribute(&mut span, 9, "http.route", &Value::Str("/v1/concerts"));
        put_attribute(&mut span, 9, "http.response.status_code", &Value::Int(200));
        put_attribute(&mut span, 9, "neg", &Value::Int(-3));
        put_attribute(&mut span, 9, "ok", &Value::Bool(true));
        put_attribute(&mut span, 9, "ms", &Value::Double(1.5));
        put_fixed32(&mut span, 16, 1);
        let mut items = Vec::new();
        put_bytes(&mut items, 2, &span);
        put_bytes(&mut items, 2, &span);
        let res = resource(&[("service.name".into(), "some-service".into())]);
        let body = wrap(&res, &scope("some-service"), &items);

        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).expect("valid protobuf");
        let rs = &decoded.resource_spans[0];
        let attr = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(attr.key, "service.name");
        assert_eq!(attr.value.as_ref().unwrap().value, Some(any_value::Value::StringValue("some-service".into())));
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "some-service");
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, 7u128.to_be_bytes());
        assert_eq!(s.span_id, 9u64.to_be_bytes());
        assert_eq!(
            (s.name.as_str(), s.kind, s.start_time_unix_nano, s.end_time_unix_nano, s.flags),
            ("GET /v1/concerts", 2, 1_000, 2_000, 1)
        );
        let values: Vec<_> =
            s.attributes.iter().map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap())).collect();
        assert_eq!(
            values,
            vec![
                ("http.route", any_value::Value::StringValue("/v1/concerts".into())),
                ("http.response.status_code", any_value::Value::IntValue(200)),
                ("neg", any_value::Value::IntValue(-3)),
                ("ok", any_value::Value::BoolValue(true)),
                ("ms", any_value::Value::DoubleValue(1.5)),
            ]
        );
    }

    #[test]
    fn the_same_wrapping_decodes_as_the_official_logs_request() {
        let mut record = Vec::new();
        put_fixed64(&mut record, 1, 5);
        put_uint(&mut record, 2, 9);
        put_bytes(&mut record, 3, b"INFO");
        put_any(&mut record, 5, &Value::Str("request"));
        put_attribute(&mut record, 6, "route", &Value::Str("/v1/x"));
        let mut items = Vec::new();
        put_bytes(&mut items, 2, &record);
        let decoded =
            ExportLogsServiceRequest::decode(wrap(&resource(&[]), &scope("some-service"), &items).as_slice()).unwrap();
        let r = &decoded.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!((r.time_unix_nano, r.severity_number, r.severity_text.as_str()), (5, 9, "INFO"));
        assert_eq!(r.body.as_ref().unwrap().value, Some(any_value::Value::StringValue("request".into())));
        assert_eq!(r.attributes[0].key, "route");
    }

    #[test]
    fn headers_are_key_value_pairs_with_percent_decoded_values() {
        assert_eq!(
            parse_headers("Authorization=Basic%20abc, x-tenant = t1,broken"),
            vec![("authorization".to_owned(), "Basic abc".to_owned()), ("x-tenant".to_owned(), "t1".to_owned())]
        );
    }

    #[test]
    fn a_queue_full_of_bytes_drops_and_counts_however_few_its_items() {
        let settings = BatchSettings {
            max_queue: 100,
            max_queue_bytes: 1024,
            max_batch: 100,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        let queue = Queue::new(Signal::Traces, settings);
        let dropped = || DROPPED.with_label_values(&["spans"]).get();
        let before = dropped();
        queue.push(&[0u8; 600]);
        queue.push(&[0u8; 600]);
        assert_eq!(dropped(), before + 1, "the second 600 bytes do not fit in 1 KiB");
        assert_eq!(queue.take().count, 1);
    }

    #[test]
    fn long_string_values_are_cut_to_the_limit_at_a_character_boundary() {
        let long = "é".repeat(DEFAULT_VALUE_LENGTH_LIMIT + 10);
        let mut span = Vec::new();
        put_attribute(&mut span, 9, "url.path", &Value::Str(&long));
        let mut items = Vec::new();
        put_bytes(&mut items, 2, &span);
        let decoded =
            ExportTraceServiceRequest::decode(wrap(&resource(&[]), &scope("some-service"), &items).as_slice())
                .expect("lengths agree");
        let value =
            decoded.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.clone().unwrap().value.unwrap();
        let any_value::Value::StringValue(cut) = value else { panic!("a string") };
        assert_eq!(cut.chars().count(), DEFAULT_VALUE_LENGTH_LIMIT);
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing() {
        let settings = BatchSettings {
            max_queue: 2,
            max_queue_bytes: 1 << 20,
            max_batch: 2,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        let queue = Queue::new(Signal::Logs, settings);
        let dropped = || DROPPED.with_label_values(&["logs"]).get();
        let before = dropped();
        for _ in 0..3 {
            queue.push(b"x");
        }
        assert_eq!(dropped(), before + 1);
        let taken = queue.take();
        assert_eq!(taken.count, 2);
        assert_eq!(taken.bytes, [0x12, 1, b'x', 0x12, 1, b'x']);
        queue.push(b"y");
        assert_eq!(queue.take().count, 1, "room again once a batch is taken");
    }
}
