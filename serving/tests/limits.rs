//! The listener's limits, over real sockets: each test starts `serve` on a
//! free port and talks to it byte by byte.

use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::Request,
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serving::{BodyTimedOut, ConnectionMetrics, Limits};
use testkit::read_to_close;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// Set once `/slow` is being served (only one test calls it).
static SLOW_ENTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a test waits for a condition before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    addr: std::net::SocketAddr,
    metrics: ConnectionMetrics,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: Limits) -> Self {
        let router = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/echo", post(|body: Bytes| async move { body }))
            .route("/big", get(|| async { vec![b'x'; 32 * 1024 * 1024] }))
            .route(
                "/slow",
                get(|| async {
                    SLOW_ENTERED.store(true, std::sync::atomic::Ordering::Release);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            )
            .layer(middleware::from_fn(answer_408));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = ConnectionMetrics::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(serving::serve(listener, router, limits, metrics.clone(), async move {
            let _ = stopped.await;
        }));
        Self { addr, metrics, stop: Some(stop), done }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

/// What a service does with [`BodyTimedOut`]: the client was too slow, 408.
async fn answer_408(req: Request, next: Next) -> Response {
    let timed_out = req.extensions().get::<BodyTimedOut>().cloned();
    let response = next.run(req).await;
    if timed_out.is_some_and(|t| t.fired()) {
        return (StatusCode::REQUEST_TIMEOUT, "late body").into_response();
    }
    response
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        max_connections: 100,
    }
}

async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_request_head_that_never_ends_closes_the_connection() {
    let server = Server::start(limits()).await;
    let mut stream = server.connect().await;
    stream.write_all(b"GET /hello HTTP/1.1\r\nhost: t\r\n").await.unwrap();
    read_to_close(&mut stream).await;
    assert_eq!(server.metrics.closed.with_label_values(&["header_timeout"]).get(), 1);
    // A prompt client is still served.
    assert!(request(&mut server.connect().await, "/hello").await.contains("200 OK"));
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_no_request_follows() {
    let server = Server::start(limits()).await;
    let mut stream = server.connect().await;
    assert!(request(&mut stream, "/hello").await.contains("hello"));
    read_to_close(&mut stream).await;
    assert_eq!(server.metrics.closed.with_label_values(&["keepalive_timeout"]).get(), 1);
    assert_eq!(
        server.metrics.closed.with_label_values(&["header_timeout"]).get(),
        0,
        "an idle client is not a slow one"
    );
}

#[tokio::test]
async fn a_trickled_body_fails_its_read_and_the_service_can_answer_408() {
    let server = Server::start(limits()).await;
    let mut stream = server.connect().await;
    stream.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nabc").await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A whole body in time is echoed.
    let mut stream = server.connect().await;
    stream.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("abc"));
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_cut_off() {
    let server = Server::start(limits()).await;
    let mut stream = server.connect().await;
    stream.write_all(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    // Read nothing: the server fills the socket buffers, then nothing moves.
    let closed = &server.metrics.closed.with_label_values(&["idle_timeout"]);
    tokio::time::timeout(PATIENCE, async {
        while closed.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the idle connection was closed");
    let received = read_to_close(&mut stream).await;
    assert!(received.len() < 32 * 1024 * 1024, "the response was cut short");
}

#[tokio::test]
async fn past_the_cap_a_connection_waits_until_another_closes() {
    let server =
        Server::start(Limits { max_connections: 2, header_read_timeout: Duration::from_secs(30), ..limits() }).await;
    let mut first = server.connect().await;
    let second = server.connect().await;
    assert!(request(&mut first, "/hello").await.contains("200 OK"));
    let addr = server.addr;
    let third = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        request(&mut stream, "/hello").await
    });
    tokio::time::timeout(PATIENCE, async {
        while server.metrics.limit_reached.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the cap was reached");
    assert_eq!(server.metrics.active.get(), 2);
    assert!(!third.is_finished(), "the third connection is not served while two are open");
    drop(second);
    let answer = tokio::time::timeout(PATIENCE, third).await.expect("served once a slot freed").unwrap();
    assert!(answer.contains("200 OK"), "{answer}");
    drop(first);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_then_returns() {
    let mut server = Server::start(limits()).await;
    let mut stream = server.connect().await;
    stream.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        while !SLOW_ENTERED.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let _ = server.stop.take().unwrap().send(());
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.contains("200 OK") && answer.ends_with("slow"), "{answer}");
    tokio::time::timeout(PATIENCE, &mut server.done).await.expect("serve returned").unwrap().unwrap();
}
