//! `--incident`: each step lands on the incident's timeline in the real
//! alerting service; an incident that does not exist stops the run first.

mod support;

use support::{Alerting, FIRING_RULES, runbook};

#[tokio::test]
async fn each_step_is_recorded_on_the_incident_timeline() {
    let alerting = Alerting::start(FIRING_RULES).await;
    let incident = alerting.open_incident().await;
    let id = incident.to_string();
    // Nothing listens on port 1: booking is "down", which the probes report.
    let outcome = runbook(
        &[
            "run",
            "telemetry-pipeline-down",
            "--incident",
            &id,
            "--alerting-url",
            &alerting.url,
            "--booking-url",
            "http://127.0.0.1:1",
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(outcome.code, 1, "problem found\n{}\n{}", outcome.stdout, outcome.stderr);
    assert_eq!(outcome.json()["incident"], incident);

    let shown = alerting.get(&format!("/v1/incidents/{incident}")).await;
    let steps: Vec<&serde_json::Value> =
        shown["timeline"].as_array().expect("a timeline").iter().filter(|e| e["kind"] == "runbook_step").collect();
    let recorded: Vec<&str> = steps.iter().filter_map(|e| e["data"]["step"].as_str()).collect();
    assert_eq!(recorded, ["booking-up", "scrape", "prometheus-targets", "up-series"], "{shown:#}");
    let up = steps.iter().find(|e| e["data"]["step"] == "booking-up").unwrap();
    assert_eq!(up["actor"], "runbook");
    assert_eq!(up["data"]["status"], "problem");
    assert_eq!(up["data"]["output"]["up"], false);
    assert!(up["text"].as_str().unwrap().contains("booking-up"), "{up:#}");
    // One run, one trace: every step's event names it.
    let traces: Vec<&str> = steps.iter().filter_map(|e| e["data"]["trace_id"].as_str()).collect();
    assert_eq!(traces.len(), steps.len(), "{shown:#}");
    assert!(traces.iter().all(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())), "{traces:?}");
    assert!(traces.iter().all(|t| *t == traces[0]), "{traces:?}");
    let summary = steps.last().unwrap();
    assert_eq!(summary["data"]["phase"], "summary");
    assert!(summary["text"].as_str().unwrap().contains("problem found"), "{summary:#}");
}

#[tokio::test]
async fn an_unknown_incident_fails_before_anything_runs() {
    let alerting = Alerting::start(FIRING_RULES).await;
    let outcome = runbook(
        &[
            "run",
            "telemetry-pipeline-down",
            "--incident",
            "999999",
            "--alerting-url",
            &alerting.url,
            "--booking-url",
            "http://127.0.0.1:1",
        ],
        "",
    )
    .await;
    assert_eq!(outcome.code, 2, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(outcome.stderr.contains("incident 999999 does not exist"), "{}", outcome.stderr);
    assert!(!outcome.stdout.contains("booking-up"), "no step ran: {}", outcome.stdout);
}
