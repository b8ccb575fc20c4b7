//! The Prometheus actions against a real Prometheus scraping the real
//! booking service: failing routes by instant query, and the scrape target.

mod support;

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::json;
use support::{Booking, TempDir, eventually, free_port, http, runbook};

/// Prometheus on a random port, scraping `target` every second.
struct Prometheus {
    url: String,
    _process: support::Process,
    _dir: TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Self {
        let dir = TempDir::new("runbook-test");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: booking\n    static_configs: [{{ targets: [\"{target}\"] }}]\n"
        );
        std::fs::write(dir.path("prometheus.yml"), config).unwrap();
        let port = free_port();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (apt-get install prometheus)");
        let url = format!("http://127.0.0.1:{port}");
        let client = http();
        eventually("Prometheus to be ready", Duration::from_secs(60), || {
            let request = client.get(format!("{url}/-/ready")).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(drop) }
        })
        .await;
        Self { url, _process: support::Process(process), _dir: dir }
    }

    async fn query(&self, query: &str) -> Option<f64> {
        let response = http().get(format!("{}/api/v1/query", self.url)).query(&[("query", query)]).send().await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test]
async fn failing_routes_and_targets_come_from_prometheus_queries() {
    let booking = Booking::start().await;
    booking
        .admin(Method::PUT, "/v1/admin/chaos", Some(json!({ "error_ratio": 1.0, "routes": ["/v1/concerts"] })))
        .await;
    let target = booking.url.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&target).await;

    // Traffic on the failing route until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), format!("{}/v1/concerts", booking.url));
        tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                let _ = client.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    eventually("Prometheus to see the 5xx rate", Duration::from_secs(60), || {
        prometheus.query(r#"sum(rate(http_server_requests_total{route="/v1/concerts",status=~"5.."}[5m]))"#)
    })
    .await;

    let outcome = runbook(
        &["run", "high-error-rate", "--prometheus-url", &prometheus.url, "--booking-url", &booking.url, "--json"],
        "",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    assert_eq!(outcome.code, 1, "problem found\n{}\n{}", outcome.stdout, outcome.stderr);
    let failing = outcome.step("failing-routes");
    assert_eq!(failing["status"], "problem");
    assert!(failing["output"]["source"].as_str().unwrap().starts_with("prometheus"), "{failing:#}");
    assert_eq!(failing["output"]["routes"][0]["route"], "/v1/concerts");
    assert_eq!(failing["output"]["routes"][0]["error_ratio"], 1, "{failing:#}");
    assert_eq!(outcome.step("chaos")["status"], "problem");

    let pipeline = runbook(
        &[
            "run",
            "telemetry-pipeline-down",
            "--prometheus-url",
            &prometheus.url,
            "--booking-url",
            &booking.url,
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(pipeline.code, 0, "healthy\n{}\n{}", pipeline.stdout, pipeline.stderr);
    let targets = pipeline.step("prometheus-targets");
    assert_eq!(
        (targets["output"]["count"].as_i64(), targets["output"]["down"].as_i64()),
        (Some(1), Some(0)),
        "{targets:#}"
    );
    assert_eq!(pipeline.step("up-series")["output"]["min"], 1);
}
