//! `alerting serve` as a child process of the test, on a free loopback port
//! with its own SQLite file, console file and rule file, scraping a gauge
//! the test controls. Its stdout and stderr go to files, so tests can read
//! the log lines it wrote.
#![allow(dead_code)]

use std::{
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{Process, TempDir, free_port, workspace_binary};

/// A responder key and a read key, both long enough to be accepted.
pub const RESPONDER_KEY: &str = "responder-key-for-tests-0123456789abcdef";
pub const READ_KEY: &str = "read-only-key-for-tests-0123456789abcdef";

/// One rule on a gauge: fires at once above 10, resolves a second after it
/// drops below 5.
pub const GAUGE_RULES: &str = r#"
evaluation_interval: 1s
rules:
  - id: queue-admission-stall
    kind: promql
    name: QueueDepth
    summary: The queue is deep
    owner: backend
    runbook: queue-admission-stall
    expr: max(queue_depth)
    critical: { above: 10, for: 0s, clear_below: 5, clear_for: 1s }
"#;

/// One rule on booking's real error ratio, quick enough for a test: a 20 s
/// window, firing 3 s after half the requests fail.
pub const CHAOS_RULES: &str = r#"
evaluation_interval: 1s
runbook_base_url: https://runbooks.example.com/booking
dashboard_base_url: http://grafana.example.com
rules:
  - id: high-error-rate
    kind: promql
    name: HighErrorRate
    summary: More than half of the requests fail
    owner: backend
    runbook: high-error-rate
    dashboard: /d/booking-overview
    unit: ratio
    expr: sum(rate(http_server_requests_total{status=~"5.."}[20s])) / sum(rate(http_server_requests_total[20s]))
    critical: { above: 0.5, for: 3s, clear_below: 0.1, clear_for: 3s }
"#;

/// The booking service on its embedded defaults (SQLite in a scratch
/// directory, the in-process queue) on a free port, with steady traffic to
/// `GET /v1/concerts` (one request each `every`); both stop on drop.
pub struct Booking {
    pub url: String,
    traffic: tokio::task::JoinHandle<()>,
    _process: Process,
    _dir: TempDir,
}

impl Drop for Booking {
    fn drop(&mut self) {
        self.traffic.abort();
    }
}

impl Booking {
    pub async fn start(every: Duration) -> Self {
        let dir = TempDir::new("booking-embedded");
        let port = free_port();
        let process = Process(
            testkit::embedded_booking(&dir.path("booking.db"), port)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        wait_until("booking up", Duration::from_secs(30), async || {
            http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        let concerts = format!("{url}/v1/concerts");
        let traffic = tokio::spawn(async move {
            loop {
                let _ = http.get(&concerts).send().await;
                tokio::time::sleep(every).await;
            }
        });
        Self { url, traffic, _process: process, _dir: dir }
    }

    /// Turns the chaos switch on (every request fails) or off.
    pub async fn chaos(&self, on: bool) {
        let http = client();
        let admin = |r: reqwest::RequestBuilder| r.header("x-admin-key", "dev-admin-key");
        let r = if on {
            admin(http.put(format!("{}/v1/admin/chaos", self.url)))
                .json(&serde_json::json!({ "error_ratio": 1.0 }))
                .send()
                .await
        } else {
            admin(http.delete(format!("{}/v1/admin/chaos", self.url))).send().await
        };
        assert!(r.is_ok_and(|r| r.status().is_success()), "the chaos switch");
    }
}

/// A `/metrics` endpoint with one gauge the test sets.
pub struct Gauge {
    value: Arc<AtomicU64>,
    scrapes: Arc<AtomicU64>,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Gauge {
    pub async fn start(value: u64) -> Self {
        let cell = Arc::new(AtomicU64::new(value));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let read = cell.clone();
        let scrapes = Arc::new(AtomicU64::new(0));
        let counted = scrapes.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let v = read.load(Ordering::SeqCst);
                async move { format!("# TYPE queue_depth gauge\nqueue_depth {v}\n") }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { value: cell, scrapes, url, server }
    }

    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::SeqCst);
    }

    /// How many times it was scraped.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

/// What the service is started with, beyond the test defaults.
pub struct Launch {
    pub dir: TempDir,
    env: Vec<(String, String)>,
    pub port: u16,
}

impl Launch {
    /// Defaults: loopback, a fresh SQLite file, the gauge rules, a console
    /// file, scraping `gauge` (or nothing reachable when `None`).
    pub fn new(gauge: Option<&Gauge>) -> Self {
        let dir = TempDir::new("alerting-serve");
        std::fs::write(dir.path("rules.yaml"), GAUGE_RULES).unwrap();
        let port = free_port();
        let scrape =
            gauge.map_or_else(|| format!("app=http://127.0.0.1:{}/metrics", free_port()), |g| format!("app={}", g.url));
        let mut launch = Self { env: Vec::new(), port, dir };
        let db = format!("sqlite://{}", launch.dir.path("incidents.db").display());
        let rules = launch.dir.path("rules.yaml").display().to_string();
        let console = launch.dir.path("console.jsonl").display().to_string();
        launch = launch
            .env("ALERTING_LISTEN", &format!("127.0.0.1:{port}"))
            .env("ALERTING_DATABASE_URL", &db)
            .env("ALERTING_RULES", &rules)
            .env("ALERTING_CONSOLE_FILE", &console)
            .env("ALERTING_SCRAPE", &scrape)
            .env("RUST_LOG", "info");
        launch
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(workspace_binary("alerting"));
        cmd.arg("serve").env_clear();
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path("stdout.log")).unwrap())
            .stderr(std::fs::File::create(self.dir.path("stderr.log")).unwrap());
        cmd
    }

    /// Starts the service and waits until `/healthz` answers.
    pub async fn start(self) -> Alerting {
        let child = Process(self.command().spawn().unwrap());
        let mut alerting =
            Alerting { url: format!("http://127.0.0.1:{}", self.port), http: client(), child, launch: self };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = alerting.child.0.try_wait() {
                panic!("alerting exited with {status}: {}", alerting.logs());
            }
            if let Ok(r) = alerting.http.get(format!("{}/healthz", alerting.url)).send().await
                && r.status().is_success()
            {
                return alerting;
            }
            assert!(Instant::now() < deadline, "alerting did not start: {}", alerting.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the service expecting it to refuse to start: returns its exit
    /// status and what it wrote. Panics if it is still running after ten
    /// seconds (it was not refused).
    pub async fn refused(self) -> (ExitStatus, String) {
        let mut child = Process(self.command().spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!("the service started instead of refusing: {}", read_logs(&self.dir));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (status, read_logs(&self.dir))
    }
}

fn read_logs(dir: &TempDir) -> String {
    let out = std::fs::read_to_string(dir.path("stdout.log")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.path("stderr.log")).unwrap_or_default();
    format!("{out}{err}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A running service, killed on drop.
pub struct Alerting {
    pub url: String,
    pub http: reqwest::Client,
    child: Process,
    pub launch: Launch,
}

impl Alerting {
    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        read_logs(&self.launch.dir)
    }

    /// Sends a request with `key` as the bearer token (if any); the status
    /// and the JSON body (`Null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until an incident is open and returns its id.
    pub async fn open_incident(&self, key: Option<&str>) -> i64 {
        let mut id = None;
        wait_until("an open incident", Duration::from_secs(20), async || {
            let (_, body) = self.call(reqwest::Method::GET, "/v1/incidents?state=open", key, None).await;
            id = body["incidents"][0]["id"].as_i64();
            id.is_some()
        })
        .await;
        id.unwrap_or_default()
    }

    /// The console file's pages, one JSON value per line.
    pub fn console_pages(&self) -> Vec<Value> {
        std::fs::read_to_string(self.launch.dir.path("console.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.0.try_wait().ok().flatten()
    }

    /// Whether it now evaluates the rules (holds the group's lease); `false`
    /// when it does not answer.
    pub async fn is_leader(&self) -> bool {
        self.metric("alerting_leader").await == Some(1.0)
    }

    /// A counter or gauge from its own `/metrics`, by its exact series text.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`.
pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
