//! The whole paging chain with real parts: a real Prometheus scrapes a real
//! booking instance (PostgreSQL + Redis) and the alerting service; the
//! booking chaos switch raises the error rate; the critical page reaches a
//! real SMTP server (aiosmtpd) and a Slack stand-in that validates Block
//! Kit, both with the runbook link; ack is recorded; recovery sends the
//! resolved notice. Also: a process killed between writing a page and
//! sending it delivers it exactly once after restart.

mod support {
    pub mod serve;
    pub mod slack_receiver;
    pub mod smtp;
}

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{
    serve::{CHAOS_RULES, GAUGE_RULES, Gauge, wait_until},
    slack_receiver::{Reply, SlackReceiver},
    smtp::{self, SmtpServer},
};

use testkit::{Database, Process, TempDir, free_port, redis_url, workspace_binary as binary};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A PostgreSQL database and Redis prefix of this test's own.
struct Backing {
    db: Database,
    prefix: String,
}

impl Backing {
    async fn new() -> Self {
        Self { db: Database::create("alerting_e2e").await, prefix: format!("e2e-{}:", testkit::unique()) }
    }
}

impl Drop for Backing {
    /// The database drops itself; the Redis keys go here (SCAN, never
    /// KEYS: the Redis is shared with every other test).
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(client) = redis::Client::open(redis_url()) else { return };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
                let mut cursor = 0u64;
                loop {
                    let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                    else {
                        return;
                    };
                    if !keys.is_empty() {
                        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                    if next == 0 {
                        return;
                    }
                    cursor = next;
                }
            });
        })
        .join();
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// A rule set of the test's own: the shipped error-rate rule's shape, on
/// 20 s windows and short `for`s so the test runs in seconds.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_error_spike_pages_slack_and_email_with_the_runbook_then_ack_and_recovery_resolve_it() {
    let dir = TempDir::new("alerting-e2e");
    let backing = Backing::new().await;
    let http = reqwest::Client::new();

    let booking_port = free_port();
    let _booking = Process(
        Command::new(binary("booking"))
            .arg("serve")
            .env("BOOKING_LISTEN", format!("127.0.0.1:{booking_port}"))
            .env("DATABASE_URL", &backing.db.url)
            .env("REDIS_URL", redis_url())
            .env("REDIS_KEY_PREFIX", &backing.prefix)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let booking = format!("http://127.0.0.1:{booking_port}");

    let smtp_server = SmtpServer::start();
    let slack = SlackReceiver::start(vec![]).await;
    let alerting_port = free_port();
    let prom_port = free_port();
    std::fs::write(dir.0.join("rules.yaml"), CHAOS_RULES).unwrap();
    let _alerting = Process(
        Command::new(binary("alerting"))
            .arg("serve")
            .env("ALERTING_LISTEN", format!("127.0.0.1:{alerting_port}"))
            .env("ALERTING_RULES", dir.0.join("rules.yaml"))
            .env("ALERTING_DATABASE_URL", format!("sqlite://{}", dir.0.join("incidents.db").display()))
            .env("PROMETHEUS_URL", format!("http://127.0.0.1:{prom_port}"))
            .env("SLACK_WEBHOOK_URL", &slack.url)
            .env("SMTP_HOST", "127.0.0.1")
            .env("SMTP_PORT", smtp_server.port.to_string())
            // aiosmtpd on loopback speaks no TLS; no credentials go over it.
            .env("SMTP_TLS", "none")
            .env("ALERTING_CONSOLE_FILE", dir.0.join("console.jsonl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let alerting = format!("http://127.0.0.1:{alerting_port}");

    // Prometheus scrapes both and also evaluates the exported shipped rules.
    let export = Command::new(binary("alerting"))
        .args(["export", "prometheus", "--out"])
        .arg(dir.0.join("export"))
        .status()
        .unwrap();
    assert!(export.success());
    std::fs::write(
        dir.0.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: booking\n    static_configs: [{{targets: ['127.0.0.1:{booking_port}']}}]\n  \
             - job_name: alerting\n    static_configs: [{{targets: ['127.0.0.1:{alerting_port}']}}]\n",
            dir.0.join("export/alerts.rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = Process(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.0.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs it)"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    wait_until("booking, alerting and Prometheus up", Duration::from_secs(60), async || {
        let q = format!("{prom}/api/v1/query?query=sum(up)");
        match http.get(&q).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["data"]["result"][0]["value"][1].as_str().map(|s| s == "2"))
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;

    // Steady traffic; half of it on the route the chaos switch will break.
    let traffic = {
        let (http, booking) = (http.clone(), booking.clone());
        tokio::spawn(async move {
            loop {
                let _ = http.get(format!("{booking}/v1/concerts")).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let chaos = http
        .put(format!("{booking}/v1/admin/chaos"))
        .header("x-admin-key", "dev-admin-key")
        .json(&json!({ "routes": ["/v1/concerts"], "error_ratio": 1.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(chaos.status(), 200);
    let broken_at = Instant::now();

    // The critical page: everyone, over Slack and email, with the runbook.
    let mail = smtp_server.wait_for(1, Duration::from_secs(90)).await;
    let detection = broken_at.elapsed();
    let slack_pages = slack.wait_for(1, Duration::from_secs(30)).await;
    println!(
        "detection to page (1 s scrape, 1 s evaluation, for 3 s, 20 s rate window): {:.1} s",
        detection.as_secs_f64()
    );
    let body = smtp::bodies(&mail[0]);
    assert!(body.contains("https://runbooks.example.com/booking/high-error-rate.md"), "{body}");
    assert!(body.contains("runbook run high-error-rate --incident"), "{body}");
    let subject = smtp::header_value(&mail[0], "Subject").unwrap_or_default();
    assert!(
        subject.contains("CRITICAL") && subject.contains("HighErrorRate"),
        "{subject:?} in {}",
        &mail[0][..mail[0].len().min(800)]
    );
    // Critical: the on-call person of every role, in one message.
    let roster = alerting::oncall::Roster::example();
    let to = smtp::header_value(&mail[0], "X-RcptTo").unwrap_or_default();
    for role in ["incident-lead", "backend", "infra", "dba"] {
        let person = roster.on_call(role, chrono::Utc::now()).unwrap();
        assert!(
            to.contains(person.email.as_deref().unwrap()),
            "{role}'s on-call {} not among the recipients: {to}",
            person.id
        );
    }
    let payload = slack_pages[0].to_string();
    assert!(payload.contains("https://runbooks.example.com/booking/high-error-rate.md"), "{payload}");
    assert!(slack.violations().is_empty(), "Block Kit violations: {:?}", slack.violations());

    // The incident, acknowledged through the CLI.
    let incidents = get_json(&http, &format!("{alerting}/v1/incidents?state=open")).await;
    let id = incidents["incidents"][0]["id"].as_i64().expect("an open incident");
    assert_eq!(incidents["incidents"].as_array().unwrap().len(), 1, "one incident, not one per evaluation");
    let ack = Command::new(binary("alerting"))
        .args(["ack", &id.to_string(), "--by", "lee", "--url", &alerting])
        .output()
        .unwrap();
    assert!(ack.status.success(), "{}", String::from_utf8_lossy(&ack.stderr));
    let shown = get_json(&http, &format!("{alerting}/v1/incidents/{id}")).await;
    assert_eq!(shown["incident"]["state"], "acked");
    assert_eq!(shown["incident"]["acked_by"], "lee");

    // Every rule the platform ships, exported to Prometheus, evaluates
    // without error; so do the alerting dashboard's queries.
    wait_until("Prometheus to evaluate the exported rules", Duration::from_secs(30), async || {
        let rules = get_json(&http, &format!("{prom}/api/v1/rules")).await;
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().unwrap().iter())
            .collect();
        !all.is_empty() && all.iter().all(|r| r["health"] == "ok")
    })
    .await;
    let set = alerting::rules::shipped();
    for rule in &set.rules {
        for c in rule.levels.iter().flat_map(|l| l.fire.iter().chain(&l.clear)) {
            let v: Value = http
                .get(format!("{prom}/api/v1/query"))
                .query(&[("query", c.expr.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["status"], "success", "rule {}: {} → {v}", rule.id, c.expr);
        }
        let first = &rule.levels[0].fire[0].expr;
        let v: Value = http
            .get(format!("{prom}/api/v1/query"))
            .query(&[("query", first.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !v["data"]["result"].as_array().unwrap().is_empty(),
            "rule {} has no data in a live stack: {first}",
            rule.id
        );
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("dashboards/alerts.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty());
    for expr in exprs {
        let expr = expr.replace("$__rate_interval", "30s");
        let v: Value = http
            .get(format!("{prom}/api/v1/query"))
            .query(&[("query", expr.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{expr}: {v}");
        assert!(!v["data"]["result"].as_array().unwrap().is_empty(), "alerts dashboard query has no data: {expr}");
    }

    // Recovery: the resolved notice reaches whoever was paged.
    let off =
        http.delete(format!("{booking}/v1/admin/chaos")).header("x-admin-key", "dev-admin-key").send().await.unwrap();
    assert!(off.status().is_success());
    let mail = smtp_server.wait_for(2, Duration::from_secs(90)).await;
    let resolved = smtp::header_value(&mail[1], "Subject").unwrap_or_default();
    assert!(resolved.contains("RESOLVED"), "{resolved}");
    let slack_pages = slack.wait_for(2, Duration::from_secs(30)).await;
    assert!(slack_pages[1].to_string().to_lowercase().contains("resolved"));
    let shown = get_json(&http, &format!("{alerting}/v1/incidents/{id}")).await;
    assert_eq!(shown["incident"]["state"], "resolved");
    let kinds: Vec<&str> = shown["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["fired", "paged", "delivered", "acked", "resolved"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    traffic.abort();
    // Its own metrics saw the pages.
    let metrics = http.get(format!("{alerting}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("alerting_pages_total{channel=\"email\",outcome=\"delivered\"} 2")),
        "{metrics}"
    );
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(e)) = map.get("expr") {
                out.push(e.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_writing_a_page_and_sending_it_delivers_it_once_after_restart() {
    let dir = TempDir::new("alerting-restart");
    let gauge = Gauge::start(50).await;
    let slack = SlackReceiver::start(vec![Reply::Ok]).await;
    std::fs::write(dir.0.join("rules.yaml"), GAUGE_RULES).unwrap();
    let port = free_port();
    let run = |failpoint: bool| {
        let mut cmd = Command::new(binary("alerting"));
        cmd.arg("serve")
            .env("ALERTING_LISTEN", format!("127.0.0.1:{port}"))
            .env("ALERTING_RULES", dir.0.join("rules.yaml"))
            .env("ALERTING_DATABASE_URL", format!("sqlite://{}", dir.0.join("incidents.db").display()))
            .env("ALERTING_SCRAPE", format!("app={}", gauge.url))
            .env("SLACK_WEBHOOK_URL", &slack.url)
            .env("ALERTING_CONSOLE_FILE", dir.0.join("console.jsonl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if failpoint {
            cmd.env("ALERTING_FAILPOINT", "after-outbox-write");
        }
        cmd.spawn().unwrap()
    };
    // First life: the alert fires, the page is committed, the process dies.
    let mut first = run(true);
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(86), "the failpoint exit");
    assert_eq!(slack.attempts(), 0, "nothing was sent before the crash");

    // Second life: the outbox is delivered, once, and the alert firing on
    // does not page again.
    let _second = Process(run(false));
    let delivered = slack.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 1);
    let http = reqwest::Client::new();
    wait_until("a few more evaluations", Duration::from_secs(30), async || {
        let m = match http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return false,
        };
        m.lines()
            .find(|l| l.starts_with("alerting_evaluations_total{outcome=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 5)
    })
    .await;
    assert_eq!(slack.delivered().len(), 1, "exactly one page across the crash");
    let incidents = get_json(&http, &format!("http://127.0.0.1:{port}/v1/incidents")).await;
    assert_eq!(incidents["incidents"].as_array().unwrap().len(), 1);
}
