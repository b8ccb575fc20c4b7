//! queue-admission-stall against the real booking service: the runbook reads
//! and changes the admission rate through the admin API, asks before it
//! changes anything, and changes nothing when a target it needs is down.
//! Without Prometheus, its admissions check is the alerting service's.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Alerting, Booking, free_port, runbook, shipped_rules};

const ADMISSION: &str = "/v1/admin/queue/admission";

/// Booking with admission turned down to one user an hour: a stall.
async fn stalled_booking() -> Booking {
    let booking = Booking::start().await;
    let tuned = booking.admin(Method::PUT, ADMISSION, Some(json!({ "batch": 1, "interval_ms": 3_600_000 }))).await;
    assert_eq!(tuned["batch"], 1);
    booking
}

async fn admission(booking: &Booking) -> (Value, Value) {
    let view = booking.admin(Method::GET, ADMISSION, None).await;
    (view["batch"].clone(), view["interval_ms"].clone())
}

#[tokio::test]
async fn the_stall_runbook_reads_and_restores_the_admission_rate() {
    let booking = stalled_booking().await;
    // The embedded platform: the alerting service watches booking, no Prometheus.
    let alerting = Alerting::watching(&booking, &shipped_rules()).await;
    let args =
        ["run", "queue-admission-stall", "--booking-url", &booking.url, "--alerting-url", &alerting.url, "--json"];

    let diagnosis = runbook(&args, "").await;
    assert_eq!(diagnosis.code, 1, "problem found\n{}\n{}", diagnosis.stdout, diagnosis.stderr);
    let rate = diagnosis.step("admission-rate");
    assert_eq!(rate["status"], "problem");
    assert_eq!((rate["output"]["batch"].clone(), rate["output"]["interval_ms"].clone()), (json!(1), json!(3_600_000)));
    assert_eq!(diagnosis.step("chaos")["status"], "ok");
    assert_eq!(diagnosis.step("readiness")["status"], "ok");
    assert_eq!(diagnosis.step("redis-memory")["status"], "skipped", "no REDIS_URL");
    assert_eq!(diagnosis.status("restore-admission"), "skipped: not_applied");
    assert_eq!(admission(&booking).await, (json!(1), json!(3_600_000)), "diagnosis changes nothing");

    let mut apply = args.to_vec();
    apply.push("--apply");
    let declined = runbook(&apply, "n\n").await;
    assert_eq!(declined.code, 1, "declined: still a problem\n{}\n{}", declined.stdout, declined.stderr);
    assert_eq!(declined.status("restore-admission"), "skipped: declined");
    assert!(declined.stderr.contains("proceed? [y/N]"), "{}", declined.stderr);
    assert_eq!(admission(&booking).await, (json!(1), json!(3_600_000)), "a declined step changes nothing");

    let accepted = runbook(&apply, "y\n").await;
    assert_eq!(accepted.code, 4, "mitigated\n{}\n{}", accepted.stdout, accepted.stderr);
    let restored = accepted.step("restore-admission");
    assert_eq!(restored["status"], "applied");
    assert_eq!(restored["output"]["before"]["batch"], 1);
    assert_eq!(restored["output"]["after"]["batch"], 500);
    assert_eq!(accepted.step("admission-rate-after")["status"], "ok");
    assert_eq!(admission(&booking).await, (json!(500), json!(15_000)));

    // Safe to re-run: healthy, nothing applied; healthy because every
    // check ran, the admissions one through the alerting service.
    alerting.wait_for(&["queue-admission-stall"], "inactive").await;
    let mut yes = apply.clone();
    yes.push("--yes");
    let again = runbook(&yes, "").await;
    assert_eq!(again.code, 0, "healthy now\n{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.status("restore-admission"), "skipped: not_needed");
    let admissions = again.step("admissions");
    assert_eq!(
        (admissions["status"].as_str(), admissions["needed"].as_bool()),
        (Some("ok"), Some(true)),
        "{admissions:#}"
    );
    assert!(
        admissions["output"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("alerting service {}", alerting.url))),
        "{admissions:#}"
    );
    assert_eq!(again.status("redis-memory"), "skipped: not_configured", "no REDIS_URL: not counted");
    assert_eq!(again.step("redis-memory")["needed"], false);
}

#[tokio::test]
async fn an_unreachable_target_stops_apply_before_anything_changes() {
    let booking = stalled_booking().await;
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let outcome = runbook(
        &[
            "run",
            "queue-admission-stall",
            "--booking-url",
            &booking.url,
            "--redis-url",
            &dead_redis,
            "--apply",
            "--yes",
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(outcome.code, 3, "step failed\n{}\n{}", outcome.stdout, outcome.stderr);
    let report = outcome.json();
    assert_eq!(report["steps"], json!([]), "nothing ran");
    let redis = report["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "redis")
        .cloned()
        .expect("redis was checked");
    assert_eq!(redis["ok"], false);
    assert!(redis["error"].as_str().unwrap().contains("unreachable"), "{redis:#}");
    assert!(report["notes"][0].as_str().unwrap().contains("nothing was run or applied"));
    assert_eq!(admission(&booking).await, (json!(1), json!(3_600_000)), "no partial mitigation");
}

#[tokio::test]
async fn a_wrong_admin_key_is_refused_before_any_step_runs() {
    let booking = stalled_booking().await;
    let outcome = runbook(
        &[
            "run",
            "queue-admission-stall",
            "--booking-url",
            &booking.url,
            "--admin-key",
            "wrong-key-123",
            "--apply",
            "--yes",
        ],
        "",
    )
    .await;
    assert_eq!(outcome.code, 3, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(outcome.stdout.contains("booking refused the admin key"), "{}", outcome.stdout);
    assert!(
        !outcome.stdout.contains("wrong-key-123") && !outcome.stderr.contains("wrong-key-123"),
        "the key is never echoed"
    );
    assert_eq!(admission(&booking).await, (json!(1), json!(3_600_000)));
}
