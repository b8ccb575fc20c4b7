//! What the integration tests share: the `runbook` binary with a clean
//! environment, real services on random ports (booking, alerting, a private
//! redis-server), a throwaway PostgreSQL database, and polling with a
//! deadline instead of sleeps.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::{
    future::Future,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::{Connection, postgres::PgConnectOptions};

/// Variables the CLI reads, removed so a developer's shell cannot leak in.
const TARGET_VARS: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "PROMETHEUS_URL",
    "BOOKING_URL",
    "BOOKING_ADMIN_KEY",
    "ADMIN_KEY",
    "ALERTING_URL",
    "ALERTING_API_KEY",
    "RUNBOOKS_DIR",
];

/// The outcome of one `runbook` invocation.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// The step `id` of a `run --json` report.
    pub fn step(&self, id: &str) -> Value {
        let report = self.json();
        report["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no step {id} in {report:#}"))
    }

    /// Step `id`'s status, with its reason when it was skipped:
    /// `ok`, `problem`, `failed`, `applied`, `skipped: not_applied`.
    pub fn status(&self, id: &str) -> String {
        let step = self.step(id);
        let status = step["status"].as_str().unwrap_or_else(|| panic!("step {id} has no status: {step:#}"));
        match step["reason"].as_str() {
            Some(reason) => format!("{status}: {reason}"),
            None => status.to_string(),
        }
    }
}

/// Nothing listens on port 1: no alerting service, unless a test starts
/// one and passes `--alerting-url` (a developer's own on :9095 never answers).
pub const NO_ALERTING: &str = "http://127.0.0.1:1";

/// Runs the real `runbook` binary with `args`, feeding `stdin`.
pub async fn runbook(args: &[&str], stdin: &str) -> Outcome {
    runbook_with(args, stdin, &[]).await
}

/// [`runbook`] with these variables set as well.
pub async fn runbook_with(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Outcome {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbook"));
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for var in TARGET_VARS {
        command.env_remove(var);
    }
    command.env("ALERTING_URL", NO_ALERTING);
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("the runbook binary starts");
    {
        use tokio::io::AsyncWriteExt;
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin.as_bytes()).await.expect("stdin written");
    }
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("runbook finished within 2 minutes")
        .expect("runbook ran");
    Outcome {
        code: output.status.code().expect("runbook exited (not killed)"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `check` until it returns `Some`, failing with `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// For polls that need `&mut` state: `while !ready { deadline.tick().await }`.
pub struct Deadline {
    what: &'static str,
    timeout: Duration,
    at: Instant,
}

impl Deadline {
    pub fn new(what: &'static str, timeout: Duration) -> Self {
        Self { what, timeout, at: Instant::now() + timeout }
    }

    /// Waits a little, or fails the test once the deadline has passed.
    pub async fn tick(&self) {
        assert!(Instant::now() < self.at, "timed out after {:?} waiting for {}", self.timeout, self.what);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use testkit::{Process, TempDir, free_port, workspace_binary};

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

async fn wait_healthy(url: &str, what: &str, process: &mut Process) {
    let client = http();
    eventually(what, Duration::from_secs(60), || {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("{what} exited early with {status}");
        }
        let request = client.get(format!("{url}/healthz")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()).map(drop) }
    })
    .await;
}

/// The real booking service on a random port, SQLite in a temp dir, the
/// in-process queue, the default admin key.
pub struct Booking {
    pub url: String,
    _process: Process,
    _dir: TempDir,
}

pub const ADMIN_KEY: &str = "dev-admin-key";

impl Booking {
    pub async fn start() -> Self {
        let dir = TempDir::new("runbook-test");
        let port = free_port();
        let mut command = testkit::embedded_booking(&dir.path("b.db"), port);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut process = Process(command.spawn().expect("booking starts"));
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&url, "booking /healthz", &mut process).await;
        Self { url, _process: process, _dir: dir }
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = http().request(method, format!("{}{path}", self.url)).header("X-Admin-Key", ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin API answers");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.expect("admin API answers JSON")
    }
}

/// The real alerting service on a random port with `rules` (YAML), paging
/// into a file.
pub struct Alerting {
    pub url: String,
    _process: Process,
    _dir: TempDir,
}

/// The alert rules the platform ships, as `scripts/run.sh` runs them.
pub fn shipped_rules() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerting/config/rules.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Alerting {
    /// Scraping nothing: `up{job="booking"}` is 0.
    pub async fn start(rules: &str) -> Self {
        Self::scraping(rules, "http://127.0.0.1:1/metrics").await
    }

    /// Scraping `booking`'s /metrics every second, as the embedded platform
    /// (booking and alerting, no Prometheus) does.
    pub async fn watching(booking: &Booking, rules: &str) -> Self {
        Self::scraping(rules, &format!("{}/metrics", booking.url)).await
    }

    async fn scraping(rules: &str, target: &str) -> Self {
        let dir = TempDir::new("runbook-test");
        std::fs::write(dir.path("rules.yaml"), rules).expect("rules written");
        let port = free_port();
        let mut command = Command::new(workspace_binary("alerting"));
        command
            .arg("serve")
            .env("ALERTING_LISTEN", format!("127.0.0.1:{port}"))
            .env("ALERTING_DATABASE_URL", format!("sqlite://{}", dir.path("a.db").display()))
            .env("ALERTING_SCRAPE", format!("booking={target}"))
            .env("ALERTING_CONSOLE_FILE", dir.path("pages.jsonl"))
            .env("ALERTING_RULES", dir.path("rules.yaml"))
            .env("ALERTING_INTERVAL", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for var in [
            "PROMETHEUS_URL",
            "SLACK_WEBHOOK_URL",
            "SMTP_HOST",
            "ALERTING_API_KEY",
            "ALERTING_ROSTER",
            "RUNBOOK_BASE_URL",
        ] {
            command.env_remove(var);
        }
        let mut process = Process(command.spawn().expect("alerting starts"));
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&url, "alerting /healthz", &mut process).await;
        Self { url, _process: process, _dir: dir }
    }

    /// The state (`inactive`, `pending`, `firing`, `no_data`) the service
    /// publishes for `rule` on its /metrics, once it has evaluated it.
    pub async fn rule_state(&self, rule: &str) -> Option<String> {
        let text = http().get(format!("{}/metrics", self.url)).send().await.ok()?.text().await.ok()?;
        let samples = runbook::exposition::parse(&text);
        let current =
            samples.iter().find(|s| s.name == "alerting_rule_state" && s.label("rule") == rule && s.value == 1.0)?;
        Some(current.label("state").to_string())
    }

    /// Waits until every one of `rules` is in `state`.
    pub async fn wait_for(&self, rules: &[&str], state: &str) {
        eventually(&format!("{rules:?} to be {state}"), Duration::from_secs(60), || async {
            for rule in rules {
                if self.rule_state(rule).await.as_deref() != Some(state) {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = http().get(format!("{}{path}", self.url)).send().await.expect("alerting answers");
        response.json().await.expect("alerting answers JSON")
    }

    /// The first open incident, once [`FIRING_RULES`] have opened one.
    pub async fn open_incident(&self) -> i64 {
        eventually("an open incident", Duration::from_secs(30), || async {
            let list = self.get("/v1/incidents?state=open").await;
            list["incidents"].as_array()?.first()?["id"].as_i64()
        })
        .await
    }
}

/// One rule that fires at once: the scrape target is down, so the
/// synthesized `up{job="booking"}` is 0. An incident to record runs on.
pub const FIRING_RULES: &str = r#"
evaluation_interval: 1s
rules:
  - id: telemetry-pipeline-down
    kind: promql
    expr: up{job="booking"}
    summary: Booking cannot be scraped
    owner: infra
    runbook: telemetry-pipeline-down
    critical: { below: 0.5, for: 0s, clear_above: 0.9 }
"#;

/// A redis-server of the test's own, so filling it and changing its
/// configuration cannot disturb tests sharing the machine's Redis.
pub struct PrivateRedis {
    pub url: String,
    _process: Process,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let process = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).expect("redis URL");
        eventually("the private redis-server to answer PING", Duration::from_secs(20), || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            }
        })
        .await;
        Self { url, _process: Process(process) }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }

    pub async fn config(&self, name: &str) -> String {
        let mut conn = self.conn().await;
        let pair: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut conn).await.expect("CONFIG GET");
        pair.get(1).cloned().unwrap_or_default()
    }
}

/// A database of the test's own on the shared PostgreSQL (dropped with its
/// sessions when the test ends).
pub struct TestDb(testkit::Database);

impl std::ops::Deref for TestDb {
    type Target = testkit::Database;

    fn deref(&self) -> &testkit::Database {
        &self.0
    }
}

impl TestDb {
    pub async fn create() -> Self {
        Self(testkit::Database::create("runbook").await)
    }

    /// A session with `application_name` set, so it is easy to tell apart.
    pub async fn session(&self, application_name: &str) -> sqlx::PgConnection {
        let options: PgConnectOptions = self.url.parse().expect("database URL");
        sqlx::PgConnection::connect_with(&options.application_name(application_name)).await.expect("session connects")
    }
}
