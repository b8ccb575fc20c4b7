//! Every step ends one of four ways (ran and found a problem, ran and found
//! none, skipped with why, failed with why), and a run is healthy only when
//! every check it needed ran: against the real booking and alerting
//! services, as the embedded platform runs them (no Prometheus).

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::{Value, json};
use support::{Alerting, Booking, NO_ALERTING, http, runbook, shipped_rules};

/// Stand-ins for the two burn-rate rules: the fast one fires at once (the
/// scrape target is down, so `up` is 0), the slow one never does.
const BURNING: &str = r#"
evaluation_interval: 1s
rules:
  - id: error-budget-burn-fast
    kind: promql
    expr: up{job="booking"}
    summary: Stands in for the fast burn
    owner: incident-lead
    runbook: error-budget-burn
    critical: { below: 0.5, for: 0s, clear_above: 0.9 }
  - id: error-budget-burn-slow
    kind: promql
    expr: up{job="booking"}
    summary: Stands in for the slow burn
    owner: incident-lead
    runbook: error-budget-burn
    critical: { above: 0.5, for: 0s, clear_below: 0.1 }
"#;

/// Requests to `path` every 20 ms until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn on(booking: &Booking, path: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url) = (stop.clone(), format!("{}{path}", booking.url));
        let task = tokio::spawn(async move {
            let client = http();
            while !flag.load(Ordering::Relaxed) {
                let _ = client.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { stop, task: Some(task) }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn notes(report: &Value) -> Vec<String> {
    report["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn summary(step: &Value) -> &str {
    step["summary"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_check_no_source_can_answer_is_skipped_with_why_and_the_run_is_inconclusive() {
    let booking = Booking::start().await;
    // No Prometheus, and no alerting service answers.
    let args = ["run", "error-budget-burn", "--booking-url", &booking.url, "--set", "fallback_sample_secs=1"];
    let mut as_json = args.to_vec();
    as_json.push("--json");
    let outcome = runbook(&as_json, "").await;

    assert_eq!(outcome.code, 6, "inconclusive\n{}\n{}", outcome.stdout, outcome.stderr);
    let burn = outcome.step("burn-rate");
    assert_eq!(outcome.status("burn-rate"), "skipped: no_source", "{burn:#}");
    assert_eq!(burn["needed"], true);
    assert!(
        summary(&burn).contains("prometheus not configured")
            && summary(&burn).contains(&format!("the alerting service at {NO_ALERTING}/ is unreachable")),
        "says why: {burn:#}"
    );
    let routes = outcome.step("failing-routes");
    assert_eq!(routes["status"], "ok", "the routes still ran, from booking: {routes:#}");
    assert!(routes["output"]["source"].as_str().is_some_and(|s| s.starts_with("booking /metrics")), "{routes:#}");
    assert!(
        notes(&outcome.json()).iter().any(|n| n.starts_with("inconclusive: `burn-rate` needed")),
        "{:#}",
        outcome.json()
    );

    let text = runbook(&args, "").await;
    assert_eq!(text.code, 6);
    assert!(
        text.stdout.contains("result: inconclusive: no problem found, but a check it needed did not run (exit 6)"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("healthy"), "{}", text.stdout);
}

#[tokio::test]
async fn without_prometheus_the_alerting_service_answers_the_burn_rate_and_the_step_names_it() {
    let booking = Booking::start().await;
    let alerting = Alerting::start(BURNING).await;
    alerting.wait_for(&["error-budget-burn-fast"], "firing").await;
    alerting.wait_for(&["error-budget-burn-slow"], "inactive").await;

    let outcome = runbook(
        &[
            "run",
            "error-budget-burn",
            "--booking-url",
            &booking.url,
            "--alerting-url",
            &alerting.url,
            "--set",
            "fallback_sample_secs=1",
            "--json",
        ],
        "",
    )
    .await;

    assert_eq!(outcome.code, 1, "problem found\n{}\n{}", outcome.stdout, outcome.stderr);
    let burn = outcome.step("burn-rate");
    assert_eq!((burn["status"].as_str(), burn["target"].as_str()), (Some("problem"), Some("alerting")), "{burn:#}");
    assert_eq!(burn["output"]["source"], format!("alerting service {}/", alerting.url));
    assert_eq!(burn["output"]["state"], "firing");
    assert_eq!(
        burn["output"]["rules"],
        json!([{ "rule_id": "error-budget-burn-fast", "state": "firing" }, { "rule_id": "error-budget-burn-slow", "state": "inactive" }])
    );
    assert_eq!(
        (burn["output"]["alerts"][0]["rule_id"].as_str(), burn["output"]["alerts"][0]["severity"].as_str()),
        (Some("error-budget-burn-fast"), Some("critical")),
        "{burn:#}"
    );
    let text = summary(&burn);
    assert!(
        text.contains("error-budget-burn-fast firing (critical, value 0)")
            && text.contains("error-budget-burn-slow inactive")
            && text.contains("no Prometheus"),
        "{burn:#}"
    );
    let routes = outcome.step("failing-routes");
    assert!(
        routes["output"]["source"].as_str().is_some_and(|s| s.starts_with("booking /metrics, 1s sample")),
        "{routes:#}"
    );
}

#[tokio::test]
async fn healthy_only_when_every_needed_check_ran_on_the_embedded_platform() {
    let booking = Booking::start().await;
    let alerting = Alerting::watching(&booking, &shipped_rules()).await;
    let _traffic = Traffic::on(&booking, "/v1/concerts");
    alerting.wait_for(&["error-budget-burn-fast", "error-budget-burn-slow"], "inactive").await;

    let args = [
        "run",
        "error-budget-burn",
        "--booking-url",
        &booking.url,
        "--alerting-url",
        &alerting.url,
        "--set",
        "fallback_sample_secs=1",
    ];
    let mut as_json = args.to_vec();
    as_json.push("--json");
    let burn = runbook(&as_json, "").await;
    assert_eq!(burn.code, 0, "healthy\n{}\n{}", burn.stdout, burn.stderr);
    let report = burn.json();
    for step in report["steps"].as_array().unwrap().iter().filter(|s| s["phase"] == "diagnose") {
        assert_eq!(
            (step["status"].as_str(), step["needed"].as_bool()),
            (Some("ok"), Some(true)),
            "every check ran: {step:#}"
        );
    }
    assert!(
        burn.step("burn-rate")["output"]["source"].as_str().is_some_and(|s| s.starts_with("alerting service")),
        "{report:#}"
    );
    assert!(
        burn.step("failing-routes")["output"]["source"].as_str().is_some_and(|s| s.starts_with("booking /metrics")),
        "{report:#}"
    );
    assert_eq!(burn.status("clear-chaos"), "skipped: not_needed");
    assert!(summary(&burn.step("clear-chaos")).contains("`chaos` ran and found no problem"));
    let text = runbook(&args, "").await;
    assert!(
        text.stdout.contains("result: healthy: every check it needed ran and found no problem (exit 0)"),
        "{}",
        text.stdout
    );

    // PostgreSQL and Redis are not configured (booking runs on SQLite and
    // its in-process queue): their checks are skipped and not counted, and
    // the mitigations they decide are skipped for that reason, not "not needed".
    let errors = runbook(
        &["run", "high-error-rate", "--booking-url", &booking.url, "--set", "fallback_sample_secs=1", "--json"],
        "",
    )
    .await;
    assert_eq!(errors.code, 0, "healthy\n{}\n{}", errors.stdout, errors.stderr);
    for id in ["lock-waits", "long-queries", "redis-memory"] {
        assert_eq!(
            (errors.status(id), errors.step(id)["needed"].as_bool()),
            ("skipped: not_configured".to_string(), Some(false)),
            "{id}"
        );
    }
    let terminate = errors.step("terminate-long-queries");
    assert_eq!(errors.status("terminate-long-queries"), "skipped: diagnosis_incomplete");
    assert!(
        summary(&terminate).contains("`long-queries` was skipped") && !summary(&terminate).contains("not needed"),
        "{terminate:#}"
    );
    assert!(
        notes(&errors.json())
            .iter()
            .any(|n| n.starts_with("not checked, and not counted: `lock-waits`, `long-queries` and `redis-memory`")),
        "{:#}",
        errors.json()
    );
}

#[tokio::test]
async fn a_failed_check_says_why_and_the_mitigation_it_decides_is_skipped_not_not_needed() {
    let booking = Booking::start().await;
    let args = [
        "run",
        "error-budget-burn",
        "--booking-url",
        &booking.url,
        "--admin-key",
        "not-the-admin-key",
        "--set",
        "fallback_sample_secs=1",
    ];
    let mut as_json = args.to_vec();
    as_json.push("--json");
    let outcome = runbook(&as_json, "").await;

    assert_eq!(outcome.code, 3, "a step failed\n{}\n{}", outcome.stdout, outcome.stderr);
    let chaos = outcome.step("chaos");
    assert_eq!(chaos["status"], "failed");
    assert!(summary(&chaos).contains("booking refused the admin key"), "says why: {chaos:#}");
    let clear = outcome.step("clear-chaos");
    assert_eq!(outcome.status("clear-chaos"), "skipped: diagnosis_incomplete", "{clear:#}");
    assert_eq!(summary(&clear), "its diagnosis did not run (`chaos` failed), so whether it is needed is unknown");

    let text = runbook(&args, "").await;
    let line = text.stdout.lines().find(|l| l.contains("clear-chaos")).unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(
        line.trim_start().starts_with("skipped") && !line.contains("not needed") && !line.contains("found no problem"),
        "{line}"
    );
    assert!(text.stdout.contains("result: a step failed (exit 3)"), "{}", text.stdout);
}

#[tokio::test]
async fn the_chaos_switch_is_reported_first_and_never_blamed_on_the_database_or_the_queue() {
    let booking = Booking::start().await;
    let _traffic = Traffic::on(&booking, "/v1/concerts");
    booking.admin(Method::PUT, "/v1/admin/chaos", Some(json!({ "error_ratio": 1.0 }))).await;
    let args = ["run", "high-error-rate", "--booking-url", &booking.url, "--set", "fallback_sample_secs=1"];
    let mut as_json = args.to_vec();
    as_json.push("--json");

    let drill = runbook(&as_json, "").await;
    assert_eq!(drill.code, 1, "problem found\n{}\n{}", drill.stdout, drill.stderr);
    let report = drill.json();
    assert_eq!(
        (report["steps"][0]["id"].as_str(), report["steps"][0]["status"].as_str()),
        (Some("chaos"), Some("problem")),
        "chaos first: {report:#}"
    );
    let first = notes(&report).into_iter().next().unwrap_or_default();
    assert!(
        first.starts_with("chaos switch ON")
            && first.contains("not a database or queue fault")
            && first.contains("`clear-chaos` turns it off"),
        "{first}"
    );
    let ready = drill.step("readiness");
    assert_eq!(ready["status"], "ok", "a drill on the routes leaves booking ready: {ready:#}");
    assert_eq!(
        (ready["output"]["chaos"].as_bool(), ready["output"]["reasons"].clone()),
        (Some(true), json!([])),
        "{ready:#}"
    );
    assert_eq!(drill.step("failing-routes")["status"], "problem");
    assert_eq!(drill.step("db-pool")["status"], "ok");
    let text = runbook(&args, "").await;
    let after_diagnose: Vec<&str> = text.stdout.lines().skip_while(|l| *l != "diagnose").skip(1).collect();
    assert!(after_diagnose.first().is_some_and(|l| l.contains("PROBLEM") && l.contains("chaos")), "{}", text.stdout);
    assert!(
        text.stdout.lines().find(|l| l.starts_with("note:")).is_some_and(|l| l.contains("chaos switch ON")),
        "{}",
        text.stdout
    );

    // A drill of the load balancer: chaos names /readyz, which then says so.
    booking.admin(Method::PUT, "/v1/admin/chaos", Some(json!({ "error_ratio": 1.0, "routes": ["/readyz"] }))).await;
    let drained = runbook(&as_json, "").await;
    let ready = drained.step("readiness");
    assert_eq!(ready["status"], "problem", "{ready:#}");
    assert_eq!(ready["output"]["reasons"], json!(["chaos"]), "{ready:#}");
    assert_eq!(
        (ready["output"]["database"].as_str(), ready["output"]["queue"].as_str()),
        (Some("ok"), Some("ok")),
        "{ready:#}"
    );
    assert!(summary(&ready).contains("NOT ready: chaos") && !summary(&ready).contains("unavailable"), "{ready:#}");

    // Clearing it is the mitigation the diagnosis calls for; the others
    // are skipped because their PostgreSQL checks did not run.
    let mut apply = as_json.clone();
    apply.extend(["--apply", "--yes"]);
    let mitigated = runbook(&apply, "").await;
    assert_eq!(mitigated.code, 4, "mitigated\n{}\n{}", mitigated.stdout, mitigated.stderr);
    assert_eq!(mitigated.status("clear-chaos"), "applied");
    assert_eq!(mitigated.status("slow-admission"), "skipped: diagnosis_incomplete");
    assert_eq!(mitigated.status("chaos-after"), "ok");
    assert_eq!(mitigated.status("failing-routes-after"), "ok");
    assert_eq!(booking.admin(Method::GET, "/v1/admin/chaos", None).await["enabled"], false);
}
