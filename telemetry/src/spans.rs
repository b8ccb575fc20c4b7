//! Traces: every `tracing` span becomes an OpenTelemetry span, encoded as
//! OTLP protobuf while it lives (see [`super::otlp`] for why not the SDK).
//!
//! - Ids: a root span gets a random trace id, unless it carries a
//!   `traceparent` field (the incoming W3C header), which makes that the
//!   remote parent. Children take the trace id of the span they run in.
//! - Fields: `otel.name` names the span (else the `tracing` span name),
//!   `otel.kind` sets its kind (`server`, `client`, `internal`, `producer`,
//!   `consumer`), `otel.status_code = "ERROR"` or any `error.type` marks it
//!   failed. Every other field is an attribute, except `traceparent` and
//!   `trace_id` (which only repeat the ids).
//! - Sampling: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` with the
//!   standard names; the default is `parentbased_always_on`.
//!
//! Log layers read a span's ids with [`current`]; the request middleware
//! reads them with [`context_of`].

use std::fmt::{self, Write as _};

use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    Layer,
    layer::Context,
    registry::{LookupSpan, SpanData as _},
};

use super::otlp::{self, Queue, Value};

/// A W3C trace id (never zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The lowercase hex digits of `value`'s low `N * 4` bits, without allocating.
fn hex_digits<const N: usize>(value: u128) -> [u8; N] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; N];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((value >> (4 * (N - 1 - i))) & 0xf) as usize];
    }
    out
}

impl TraceId {
    /// The 32 lowercase hex digits.
    pub fn hex(self) -> [u8; 32] {
        hex_digits(self.0)
    }
}

impl SpanId {
    /// The 16 lowercase hex digits.
    pub fn hex(self) -> [u8; 16] {
        hex_digits(u128::from(self.0))
    }
}

/// A W3C span id (never zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a span is known by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The parent's span id, local or remote.
    pub parent: Option<SpanId>,
    pub sampled: bool,
}

impl SpanContext {
    /// Parses a W3C `traceparent` header value.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may add more.
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || (version == "00" && parts.next().is_some()) {
            return None;
        }
        fn hex(s: &str, len: usize) -> Option<&str> {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
        }
        u8::from_str_radix(hex(version, 2)?, 16).ok()?;
        let trace_id = u128::from_str_radix(hex(trace, 32)?, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(hex(span, 16)?, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(hex(flags, 2)?, 16).ok()?;
        Some(Self { trace_id: TraceId(trace_id), span_id: SpanId(span_id), parent: None, sampled: flags & 1 == 1 })
    }

    /// The W3C `traceparent` value that makes this span the parent of the
    /// receiver's: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

/// The ids of the span the caller runs in (the innermost `tracing` span, else
/// the request being served), if spans are being made.
pub fn current_context() -> Option<SpanContext> {
    context_of(&tracing::Span::current()).or_else(current_request)
}

/// The standard samplers.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Samples this share of root traces, by trace id.
    TraceIdRatio(f64),
    /// Follows the parent's decision; roots by the inner sampler.
    ParentBased(Box<Sampler>),
}

impl Sampler {
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_env() -> Self {
        let name = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Self::parse(&name, arg.as_deref()).unwrap_or_else(|e| {
            eprintln!("{e}; using parentbased_always_on");
            Self::ParentBased(Box::new(Self::AlwaysOn))
        })
    }

    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || match arg.map(str::trim).filter(|a| !a.is_empty()) {
            None => Ok(1.0),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1")),
        };
        let parent_based = |s| Self::ParentBased(Box::new(s));
        Ok(match name.trim() {
            "" | "parentbased_always_on" => parent_based(Self::AlwaysOn),
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_off" => parent_based(Self::AlwaysOff),
            "parentbased_traceidratio" => parent_based(Self::TraceIdRatio(ratio()?)),
            other => return Err(format!("OTEL_TRACES_SAMPLER={other:?} is not a sampler this service knows")),
        })
    }

    /// `parent_sampled` is the parent's decision, if the span has a parent.
    pub fn sample(&self, parent_sampled: Option<bool>, trace_id: TraceId) -> bool {
        match self {
            Self::AlwaysOn => true,
            Self::AlwaysOff => false,
            // As the OpenTelemetry SDKs do: the low 8 bytes of the trace id,
            // as a number, against the ratio of the id space.
            Self::TraceIdRatio(r) => ((trace_id.0 as u64) >> 1) < (r * (1u64 << 63) as f64) as u64,
            Self::ParentBased(root) => parent_sampled.unwrap_or_else(|| root.sample(None, trace_id)),
        }
    }
}

/// A span while it lives, kept in the registry's extensions.
struct Building {
    cx: SpanContext,
    /// The encoded `Span` so far; empty when it will not be exported.
    buf: Vec<u8>,
    encode: bool,
    error: bool,
}

/// The ids of the span `span`, if it is recorded by [`Spans`].
pub fn context_of(span: &tracing::Span) -> Option<SpanContext> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span_data(id)?;
        data.extensions().get::<Building>().map(|b| b.cx)
    })
    .flatten()
}

/// The ids of the span an event happens in: the innermost `tracing` span,
/// else the request being served (see [`RequestSpan`]).
pub fn current<S>(ctx: &Context<'_, S>) -> Option<SpanContext>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    match ctx.lookup_current() {
        Some(span) => span.extensions().get::<Building>().map(|b| b.cx),
        None => current_request(),
    }
}

tokio::task_local! {
    /// The request the current task serves.
    static REQUEST: SpanContext;
}

/// The context of the request the current task serves, if any.
pub fn current_request() -> Option<SpanContext> {
    REQUEST.try_with(|cx| *cx).ok()
}

/// Runs `task` as part of the request `cx` (taken earlier with
/// [`current_request`]) on whichever task polls it: its calls' spans hang
/// under that request's span.
pub async fn in_request<F: std::future::Future>(cx: Option<SpanContext>, task: F) -> F::Output {
    match cx {
        Some(cx) => REQUEST.scope(cx, task).await,
        None => task.await,
    }
}

/// The server span of one HTTP request, kept outside the `tracing`
/// registry: its context lives in a task-local for as long as the request
/// is served ([`RequestSpan::serve`]), where log lines ([`current`]), leaf
/// spans ([`Leaf`]) and any `tracing` span opened meanwhile find it. It
/// never needs a registry slot, an extension, an enter/exit on every poll
/// of the request, or a close.
pub struct RequestSpan {
    pub cx: SpanContext,
    remote_parent: bool,
    start_unix_nanos: u64,
}

impl RequestSpan {
    /// Starts a request's span; `traceparent` is the incoming header.
    /// `None` when tracing is off (no [`Spans`] layer).
    pub fn start(traceparent: Option<&str>) -> Option<Self> {
        tracing::dispatcher::get_default(|dispatch| {
            let spans = dispatch.downcast_ref::<Spans>()?;
            let remote = traceparent.and_then(SpanContext::from_traceparent);
            let trace_id = remote.map_or_else(|| TraceId(nonzero(rand::random::<u128>())), |r| r.trace_id);
            let sampled = spans.sampler.sample(remote.map(|r| r.sampled), trace_id);
            let cx = SpanContext {
                trace_id,
                span_id: SpanId(nonzero(rand::random::<u64>())),
                parent: remote.map(|r| r.span_id),
                sampled,
            };
            Some(Self { cx, remote_parent: remote.is_some(), start_unix_nanos: otlp::unix_nanos() })
        })
    }

    /// Runs `f` (a log statement) with this request as the current span.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        REQUEST.sync_scope(self.cx, f)
    }

    /// Serves the request with this span current.
    pub async fn serve<F: std::future::Future>(&self, request: F) -> F::Output {
        REQUEST.scope(self.cx, request).await
    }

    /// Ends the span `took` after it started (the caller times the request
    /// anyway) and queues it for export (if sampled) as a server span named
    /// `name` (its parts joined as they are) with `attributes`; `failed` sets
    /// its status to error.
    pub fn end(self, took: std::time::Duration, name: &[&str], attributes: &[(&str, Value<'_>)], failed: bool) {
        let remote_bit = if self.remote_parent { FLAG_IS_REMOTE } else { 0 };
        let (start, end) = (self.start_unix_nanos, self.start_unix_nanos + took.as_nanos() as u64);
        let finished = Finished {
            cx: self.cx,
            name,
            kind: KIND_SERVER,
            start,
            end,
            flags: 1 | FLAG_HAS_IS_REMOTE | remote_bit,
            failed,
        };
        finished.export(attributes);
    }
}

/// A span that ended outside the registry, ready to encode.
struct Finished<'a> {
    cx: SpanContext,
    /// Joined as they are: no formatting on the request path.
    name: &'a [&'a str],
    kind: u64,
    start: u64,
    end: u64,
    flags: u32,
    failed: bool,
}

impl Finished<'_> {
    fn export(self, attributes: &[(&str, Value<'_>)]) {
        if !self.cx.sampled {
            return;
        }
        tracing::dispatcher::get_default(|dispatch| {
            let Some(queue) = dispatch.downcast_ref::<Spans>().and_then(|s| s.queue.as_ref()) else { return };
            thread_local! {
                static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            BUF.with(|cell| {
                let Ok(mut buf) = cell.try_borrow_mut() else { return };
                let buf = &mut *buf;
                buf.clear();
                let cx = &self.cx;
                otlp::put_bytes(buf, 1, &cx.trace_id.0.to_be_bytes());
                otlp::put_bytes(buf, 2, &cx.span_id.0.to_be_bytes());
                if let Some(parent) = cx.parent {
                    otlp::put_bytes(buf, 4, &parent.0.to_be_bytes());
                }
                otlp::put_concat(buf, 5, self.name);
                otlp::put_uint(buf, 6, self.kind);
                otlp::put_fixed64(buf, 7, self.start);
                otlp::put_fixed64(buf, 8, self.end);
                for (key, value) in attributes {
                    otlp::put_attribute(buf, 9, key, value);
                }
                if self.failed {
                    otlp::put_bytes(buf, 15, &STATUS_ERROR);
                }
                otlp::put_fixed32(buf, 16, self.flags);
                queue.push(buf);
            });
        });
    }
}

/// `Status { code: STATUS_CODE_ERROR }`.
const STATUS_ERROR: [u8; 2] = [0x18, 0x02];

/// The layer that makes and exports spans.
pub struct Spans {
    sampler: Sampler,
    /// Where finished sampled spans go; `None` makes ids only.
    queue: Option<Queue>,
}

impl Spans {
    pub fn new(sampler: Sampler, queue: Option<Queue>) -> Self {
        Self { sampler, queue }
    }
}

const KIND_INTERNAL: u64 = 1;
/// `Span.flags`: bits 0-7 are the W3C trace flags; bit 8 says whether
/// bit 9 (the parent is remote) is known.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

impl<S> Layer<S> for Spans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let local_parent = match span.parent() {
            Some(p) => p.extensions().get::<Building>().map(|b| b.cx),
            None => current_request(),
        };
        let mut fields =
            Fields::new(Vec::with_capacity(if self.queue.is_some() { 320 } else { 0 }), FieldsAre::SpanAttributes);
        attrs.record(&mut fields);
        let remote = if local_parent.is_none() { fields.remote.take() } else { None };
        let (trace_id, parent, parent_sampled) = match (local_parent, remote) {
            (Some(p), _) | (None, Some(p)) => (p.trace_id, Some(p.span_id), Some(p.sampled)),
            (None, None) => (TraceId(nonzero(rand::random::<u128>())), None, None),
        };
        let sampled = self.sampler.sample(parent_sampled, trace_id);
        let cx = SpanContext { trace_id, span_id: SpanId(nonzero(rand::random::<u64>())), parent, sampled };
        let encode = sampled && self.queue.is_some();
        let mut buf = fields.buf;
        if encode {
            otlp::put_bytes(&mut buf, 1, &cx.trace_id.0.to_be_bytes());
            otlp::put_bytes(&mut buf, 2, &cx.span_id.0.to_be_bytes());
            if let Some(p) = parent {
                otlp::put_bytes(&mut buf, 4, &p.0.to_be_bytes());
            }
            if !fields.named {
                otlp::put_bytes(&mut buf, 5, attrs.metadata().name().as_bytes());
            }
            if !fields.kind_set {
                otlp::put_uint(&mut buf, 6, KIND_INTERNAL);
            }
            otlp::put_fixed64(&mut buf, 7, otlp::unix_nanos());
            let remote_bit = if remote.is_some() { FLAG_IS_REMOTE } else { 0 };
            otlp::put_fixed32(&mut buf, 16, 1 | FLAG_HAS_IS_REMOTE | remote_bit);
        } else {
            buf = Vec::new();
        }
        span.extensions_mut().insert(Building { cx, buf, encode, error: fields.error });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(building) = extensions.get_mut::<Building>() else { return };
        let mut fields = Fields::new(std::mem::take(&mut building.buf), FieldsAre::SpanAttributes);
        values.record(&mut fields);
        building.error |= fields.error;
        building.buf = if building.encode { fields.buf } else { Vec::new() };
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut building) = span.extensions_mut().remove::<Building>() else { return };
        if let (true, Some(queue)) = (building.encode, &self.queue) {
            otlp::put_fixed64(&mut building.buf, 8, otlp::unix_nanos());
            if building.error {
                // Status { code: STATUS_CODE_ERROR }
                otlp::put_bytes(&mut building.buf, 15, &STATUS_ERROR);
            }
            queue.push(&building.buf);
        }
    }
}

/// A leaf span (a call to a backing service: no children, no events of its
/// own) measured without a `tracing` span. Such calls are most of a hot
/// request's spans, and a `tracing` span costs a registry slot, an
/// extension and an enter/exit on every poll; a leaf only needs its parent's
/// ids, two clock reads and its encoding. `None` when there is nothing to
/// record: no current sampled span, or no span export.
pub struct Leaf {
    parent: SpanContext,
    start_unix_nanos: u64,
}

impl Leaf {
    /// Starts a leaf under the current span.
    pub fn start() -> Option<Self> {
        let parent = tracing::dispatcher::get_default(|dispatch| {
            dispatch.downcast_ref::<Spans>()?.queue.as_ref()?;
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            Some(match Subscriber::current_span(registry).id() {
                Some(id) => registry.span_data(id)?.extensions().get::<Building>()?.cx,
                None => current_request()?,
            })
        })?;
        parent.sampled.then(|| Self { parent, start_unix_nanos: otlp::unix_nanos() })
    }

    /// Ends the leaf `took` after it started and queues it for export as a
    /// span of `kind` (see `otel.kind`) named `name` (its parts joined), with
    /// `attributes`.
    pub fn end(self, took: std::time::Duration, name: &[&str], kind: u64, attributes: &[(&str, Value<'_>)]) {
        let cx = SpanContext {
            span_id: SpanId(nonzero(rand::random::<u64>())),
            parent: Some(self.parent.span_id),
            ..self.parent
        };
        let (start, end) = (self.start_unix_nanos, self.start_unix_nanos + took.as_nanos() as u64);
        let finished = Finished { cx, name, kind, start, end, flags: 1 | FLAG_HAS_IS_REMOTE, failed: false };
        finished.export(attributes);
    }
}

/// `otel.kind = "server"`.
pub const KIND_SERVER: u64 = 2;
/// `otel.kind = "client"`.
pub const KIND_CLIENT: u64 = 3;

fn nonzero<T: Default + PartialEq + From<u8>>(v: T) -> T {
    if v == T::default() { T::from(1) } else { v }
}

/// How [`Fields`] encodes what it visits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldsAre {
    /// Span fields: `otel.*` and the ids are special, the rest are
    /// attributes (`Span` field 9).
    SpanAttributes,
    /// Event fields: `message` is the body (`LogRecord` field 5), the rest
    /// are attributes (field 6).
    LogRecord,
}

/// Encodes `tracing` fields as OTLP attributes.
pub(crate) struct Fields {
    pub(crate) buf: Vec<u8>,
    are: FieldsAre,
    named: bool,
    kind_set: bool,
    error: bool,
    remote: Option<SpanContext>,
}

impl Fields {
    pub(crate) fn new(buf: Vec<u8>, are: FieldsAre) -> Self {
        Self { buf, are, named: false, kind_set: false, error: false, remote: None }
    }

    fn put(&mut self, field: &Field, value: Value<'_>) {
        let name = field.name();
        match self.are {
            FieldsAre::LogRecord if name == "message" => otlp::put_any(&mut self.buf, 5, &value),
            // The record has its own trace id field.
            FieldsAre::LogRecord if name == "trace_id" => {}
            FieldsAre::LogRecord => otlp::put_attribute(&mut self.buf, 6, name, &value),
            FieldsAre::SpanAttributes => match (name, &value) {
                ("otel.name", Value::Str(s)) => {
                    otlp::put_bytes(&mut self.buf, 5, s.as_bytes());
                    self.named = true;
                }
                ("otel.kind", Value::Str(s)) => {
                    let kind = match s.to_ascii_lowercase().as_str() {
                        "server" => 2,
                        "client" => 3,
                        "producer" => 4,
                        "consumer" => 5,
                        _ => KIND_INTERNAL,
                    };
                    otlp::put_uint(&mut self.buf, 6, kind);
                    self.kind_set = true;
                }
                ("otel.status_code", Value::Str(s)) => self.error |= s.eq_ignore_ascii_case("error"),
                ("traceparent", Value::Str(s)) => self.remote = SpanContext::from_traceparent(s),
                ("trace_id", _) => {}
                _ => {
                    self.error |= name == "error.type";
                    otlp::put_attribute(&mut self.buf, 9, name, &value);
                }
            },
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Double(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Int(i64::try_from(value).unwrap_or(i64::MAX)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formatted into one reused buffer per thread, not a new `String`.
        thread_local! {
            static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        TEXT.with(|cell| match cell.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                let _ = write!(text, "{value:?}");
                self.put(field, Value::Str(&text));
            }
            Err(_) => self.put(field, Value::Str(&format!("{value:?}"))),
        });
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value};
    use prost::Message as _;
    use tracing_subscriber::prelude::*;

    use super::*;

    #[test]
    fn traceparent_is_parsed_by_the_w3c_rules() {
        let cx = SpanContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(cx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&cx.trace_id.hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&TraceId(1).hex(), b"00000000000000000000000000000001");
        assert_eq!(&cx.span_id.hex(), b"00f067aa0ba902b7");
        assert_eq!(cx.span_id.to_string(), "00f067aa0ba902b7");
        assert!(cx.sampled);
        assert!(
            !SpanContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanContext::from_traceparent(bad), None, "{bad:?}");
        }
        // A later version may carry more parts.
        assert!(
            SpanContext::from_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some()
        );
    }

    #[test]
    fn samplers_follow_the_standard_names() {
        let id = TraceId(0x1234);
        assert!(Sampler::parse("", None).unwrap().sample(None, id));
        assert!(!Sampler::parse("parentbased_always_on", None).unwrap().sample(Some(false), id), "follows the parent");
        assert!(Sampler::parse("parentbased_always_off", None).unwrap().sample(Some(true), id));
        assert!(!Sampler::parse("parentbased_always_off", None).unwrap().sample(None, id));
        assert!(Sampler::parse("always_on", None).unwrap().sample(Some(false), id));
        assert!(!Sampler::parse("always_off", None).unwrap().sample(Some(true), id));
        assert!(Sampler::parse("traceidratio", Some("2")).is_err());
        assert!(Sampler::parse("nonsense", None).is_err());
        let half = Sampler::parse("parentbased_traceidratio", Some("0.5")).unwrap();
        let kept = (0..10_000u64)
            .filter(|i| half.sample(None, TraceId(u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))))
            .count();
        assert!((4_000..6_000).contains(&kept), "about half: {kept}");
        assert!(!Sampler::TraceIdRatio(0.0).sample(None, TraceId(1)));
        assert!(Sampler::TraceIdRatio(1.0).sample(None, TraceId(u128::MAX)));
    }

    /// Runs `f` under a subscriber with [`Spans`] exporting into a queue, and
    /// returns the spans as the official OTLP types decode them.
    fn spans_of(sampler: Sampler, f: impl FnOnce()) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        let settings = otlp::BatchSettings {
            max_queue: 100,
            max_queue_bytes: 1 << 20,
            max_batch: 100,
            delay: std::time::Duration::from_secs(60),
            timeout: std::time::Duration::from_secs(1),
        };
        let queue = otlp::Queue::new(otlp::Signal::Traces, settings);
        let subscriber = tracing_subscriber::registry().with(Spans::new(sampler, Some(queue.clone())));
        tracing::subscriber::with_default(subscriber, f);
        let body = otlp::wrap(&otlp::resource(&[]), &otlp::scope("some-service"), &queue.take_bytes());
        let mut request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        std::mem::take(&mut request.resource_spans[0].scope_spans[0].spans)
    }

    #[test]
    fn spans_carry_names_kinds_parents_attributes_and_status() {
        let mut seen = None;
        let spans = spans_of(Sampler::AlwaysOn, || {
            let route = "/v1/x";
            let server = tracing::info_span!(
                "HTTP request",
                otel.name = %format_args!("GET {route}"),
                otel.kind = "server",
                http.route = route,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                trace_id = "not an attribute",
            );
            seen = context_of(&server);
            let _in = server.enter();
            tracing::info_span!(
                "client",
                otel.kind = "client",
                db.operation.name = "hold_seat",
                rows = 1u64,
                ms = 0.5,
                ok = true
            )
            .in_scope(|| {});
            server.record("http.response.status_code", 500u64);
            server.record("error.type", "INTERNAL");
        });
        let seen = seen.expect("the middleware can read the request span's ids");
        assert_eq!(spans.len(), 2, "children end first");
        let (client, server) = (&spans[0], &spans[1]);
        assert_eq!(server.name, "GET /v1/x");
        assert_eq!(server.kind, 2);
        assert_eq!(server.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes(), "the remote trace");
        assert_eq!(server.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes(), "the remote parent");
        assert_eq!(server.flags, 0x301, "sampled, parent known to be remote");
        assert_eq!(server.span_id, seen.span_id.0.to_be_bytes());
        assert_eq!(server.status.as_ref().map(|s| s.code), Some(2), "error.type marks the span failed");
        let attrs: Vec<_> =
            server.attributes.iter().map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap())).collect();
        assert_eq!(
            attrs,
            vec![
                ("http.route", any_value::Value::StringValue("/v1/x".into())),
                ("http.response.status_code", any_value::Value::IntValue(500)),
                ("error.type", any_value::Value::StringValue("INTERNAL".into())),
            ]
        );
        assert!(server.end_time_unix_nano >= server.start_time_unix_nano && server.start_time_unix_nano > 0);
        assert_eq!(client.name, "client", "no otel.name: the span's own name");
        assert_eq!(client.kind, 3);
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(client.flags, 0x101, "a local parent");
        assert_eq!(client.status, None);
        assert_eq!(client.attributes.len(), 4);
    }

    #[test]
    fn leaf_spans_hang_under_the_current_span_and_only_when_it_is_sampled() {
        let mut parent = None;
        let spans = spans_of(Sampler::AlwaysOn, || {
            assert!(Leaf::start().is_none(), "no current span: nothing to hang it under");
            let server = tracing::info_span!("HTTP request");
            parent = context_of(&server);
            let _in = server.enter();
            let leaf = Leaf::start().expect("a sampled current span");
            leaf.end(
                std::time::Duration::from_micros(3),
                &["redis ", "gate"],
                KIND_CLIENT,
                &[("db.system.name", Value::Str("redis"))],
            );
        });
        let parent = parent.unwrap();
        let leaf = spans.iter().find(|s| s.name == "redis gate").expect("the leaf was exported");
        assert_eq!(
            (leaf.trace_id.as_slice(), leaf.parent_span_id.as_slice()),
            (&parent.trace_id.0.to_be_bytes()[..], &parent.span_id.0.to_be_bytes()[..])
        );
        assert_eq!(leaf.kind, 3);
        assert!(leaf.end_time_unix_nano >= leaf.start_time_unix_nano);
        assert_eq!(leaf.attributes[0].key, "db.system.name");
        let none = spans_of(Sampler::AlwaysOff, || {
            let _in = tracing::info_span!("HTTP request").entered();
            assert!(Leaf::start().is_none(), "an unsampled parent records no leaf");
        });
        assert!(none.is_empty());
    }

    #[test]
    fn a_request_span_lives_outside_the_registry_yet_parents_leaves_and_spans() {
        let mut request = None;
        let spans = spans_of(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), || {
            let span = RequestSpan::start(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
                .expect("tracing is on");
            assert_eq!(current_request(), None, "only while it is served");
            span.in_scope(|| {
                assert_eq!(current_request(), Some(span.cx));
                Leaf::start().unwrap().end(std::time::Duration::ZERO, &["redis gate"], KIND_CLIENT, &[]);
                let _inner = tracing::info_span!("inner").entered();
            });
            request = Some(span.cx);
            span.end(
                std::time::Duration::from_millis(1),
                &["POST", " ", "/v1/x"],
                &[("http.response.status_code", Value::Int(503))],
                true,
            );
        });
        let request = request.unwrap();
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} span"));
        let server = by_name("POST /v1/x");
        assert_eq!(server.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes());
        assert_eq!(server.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
        assert_eq!(server.span_id, request.span_id.0.to_be_bytes());
        assert_eq!((server.kind, server.flags), (2, 0x301));
        assert_eq!(server.status.as_ref().map(|s| s.code), Some(2));
        for child in ["redis gate", "inner"] {
            assert_eq!(
                by_name(child).parent_span_id,
                request.span_id.0.to_be_bytes(),
                "{child} hangs under the request"
            );
            assert_eq!(by_name(child).trace_id, server.trace_id);
        }
        let unsampled = spans_of(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), || {
            let span = RequestSpan::start(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).unwrap();
            assert!(!span.cx.sampled, "the caller's decision is followed");
            span.in_scope(|| assert!(Leaf::start().is_none()));
            span.end(std::time::Duration::ZERO, &["GET /"], &[], false);
        });
        assert!(unsampled.is_empty());
    }

    #[test]
    fn unsampled_spans_still_get_ids_but_are_not_exported() {
        let mut ids = Vec::new();
        let spans = spans_of(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), || {
            let root = tracing::info_span!("root");
            ids.push(context_of(&root).unwrap());
            let _in = root.enter();
            let child = tracing::info_span!("child");
            ids.push(context_of(&child).unwrap());
        });
        assert!(spans.is_empty());
        assert_eq!(ids[0].trace_id, ids[1].trace_id);
        assert_eq!(ids[1].parent, Some(ids[0].span_id));
        assert!(!ids[0].sampled && !ids[1].sampled);
        let sampled = spans_of(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), || {
            let _root =
                tracing::info_span!("root", traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        });
        assert_eq!(sampled.len(), 1, "a sampled remote parent wins over the root sampler");
    }
}
