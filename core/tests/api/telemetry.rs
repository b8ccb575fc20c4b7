//! The service's telemetry, end to end with real parts: the `booking`
//! binary exports over OTLP to a real collector (rotel, debug-logging what
//! it receives) and pushes logs to a Loki receiver of our own that decodes
//! Loki's wire format (snappy-compressed protobuf).

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use prost::Message;
use serde_json::{Value, json};

use testkit::rotel::{Rotel, SpanSeen, log_records_in, spans_in, wait_until};

use super::support::{Backend, Binary, Resources, free_port};

/// Loki's push request (pkg/push/push.proto), as Loki's own clients send it.
#[derive(Clone, PartialEq, Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, Message)]
struct StreamAdapter {
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryAdapter>,
}

#[derive(Clone, PartialEq, Message)]
struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<prost_types_timestamp::Timestamp>,
    #[prost(string, tag = "2")]
    line: String,
}

mod prost_types_timestamp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

type Pushed = Arc<Mutex<Vec<(String, String)>>>;

/// A Loki stand-in that accepts only the real push format.
async fn loki_push(
    State(pushed): State<Pushed>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let Ok(request) = PushRequest::decode(raw.as_slice()) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut pushed = pushed.lock().unwrap();
    for stream in request.streams {
        for entry in stream.entries {
            pushed.push((stream.labels.clone(), entry.line));
        }
    }
    axum::http::StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_booking_flow_ties_log_lines_traces_and_loki_entries_together_by_trace_id() {
    let dir = std::env::temp_dir().join(format!("booking-telemetry-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let rotel = Rotel::start(&dir);
    let resources = Resources::new(Backend::PostgresRedis).await;

    let pushed: Pushed = Arc::default();
    let loki = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let loki_port = loki.local_addr().unwrap().port();
    let loki_app = Router::new().route("/loki/api/v1/push", post(loki_push)).with_state(pushed.clone());
    tokio::spawn(async move { axum::serve(loki, loki_app).await });

    let stdout = dir.join("booking.out");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", rotel.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test".into()),
        ("LOKI_URL", format!("http://127.0.0.1:{loki_port}")),
        ("RUST_LOG", "info".into()),
    ];
    let mut server = Binary::serve(&resources, &env, Stdio::from(std::fs::File::create(&stdout).unwrap()));
    let http = reqwest::Client::new();
    let base = server.base();

    // The flow, keeping each response's trace id.
    let mut traces: HashMap<&str, String> = HashMap::new();
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.unwrap();
        let trace = r.headers().get("x-trace-id").unwrap().to_str().unwrap().to_owned();
        let status = r.status().as_u16();
        (status, trace, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let seats = json!([{ "seat_no": "A1", "grade": "VIP", "price": 10 }]);
    let (_, t, concert) = send(
        http.post(format!("{base}/v1/admin/concerts"))
            .header("x-admin-key", "dev-admin-key")
            .json(&json!({ "title": "T", "performances": [{ "starts_at": "2031-01-01T19:00:00Z", "seats": seats }] })),
    )
    .await;
    traces.insert("concert", t);
    // An incoming traceparent is honoured.
    let (_, t, user) = send(
        http.post(format!("{base}/v1/users"))
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .json(&json!({ "name": "kim" })),
    )
    .await;
    assert_eq!(t, "4bf92f3577b34da6a3ce929d0e0e4736");
    traces.insert("user", t);
    let token = user["token"].as_str().unwrap().to_owned();
    let (_, t, place) = send(
        http.post(format!("{base}/v1/queue/tokens"))
            .bearer_auth(&token)
            .json(&json!({ "concert_id": concert["concert_id"] })),
    )
    .await;
    traces.insert("queue", t);
    let queue = place["queue_token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, status) =
            send(http.get(format!("{base}/v1/queue/tokens/current")).header("queue-token", &queue)).await;
        if status["status"] == "ACTIVE" {
            break;
        }
        assert!(Instant::now() < deadline, "not admitted: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seat_id = resources_seat(&resources).await;
    let (status, t, held) = send(
        http.post(format!("{base}/v1/reservations"))
            .bearer_auth(&token)
            .header("queue-token", &queue)
            .json(&json!({ "seat_id": seat_id })),
    )
    .await;
    assert_eq!(status, 201, "{held}");
    traces.insert("hold", t);
    send(
        http.post(format!("{base}/v1/users/me/balance/charges"))
            .bearer_auth(&token)
            .header("idempotency-key", "c")
            .json(&json!({ "amount": 10 })),
    )
    .await;
    let (status, t, paid) = send(
        http.post(format!("{base}/v1/payments"))
            .bearer_auth(&token)
            .header("queue-token", &queue)
            .header("idempotency-key", "p")
            .json(&json!({ "reservation_id": held["reservation_id"] })),
    )
    .await;
    assert_eq!(status, 201, "{paid}");
    traces.insert("pay", t);

    // SIGTERM flushes the exporters.
    server.terminate();
    rotel.stop();
    let missing = |spans: &[SpanSeen]| -> Vec<String> {
        traces
            .iter()
            .filter(|(_, t)| !spans.iter().any(|s| &s.trace_id == *t && s.name.contains(" /")))
            .map(|(w, _)| w.to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !missing(&spans_in(&rotel.log())).is_empty() {
        let spans = spans_in(&rotel.log());
        assert!(
            Instant::now() < deadline,
            "rotel never logged the request spans of {:?}; it logged {:?}",
            missing(&spans),
            spans.iter().map(|s| (&s.name, &s.trace_id)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let spans = spans_in(&rotel.log());
    let out = std::fs::read_to_string(&stdout).unwrap();
    let logs: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for (what, trace) in &traces {
        let server_span = spans
            .iter()
            .find(|s| &s.trace_id == trace && (s.name.starts_with("POST ") || s.name.starts_with("GET ")))
            .unwrap_or_else(|| panic!("{what}: no server span for trace {trace} among {} spans", spans.len()));
        let line = logs
            .iter()
            .find(|l| l["message"] == "request" && l["trace_id"] == trace.as_str())
            .unwrap_or_else(|| panic!("{what}: no request log line with trace_id {trace}"));
        assert_eq!(line["span_id"], server_span.id.as_str(), "{what}: the log line names the request's span");
        assert_eq!(line["service_name"], "booking");
    }
    let user_span = spans.iter().find(|s| s.trace_id == traces["user"] && s.name == "POST /v1/users").unwrap();
    assert_eq!(user_span.parent_id, "00f067aa0ba902b7", "the remote parent from traceparent");
    // Children: the hold's database claim and Redis gate hang under its request span.
    let hold_span = spans.iter().find(|s| s.trace_id == traces["hold"] && s.name == "POST /v1/reservations").unwrap();
    for child in ["db hold_seat", "redis gate"] {
        let span = spans
            .iter()
            .find(|s| s.trace_id == traces["hold"] && s.name == child)
            .unwrap_or_else(|| panic!("no {child} span"));
        assert_eq!(span.parent_id, hold_span.id, "{child} is a child of the request span");
    }
    let pay_span = spans.iter().find(|s| s.trace_id == traces["pay"] && s.name == "POST /v1/payments").unwrap();
    assert!(spans.iter().any(|s| s.trace_id == traces["pay"] && s.name == "db pay" && s.parent_id == pay_span.id));
    // Log records went over OTLP too, in the trace of the span they were
    // written in: the admission tick that let this user in logged inside
    // its span.
    let records = log_records_in(&rotel.log());
    let admitted = records
        .iter()
        .filter(|r| r.body == "admitted users from the waiting queue")
        .find(|r| spans.iter().any(|s| s.name == "queue admission" && s.trace_id == r.trace_id))
        .unwrap_or_else(|| panic!("no OTLP log record of an admission in its span's trace among {records:?}"));
    assert!(!admitted.trace_id.is_empty());
    // The access line of a request whose span was exported is not sent
    // again as a log record: the span carries its fields.
    for (what, trace) in &traces {
        assert!(
            !records.iter().any(|r| r.body == "request" && &r.trace_id == trace),
            "{what}: the access line of an exported request span also went over OTLP logs"
        );
    }
    // No secret ever reaches a log line.
    assert!(!out.contains(&token) && !out.contains(&queue) && !out.contains("dev-admin-key"));

    // Loki: bounded labels, and the request lines carry their trace ids.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pushed.lock().unwrap().iter().filter(|(_, l)| l.contains("\"request\"")).count() < traces.len() {
        assert!(Instant::now() < deadline, "Loki did not receive the request lines");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pushed = pushed.lock().unwrap().clone();
    for (labels, _) in &pushed {
        assert!(
            labels.contains("service_name=\"booking\"") && labels.contains("env=\"test\"") && labels.contains("level="),
            "{labels}"
        );
        assert!(!labels.contains("trace_id"), "trace ids are not labels: {labels}");
    }
    for (what, trace) in &traces {
        assert!(
            pushed.iter().any(|(_, line)| line.contains("\"request\"") && line.contains(trace.as_str())),
            "{what}: no Loki line with trace_id {trace}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn resources_seat(resources: &Resources) -> i64 {
    let store = booking::store::Store::connect(&resources.database_url, 1).await.unwrap();
    let row: (i64,) = sqlx::query_as("SELECT min(id) FROM seats").fetch_one(store.pool()).await.unwrap();
    store.close().await;
    row.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_export_over_otlp_http_protobuf_by_default() {
    let dir = std::env::temp_dir().join(format!("booking-otlp-http-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let rotel = Rotel::start(&dir);
    let resources = Resources::new(Backend::SqliteMemory).await;
    let env = [
        // No protocol set: HTTP/protobuf is the default.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", rotel.http)),
    ];
    let mut server = Binary::serve(&resources, &env, Stdio::null());
    let r = reqwest::get(format!("{}/v1/concerts", server.base())).await.unwrap();
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    server.terminate();
    rotel.stop();
    wait_until("the span arrived over HTTP", || {
        spans_in(&rotel.log()).iter().any(|s| s.trace_id == trace && s.name == "GET /v1/concerts")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The exporter ships from its own thread and runtime, whatever runtime
/// started it: here the caller's runtime is single-threaded and never gets
/// the thread back while the export is due (`shutdown` blocks it), so a
/// gRPC channel made on it could never connect.
#[tokio::test(flavor = "current_thread")]
async fn grpc_export_does_not_depend_on_the_runtime_that_started_it() {
    use telemetry::otlp::{BatchSettings, Destination, Exporter, Signal};
    let dir = std::env::temp_dir().join(format!("booking-otlp-runtime-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let rotel = Rotel::start(&dir);
    let to = Destination { url: format!("http://127.0.0.1:{}", rotel.grpc), http: false, headers: Vec::new() };
    let settings = BatchSettings {
        max_queue: 16,
        max_queue_bytes: 1 << 20,
        max_batch: 16,
        delay: Duration::from_secs(60),
        timeout: Duration::from_secs(10),
    };
    let exporter = Exporter::start(Signal::Traces, to, settings, Vec::new(), Vec::new()).unwrap();
    let trace_id = uuid::Uuid::new_v4();
    let span = opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: trace_id.as_bytes().to_vec(),
        span_id: vec![1; 8],
        name: "from a busy runtime".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    };
    exporter.queue().push(&span.encode_to_vec());
    exporter.shutdown(Duration::from_secs(20));
    rotel.stop();
    let hex = trace_id.simple().to_string();
    assert!(
        spans_in(&rotel.log()).iter().any(|s| s.trace_id == hex && s.name == "from a busy runtime"),
        "the span reached the collector"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_still_succeed_and_dropped_spans_are_counted() {
    let resources = Resources::new(Backend::SqliteMemory).await;
    let nobody_listens = free_port();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{nobody_listens}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500".to_owned()),
    ];
    let server = Binary::serve(&resources, &env, Stdio::null());
    let http = reqwest::Client::new();
    let dropped = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("telemetry_dropped_total{signal=\"spans\"} "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..10 {
            let r = http.get(format!("{}/v1/concerts", server.base())).send().await.unwrap();
            assert_eq!(r.status(), 200, "a missing collector never fails a request");
        }
        let metrics = http.get(format!("{}/metrics", server.base())).send().await.unwrap().text().await.unwrap();
        if dropped(&metrics) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped spans were never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
