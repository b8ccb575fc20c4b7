//! `spawn_app` for the behavioural suite: each test gets its own database
//! (a temporary SQLite file, or a PostgreSQL database with a random name)
//! and its own Redis key prefix, and removes them when it ends.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use booking::{
    AppState, app, build_state,
    domain::Clock,
    queue::Queue,
    settings::{Secret, Settings},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SqliteMemory,
    PostgresRedis,
    /// Three instances behind a round-robin router, sharing PostgreSQL and a
    /// Redis Cluster of the test's own (3 masters, 3 replicas).
    Cluster,
}

/// How many instances a [`Backend::Cluster`] app spreads its requests over.
pub const CLUSTER_INSTANCES: usize = 3;

use testkit::unique;
pub use testkit::{free_port, redis_url};

/// The test's database and key prefix; dropped with the test.
pub struct Resources {
    backend: Backend,
    pub database_url: String,
    pub redis_prefix: String,
    pub redis_url: Option<String>,
    sqlite_file: Option<std::path::PathBuf>,
    /// Dropped (with its sessions) when the test ends.
    _pg: Option<testkit::Database>,
    /// The Redis Cluster of a [`Backend::Cluster`] test; its nodes die with it.
    pub cluster: Option<std::sync::Mutex<testkit::RedisCluster>>,
}

impl Resources {
    pub async fn new(backend: Backend) -> Self {
        let id = unique();
        match backend {
            Backend::SqliteMemory => {
                let file = std::env::temp_dir().join(format!("booking-test-{id}.db"));
                Self {
                    backend,
                    database_url: format!("sqlite://{}", file.display()),
                    redis_prefix: String::new(),
                    redis_url: None,
                    sqlite_file: Some(file),
                    _pg: None,
                    cluster: None,
                }
            }
            Backend::PostgresRedis => {
                let db = testkit::Database::create("booking_test").await;
                Self {
                    backend,
                    database_url: db.url.clone(),
                    redis_prefix: format!("test-{id}"),
                    redis_url: Some(redis_url()),
                    sqlite_file: None,
                    _pg: Some(db),
                    cluster: None,
                }
            }
            Backend::Cluster => {
                let db = testkit::Database::create("booking_test").await;
                let cluster = tokio::task::spawn_blocking(|| testkit::RedisCluster::start(3))
                    .await
                    .expect("the Redis Cluster starts");
                Self {
                    backend,
                    database_url: db.url.clone(),
                    redis_prefix: format!("test-{id}"),
                    redis_url: Some(cluster.url()),
                    sqlite_file: None,
                    _pg: Some(db),
                    cluster: Some(std::sync::Mutex::new(cluster)),
                }
            }
        }
    }

    /// A database the test made itself (on a cluster of its own), with the
    /// in-process queue; nothing to clean up here.
    pub fn on_database(database_url: String) -> Self {
        Self {
            backend: Backend::SqliteMemory,
            database_url,
            redis_prefix: String::new(),
            redis_url: None,
            sqlite_file: None,
            _pg: None,
            cluster: None,
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            database_url: Secret::new(self.database_url.clone()),
            redis_url: self.redis_url.clone().map(Secret::new),
            redis_key_prefix: self.redis_prefix.clone(),
            admission_batch: 10_000,
            database_max_connections: 16,
            ..Settings::default()
        }
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Some(file) = &self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if self.backend != Backend::PostgresRedis {
            return;
        }
        let prefix = self.redis_prefix.clone();
        // Drop cannot await; clean up on a runtime of our own. (The
        // database drops itself.)
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                if let Ok(Queue::Redis(q)) = Queue::redis(&redis_url(), &prefix, None).await {
                    let _ = q.purge().await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Clock,
    pub resources: std::sync::Arc<Resources>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s).await
}

pub async fn spawn_app_with(backend: Backend, tune: impl FnOnce(Settings) -> Settings) -> TestApp {
    let resources = std::sync::Arc::new(Resources::new(backend).await);
    if backend != Backend::Cluster {
        return spawn_instance(resources, Clock::default(), tune).await;
    }
    let clock = Clock::default();
    let settings = tune(resources.settings());
    let mut instances = Vec::with_capacity(CLUSTER_INSTANCES);
    for _ in 0..CLUSTER_INSTANCES {
        let settings = settings.clone();
        instances.push(spawn_instance(resources.clone(), clock.clone(), move |_| settings).await);
    }
    let routers: Vec<Router> = instances.iter().map(|i| i.router.clone()).collect();
    let first = instances.swap_remove(0);
    TestApp { router: Router::new().fallback_service(RoundRobin::new(routers)), ..first }
}

/// Sends each request to the next of several instances in turn, as a load
/// balancer's round robin does.
#[derive(Clone)]
struct RoundRobin {
    routers: std::sync::Arc<[Router]>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RoundRobin {
    fn new(routers: Vec<Router>) -> Self {
        Self { routers: routers.into(), next: Default::default() }
    }
}

impl tower::Service<Request<Body>> for RoundRobin {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.routers.len();
        let router = self.routers[i].clone();
        Box::pin(async move { router.oneshot(req).await })
    }
}

/// Another instance on the same database and Redis prefix (a restart, or a
/// second replica), with `tune` applied to its settings.
pub async fn spawn_instance(
    resources: std::sync::Arc<Resources>,
    clock: Clock,
    tune: impl FnOnce(Settings) -> Settings,
) -> TestApp {
    let state = build_state(tune(resources.settings()), clock.clone()).await.expect("app builds");
    TestApp { router: app(state.clone()), state, clock, resources }
}

/// A test app served over a real socket by the production accept loop
/// (`serving::serve` with the app's settings), for what happens on the wire:
/// timeouts, connection limits, per-client limits. Stops when dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    pub async fn serve(&self) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = &self.state.settings;
        tokio::spawn(serving::serve(
            listener,
            self.router.clone(),
            settings.http,
            self.state.metrics.connections.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Served { addr, stop: Some(stop) }
    }

    /// `/metrics` as Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.call("GET", "/metrics", &[], None).await;
        assert_eq!(status, StatusCode::OK);
        body.as_str().unwrap_or_default().to_owned()
    }
}

/// The value of the series `name{labels}` (labels in the exposition's
/// order, e.g. `method="GET",route="/v1/x"`), 0 when absent.
pub fn series_value(metrics: &str, name: &str, labels: &str) -> f64 {
    let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// A user of the API: bearer token and, once in line, a queue token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub token: String,
    pub queue_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Concert {
    pub id: i64,
    pub performance_id: i64,
    pub seat_ids: Vec<i64>,
}

impl TestApp {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        send(self.router.clone(), method, path, headers, body.map(|b| b.to_string())).await
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        send(self.router.clone(), method, path, headers, Some(body.to_owned())).await
    }

    pub async fn create_user(&self, name: &str) -> User {
        let (status, body) = self.call("POST", "/v1/users", &[], Some(json!({ "name": name }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        User {
            id: body["user_id"].as_i64().unwrap(),
            token: body["token"].as_str().unwrap().to_owned(),
            queue_token: None,
        }
    }

    pub async fn create_concert(&self, seats: usize, price: i64) -> Concert {
        let seats: Vec<Value> =
            (1..=seats).map(|n| json!({ "seat_no": format!("A{n}"), "grade": "VIP", "price": price })).collect();
        let body = json!({ "title": "Test concert", "performances": [{ "starts_at": "2030-05-01T19:00:00Z", "seats": seats }] });
        let (status, created) =
            self.call("POST", "/v1/admin/concerts", &[("x-admin-key", "dev-admin-key")], Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let concert_id = created["concert_id"].as_i64().unwrap();
        let performance_id = created["performances"][0]["performance_id"].as_i64().unwrap();
        let seat_ids = self.state.store.seats(performance_id, 0).await.unwrap().iter().map(|s| s.seat_id).collect();
        Concert { id: concert_id, performance_id, seat_ids }
    }

    pub async fn enter_queue(&self, user: &mut User, concert_id: i64) -> (StatusCode, Value) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/queue/tokens",
                &[("authorization", &bearer(user))],
                Some(json!({ "concert_id": concert_id })),
            )
            .await;
        if let Some(t) = body["queue_token"].as_str() {
            user.queue_token = Some(t.to_owned());
        }
        (status, body)
    }

    /// Moves time to the next admission tick and runs it.
    pub async fn admit(&self) -> Option<u64> {
        let policy = self.state.admission_policy();
        self.clock.advance(Duration::from_millis(policy.interval_ms as u64));
        self.state.queue.admit(policy, self.clock.now_ms()).await.expect("admission runs")
    }

    /// `n` users, in line for `concert_id` and admitted.
    pub async fn active_users(&self, n: usize, concert_id: i64) -> Vec<User> {
        let mut users = Vec::with_capacity(n);
        for i in 0..n {
            let mut u = self.create_user(&format!("fan{i}")).await;
            let (status, body) = self.enter_queue(&mut u, concert_id).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            users.push(u);
        }
        self.admit().await;
        users
    }

    pub async fn charge(&self, user: &User, amount: i64, key: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/v1/users/me/balance/charges",
            &[("authorization", &bearer(user)), ("idempotency-key", key)],
            Some(json!({ "amount": amount })),
        )
        .await
    }

    pub async fn hold(&self, user: &User, seat_id: i64) -> (StatusCode, Value) {
        hold(self.router.clone(), user, seat_id).await
    }

    pub async fn pay(&self, user: &User, reservation_id: &str, key: &str) -> (StatusCode, Value) {
        pay(self.router.clone(), user, reservation_id, key).await
    }

    pub async fn balance(&self, user: &User) -> i64 {
        let (status, body) = self.call("GET", "/v1/users/me/balance", &[("authorization", &bearer(user))], None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["balance"].as_i64().unwrap()
    }
}

pub fn bearer(user: &User) -> String {
    format!("Bearer {}", user.token)
}

pub async fn hold(router: Router, user: &User, seat_id: i64) -> (StatusCode, Value) {
    let q = user.queue_token.clone().unwrap_or_default();
    send(
        router,
        "POST",
        "/v1/reservations",
        &[("authorization", &bearer(user)), ("queue-token", &q)],
        Some(json!({ "seat_id": seat_id }).to_string()),
    )
    .await
}

pub async fn pay(router: Router, user: &User, reservation_id: &str, key: &str) -> (StatusCode, Value) {
    let q = user.queue_token.clone().unwrap_or_default();
    send(
        router,
        "POST",
        "/v1/payments",
        &[("authorization", &bearer(user)), ("queue-token", &q), ("idempotency-key", key)],
        Some(json!({ "reservation_id": reservation_id }).to_string()),
    )
    .await
}

pub async fn send(
    router: Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (StatusCode, Value) {
    let (status, _, value) = send_for_headers(router, method, path, headers, body).await;
    (status, value)
}

/// [`send`], also returning the response headers.
pub async fn send_for_headers(
    router: Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let response = router.oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

/// The real `booking` binary serving this test's database (and Redis
/// prefix), killed when dropped.
pub struct Binary {
    pub child: std::process::Child,
    pub port: u16,
}

impl Binary {
    pub fn serve(resources: &Resources, env: &[(&str, String)], stdout: std::process::Stdio) -> Self {
        let port = free_port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_booking"));
        cmd.arg("serve")
            .env("BOOKING_LISTEN", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &resources.database_url)
            .env("ADMISSION_INTERVAL_SECS", "1")
            .env("RUST_LOG", "warn")
            .stdout(stdout)
            .stderr(std::process::Stdio::null());
        if let Some(url) = &resources.redis_url {
            cmd.env("REDIS_URL", url).env("REDIS_KEY_PREFIX", &resources.redis_prefix);
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let binary = Self { child: cmd.spawn().expect("booking binary starts"), port };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "booking did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        binary
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then wait: the service drains and flushes its exporters.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
