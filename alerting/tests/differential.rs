//! The export tells the truth: the same metrics, fed to our engine and to a
//! real Prometheus + Alertmanager loaded with `alerting export prometheus`,
//! page the same alerts. Our pages are counted at the Slack stand-in,
//! Alertmanager's at a webhook sink (its receivers rewritten to it, and its
//! group timers shortened so the test runs in seconds; the routes and the
//! inhibitions are the export's). Compared: which alerts were notified,
//! firing and resolved, and which were never notified (inhibited).

mod support {
    pub mod serve;
    pub mod slack_receiver;
}

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use support::{
    serve::{Launch, wait_until},
    slack_receiver::SlackReceiver,
};
use testkit::{Process, TempDir, free_port, workspace_binary};

/// Rules on three gauges: an outage, a symptom the outage inhibits, and two
/// warnings of one owner that fire together (one grouped page). `for` is
/// 2 s so the test is quick.
const RULES: &str = r#"
evaluation_interval: 1s
rules:
  - id: outage
    kind: promql
    expr: max(outage_level)
    summary: The service is down
    owner: backend
    runbook: outage
    critical: { above: 1, for: 2s, clear_below: 1, clear_for: 1s }
  - id: symptom
    kind: promql
    expr: max(symptom_level)
    summary: A symptom of the outage
    owner: backend
    runbook: symptom
    critical: { above: 1, for: 2s, clear_below: 1, clear_for: 1s }
  - id: minor
    kind: promql
    expr: max(minor_level)
    summary: Something small
    owner: backend
    runbook: minor
    warning: { above: 1, for: 2s, clear_below: 1, clear_for: 1s }
  - id: minor-two
    kind: promql
    expr: max(minor_level)
    summary: Something else small
    owner: backend
    runbook: minor
    warning: { above: 1, for: 2s, clear_below: 1, clear_for: 1s }
grouping:
  group_by: [owner]
  group_wait: 3s
  group_interval: 1m
inhibit_rules:
  - source_matchers: ['rule_id="outage"']
    target_matchers: ['rule_id="symptom"']
"#;

/// `/metrics` with three gauges the test sets.
struct Gauges {
    values: Arc<[AtomicU64; 3]>,
    url: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Gauges {
    async fn start() -> Self {
        let values: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let read = values.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let v: Vec<u64> = read.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                async move { format!("outage_level {}\nsymptom_level {}\nminor_level {}\n", v[0], v[1], v[2]) }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { values, url, _server: server }
    }

    fn set(&self, outage: u64, symptom: u64, minor: u64) {
        for (cell, v) in self.values.iter().zip([outage, symptom, minor]) {
            cell.store(v, Ordering::SeqCst);
        }
    }
}

/// Alertmanager's webhook notifications, as received.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Value>>>);

/// One notification: its state and the alerts it names, sorted.
type Notification = (String, Vec<String>);

impl Sink {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = self.0.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<Value>| {
                got.lock().unwrap().push(body.0);
                async { "ok" }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }

    /// Every notification: (firing|resolved, the alertnames in it).
    fn notifications(&self) -> Vec<Notification> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|n| {
                let alerts = n["alerts"].as_array().cloned().unwrap_or_default();
                // A notification of a group carries firing and resolved alerts; each state counts.
                let mut names: Vec<String> = alerts
                    .iter()
                    .filter(|a| a["status"] == n["status"])
                    .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
                    .collect();
                names.sort();
                (n["status"].as_str().unwrap_or_default().to_owned(), names)
            })
            .collect()
    }
}

/// Each page our engine sent to Slack: (firing|resolved, the alerts it names).
fn ours(slack: &SlackReceiver) -> Vec<Notification> {
    let word = regex::Regex::new(r"\b(Outage|Symptom|MinorTwo|Minor)\b").unwrap();
    slack
        .delivered()
        .iter()
        .map(|p| {
            let text = p.to_string();
            let state = if text.contains("[RESOLVED]") { "resolved" } else { "firing" };
            let mut names: Vec<String> = word.find_iter(&text).map(|m| m.as_str().to_owned()).collect();
            names.sort();
            names.dedup();
            (state.to_owned(), names)
        })
        .collect()
}

fn sorted(mut v: Vec<Notification>) -> Vec<Notification> {
    v.sort();
    v
}

fn names_in(v: &[Notification], state: &str) -> BTreeSet<String> {
    v.iter().filter(|(s, _)| s == state).flat_map(|(_, n)| n.iter().cloned()).collect()
}

/// The exported Alertmanager config with every receiver sending to `hook`
/// and `group_interval` shortened; routes, grouping and inhibitions as
/// exported.
fn alertmanager_yml(exported: &str, hook: &str) -> String {
    let mut config: serde_norway::Value = serde_norway::from_str(exported).unwrap();
    for receiver in config["receivers"].as_sequence_mut().unwrap() {
        let name = receiver["name"].clone();
        let mut webhook = serde_norway::Mapping::new();
        webhook.insert("name".into(), name);
        let hook_config: serde_norway::Value =
            serde_norway::from_str(&format!("[{{url: '{hook}', send_resolved: true}}]")).unwrap();
        webhook.insert("webhook_configs".into(), hook_config);
        *receiver = serde_norway::Value::Mapping(webhook);
    }
    // Only group_interval (how soon a changed group notifies again, so the
    // resolved notifications come in seconds); group_wait is the export's.
    fn shorten(route: &mut serde_norway::Value) {
        route["group_interval"] = "1s".into();
        if let Some(children) = route.get_mut("routes").and_then(|r| r.as_sequence_mut()) {
            children.iter_mut().for_each(shorten);
        }
    }
    shorten(&mut config["route"]);
    serde_norway::to_string(&config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_on_prometheus_and_alertmanager_pages_what_the_engine_pages() {
    let dir = TempDir::new("alerting-differential");
    std::fs::write(dir.path("rules.yaml"), RULES).unwrap();
    let gauges = Gauges::start().await;
    let slack = SlackReceiver::start(vec![]).await;
    let sink = Sink::default();
    let hook = sink.start().await;

    // Our engine, scraping the gauges.
    let ours_up = Launch::new(None)
        .env("ALERTING_RULES", &dir.path("rules.yaml").display().to_string())
        .env("ALERTING_SCRAPE", &format!("app={}", gauges.url))
        .env("SLACK_WEBHOOK_URL", &slack.url)
        .start()
        .await;

    // The export, on a real Prometheus and Alertmanager.
    let export = Command::new(workspace_binary("alerting"))
        .args(["export", "prometheus", "--rules"])
        .arg(dir.path("rules.yaml"))
        .arg("--out")
        .arg(dir.path("export"))
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let exported = std::fs::read_to_string(dir.path("export/alertmanager.yml")).unwrap();
    std::fs::write(dir.path("alertmanager.yml"), alertmanager_yml(&exported, &hook)).unwrap();
    let (am_port, prom_port) = (free_port(), free_port());
    let _alertmanager = Process(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.path("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("alertmanager.log")).unwrap())
            .spawn()
            .expect("Alertmanager is installed (scripts/test.sh installs prometheus-alertmanager)"),
    );
    let (host_port, path) = gauges.url.trim_start_matches("http://").split_once('/').unwrap();
    std::fs::write(
        dir.path("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n\
             scrape_configs:\n  - job_name: app\n    metrics_path: /{path}\n    static_configs: [{{targets: ['{host_port}']}}]\n",
            dir.path("export/alerts.rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = Process(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path("prom-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs it)"),
    );
    let http = reqwest::Client::new();
    wait_until("Prometheus scraping and Alertmanager up", Duration::from_secs(60), async || {
        let q = http.get(format!("http://127.0.0.1:{prom_port}/api/v1/query?query=up")).send().await;
        let scraped = match q {
            Ok(r) => r.json::<Value>().await.ok().is_some_and(|v| v["data"]["result"][0]["value"][1] == "1"),
            Err(_) => false,
        };
        let am =
            http.get(format!("http://127.0.0.1:{am_port}/-/ready")).send().await.is_ok_and(|r| r.status().is_success());
        scraped && am
    })
    .await;

    // The outage and its symptom together, and two warnings of one owner.
    gauges.set(5, 5, 5);
    let fired = |v: &[Notification]| {
        names_in(v, "firing").is_superset(&["Outage", "Minor", "MinorTwo"].map(String::from).into())
    };
    wait_until("both sides to page the outage and the warnings", Duration::from_secs(60), async || {
        fired(&ours(&slack)) && fired(&sink.notifications())
    })
    .await;
    gauges.set(0, 0, 0);
    let resolved = |v: &[Notification]| {
        names_in(v, "resolved").is_superset(&["Outage", "Minor", "MinorTwo"].map(String::from).into())
    };
    wait_until("both sides to resolve them", Duration::from_secs(60), async || {
        resolved(&ours(&slack)) && resolved(&sink.notifications())
    })
    .await;
    // Settle: let both sides evaluate a few more times.
    let evaluated = ours_up.metric("alerting_evaluations_total{outcome=\"ok\"}").await.unwrap_or(0.0);
    wait_until("five more evaluations", Duration::from_secs(20), async || {
        ours_up.metric("alerting_evaluations_total{outcome=\"ok\"}").await.unwrap_or(0.0) >= evaluated + 5.0
    })
    .await;

    let (mine, theirs) = (ours(&slack), sink.notifications());
    let am_log = std::fs::read_to_string(dir.path("alertmanager.log")).unwrap_or_default();
    // Firing: the outage alone, the two warnings in one notification; the
    // symptom, inhibited, in none. The same on both sides.
    let firing = |v: &[Notification]| sorted(v.iter().filter(|(s, _)| s == "firing").cloned().collect());
    let expected = vec![
        ("firing".to_owned(), vec!["Minor".to_owned(), "MinorTwo".to_owned()]),
        ("firing".to_owned(), vec!["Outage".to_owned()]),
    ];
    assert_eq!(firing(&mine), expected, "our pages: {mine:?}");
    assert_eq!(firing(&theirs), expected, "Alertmanager's notifications: {theirs:?}\n{am_log}");
    // Resolved: the same alerts. (How many notifications differs on
    // purpose: each of our incidents says it resolved on its own page,
    // where Alertmanager tells a group's resolutions together.)
    assert_eq!(names_in(&mine, "resolved"), names_in(&theirs, "resolved"));
    assert!(
        !names_in(&mine, "resolved").contains("Symptom") && !names_in(&theirs, "resolved").contains("Symptom"),
        "never paged, never resolved"
    );
}
