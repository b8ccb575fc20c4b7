//! The runbook's HTTP client against real local servers: a redirect to
//! another origin never carries the admin key, one within the origin is
//! followed, https targets are attempted over TLS, and a URL's user-info
//! never reaches the output.

mod support;

use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::{free_port, runbook};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const KEY: &str = "rb-secret-admin-key";

/// One request as a server saw it: its path and headers (names lower-case).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A raw answer: status line, extra headers, body.
struct Answer {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn json(body: Value) -> Answer {
    Answer { status: "200 OK", headers: vec![("Content-Type", "application/json".into())], body: body.to_string() }
}

fn redirect(status: &'static str, location: String) -> Answer {
    Answer { status, headers: vec![("Location", location)], body: String::new() }
}

/// A small HTTP/1.1 server on a free port: one request per connection,
/// answered by `answer(path)`, each request kept for the test to read.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("listener binds");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let kept = seen.clone();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, answer) = (kept.clone(), answer.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &kept, answer.as_ref()).await;
                });
            }
        });
        Self { url: format!("http://127.0.0.1:{port}"), seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    kept: &Mutex<Vec<Seen>>,
    answer: &(dyn Fn(&str) -> Answer + Send + Sync),
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let reply = answer(&path);
    kept.lock().expect("not poisoned").push(Seen { path, headers });
    let mut out = format!("HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n", reply.status, reply.body.len());
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// What booking's admin API and probes answer when all is well.
fn healthy_booking(path: &str) -> Answer {
    match path {
        "/v1/admin/queue/admission" => {
            json(serde_json::json!({ "batch": 500, "interval_ms": 15000, "active_window_secs": 600 }))
        }
        "/v1/admin/chaos" => {
            json(serde_json::json!({ "enabled": false, "routes": [], "error_ratio": 0.0, "latency_ms": 0 }))
        }
        "/readyz" | "/healthz" => json(serde_json::json!({ "status": "ready", "database": "ok", "queue": "ok" })),
        "/metrics" => Answer { status: "200 OK", headers: vec![], body: "booking_queue_waiting 0\n".into() },
        _ => Answer { status: "404 Not Found", headers: vec![], body: String::new() },
    }
}

fn preflight(report: &Value, target: &str) -> Value {
    report["preflight"]
        .as_array()
        .and_then(|p| p.iter().find(|c| c["target"] == target))
        .cloned()
        .unwrap_or_else(|| panic!("no {target} check in {report:#}"))
}

#[tokio::test]
async fn a_redirect_to_another_origin_never_carries_the_admin_key() {
    for status in ["307 Temporary Redirect", "302 Found"] {
        let elsewhere = Server::start(healthy_booking).await;
        let target = elsewhere.url.clone();
        let booking = Server::start(move |path| redirect(status, format!("{target}{path}"))).await;

        let outcome =
            runbook(&["run", "queue-admission-stall", "--booking-url", &booking.url, "--admin-key", KEY, "--json"], "")
                .await;

        let leaked: Vec<Seen> = elsewhere.seen().into_iter().filter(|r| r.header("x-admin-key").is_some()).collect();
        assert!(leaked.is_empty(), "{status}: the other origin got the admin key: {leaked:?}");
        let asked = booking.seen();
        assert!(
            asked.iter().any(|r| r.path == "/v1/admin/queue/admission" && r.header("x-admin-key") == Some(KEY)),
            "booking itself was asked with the key: {asked:?}"
        );
        assert_eq!(outcome.code, 3, "{status}: a target failed\n{}\n{}", outcome.stdout, outcome.stderr);
        let check = preflight(&outcome.json(), "booking");
        let error = check["error"].as_str().unwrap_or_default();
        let code = &status[..3];
        assert!(
            error.contains(&format!("redirected ({code}"))
                && error.contains(&format!("to another origin, {}", elsewhere.url))
                && error.contains("not followed"),
            "{status}: {check:#}"
        );
        assert!(!outcome.stdout.contains(KEY) && !outcome.stderr.contains(KEY), "the key is never printed");
    }
}

#[tokio::test]
async fn a_redirect_within_the_origin_is_followed_with_the_key() {
    // Everything moved under /v2 on the same host and port.
    let booking = Server::start(|path| match path.strip_prefix("/v2") {
        Some(rest) => healthy_booking(rest),
        None => redirect("307 Temporary Redirect", format!("/v2{path}")),
    })
    .await;

    // No alerting service answers its admissions check: left out, so the
    // rest can be healthy.
    let args = [
        "run",
        "queue-admission-stall",
        "--booking-url",
        &booking.url,
        "--admin-key",
        KEY,
        "--skip",
        "admissions",
        "--json",
    ];
    let outcome = runbook(&args, "").await;

    assert_eq!(outcome.code, 0, "healthy through the redirect\n{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(outcome.step("admission-rate")["output"]["batch"], 500);
    let moved: Vec<Seen> = booking.seen().into_iter().filter(|r| r.path == "/v2/v1/admin/queue/admission").collect();
    assert!(
        !moved.is_empty() && moved.iter().all(|r| r.header("x-admin-key") == Some(KEY)),
        "the key follows within the origin: {moved:?}"
    );
}

#[tokio::test]
async fn an_https_target_is_attempted_over_tls() {
    // A plain TCP server where a TLS one should be: it keeps the first bytes
    // of each connection, then answers in plain HTTP, as a misconfigured
    // port would. A client speaking TLS sends a ClientHello first.
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("listener binds");
    let first_bytes: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = first_bytes.clone();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 512];
            while bytes.len() < 6 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
            }
            // Kept before answering: the client fails only after the answer.
            kept.lock().expect("not poisoned").push(bytes);
            let _ =
                stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        }
    });

    let url = format!("https://127.0.0.1:{port}");
    let outcome = runbook(&["run", "queue-admission-stall", "--booking-url", &url, "--json"], "").await;
    server.abort();

    let connections = first_bytes.lock().expect("not poisoned").clone();
    assert!(!connections.is_empty(), "the https target was never connected to\n{}\n{}", outcome.stdout, outcome.stderr);
    for bytes in &connections {
        // A TLS handshake record (0x16), version 3.x, carrying a ClientHello (type 1).
        assert!(
            bytes.len() >= 6 && bytes[0] == 0x16 && bytes[1] == 0x03 && bytes[5] == 0x01,
            "not a TLS ClientHello: {bytes:02x?}"
        );
    }
    assert_eq!(outcome.code, 3, "{}\n{}", outcome.stdout, outcome.stderr);
    let check = preflight(&outcome.json(), "booking");
    let error = check["error"].as_str().unwrap_or_default();
    assert!(error.contains("unreachable: connection failed: TLS handshake failed"), "{check:#}");
    assert!(!error.contains("scheme") && !error.contains("builder"), "https is supported: {check:#}");
}

#[tokio::test]
async fn user_info_in_a_failing_url_is_never_printed() {
    // Nothing listens on these ports: every call fails to connect.
    let booking = format!("http://rb-ops:booking-pa55word@127.0.0.1:{}", free_port());
    let prometheus = format!("https://prom-t0ken-abc123@127.0.0.1:{}/prom", free_port());
    let alerting = format!("http://rb-pager:alerting-pa55word@127.0.0.1:{}", free_port());
    let secrets = ["rb-ops", "booking-pa55word", "prom-t0ken-abc123", "rb-pager", "alerting-pa55word"];

    let base = ["run", "telemetry-pipeline-down", "--booking-url", &booking, "--prometheus-url", &prometheus];
    let text = runbook(&base, "").await;
    let mut as_json = base.to_vec();
    as_json.push("--json");
    let json = runbook(&as_json, "").await;
    let mut recorded = base.to_vec();
    recorded.extend(["--incident", "1", "--alerting-url", &alerting]);
    let recording = runbook(&recorded, "").await;

    for (what, outcome) in [("text", &text), ("json", &json), ("--incident", &recording)] {
        for secret in secrets {
            assert!(
                !outcome.stdout.contains(secret) && !outcome.stderr.contains(secret),
                "{what}: `{secret}` was printed\n{}\n{}",
                outcome.stdout,
                outcome.stderr
            );
        }
    }
    // The failures are still reported, with the URLs shown redacted.
    assert_eq!(json.code, 3, "Prometheus failed its check\n{}\n{}", json.stdout, json.stderr);
    let prometheus_check = preflight(&json.json(), "prometheus");
    assert!(
        prometheus_check["error"]
            .as_str()
            .is_some_and(|e| e.contains("https://***@127.0.0.1:") && e.contains("connection failed")),
        "{prometheus_check:#}"
    );
    assert!(
        json.step("booking-up")["summary"].as_str().is_some_and(|s| s.contains("http://***@127.0.0.1:")),
        "{}",
        json.stdout
    );
    assert_eq!(recording.code, 3, "{}\n{}", recording.stdout, recording.stderr);
    assert!(
        recording.stderr.contains("cannot reach the alerting service at http://***@127.0.0.1:"),
        "{}",
        recording.stderr
    );
}

/// Booking closes a kept-alive connection after 10 s idle; the two samples
/// of a route check are 10 s apart. A connection idle that long must not be
/// reused (the request would race the close and meet a reset): the second
/// request after a pause opens a connection of its own.
#[tokio::test]
async fn an_idle_connection_is_not_reused_after_a_pause_that_long() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(0u32));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            *counted.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Keep-alive: answer every request on the connection, never close it.
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let client =
        runbook::target::http_client(std::time::Duration::from_secs(2), std::time::Duration::from_secs(5)).unwrap();
    for _ in 0..2 {
        assert_eq!(client.get(&url).send().await.unwrap().text().await.unwrap(), "ok");
    }
    assert_eq!(*accepted.lock().unwrap(), 1, "back to back, the connection is reused");
    // Idle past IDLE_REUSE (and so well before booking's 10 s close).
    tokio::time::sleep(runbook::target::IDLE_REUSE + std::time::Duration::from_secs(1)).await;
    assert_eq!(client.get(&url).send().await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(*accepted.lock().unwrap(), 2, "idle past IDLE_REUSE, a new connection");
}
