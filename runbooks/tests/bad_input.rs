//! Bad input gets a clear message and a nonzero exit, distinct from
//! "healthy", and never a partial mitigation.

mod support;

use support::{TempDir, free_port, runbook};

#[tokio::test]
async fn an_unknown_runbook_is_a_usage_error() {
    for args in [&["run", "no-such-alert"][..], &["show", "no-such-alert"]] {
        let outcome = runbook(args, "").await;
        assert_eq!(outcome.code, 2, "{args:?}: {}", outcome.stderr);
        assert!(outcome.stderr.contains("unknown runbook `no-such-alert`"), "{}", outcome.stderr);
    }
}

#[tokio::test]
async fn bad_flags_are_usage_errors() {
    for args in [
        &["run", "high-error-rate", "--frobnicate"][..],
        &["run", "high-error-rate", "--yes"],
        &["run", "high-error-rate", "--incident", "0"],
        &["run"],
        &["explode"],
        &["run", "high-error-rate", "--set", "no_such_arg=1"],
        &["run", "high-error-rate", "--set", "terminate-long-queries.min_seconds=0"],
        &["run", "high-error-rate", "--skip", "no-such-step"],
    ] {
        let outcome = runbook(args, "").await;
        assert_eq!(outcome.code, 2, "{args:?}: {}{}", outcome.stdout, outcome.stderr);
        assert!(!outcome.stderr.trim().is_empty(), "{args:?} says why");
    }
}

#[tokio::test]
async fn help_documents_the_exit_codes() {
    let outcome = runbook(&["run", "--help"], "").await;
    assert_eq!(outcome.code, 0);
    for line in [
        "0  healthy",
        "1  problem found",
        "2  usage",
        "3  step failed",
        "4  mitigated",
        "5  mitigated, problem persists",
        "6  inconclusive",
    ] {
        assert!(outcome.stdout.contains(line), "{line}:\n{}", outcome.stdout);
    }
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_run_and_applies_nothing() {
    let url = format!("redis://:hunter2secret@127.0.0.1:{}", free_port());
    let outcome = runbook(&["run", "redis-memory-high", "--redis-url", &url, "--apply", "--yes"], "").await;
    assert_eq!(outcome.code, 3, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(outcome.stdout.contains("target redis FAILED"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("nothing was run or applied"), "{}", outcome.stdout);
    assert!(!outcome.stdout.contains("APPLIED"), "{}", outcome.stdout);
    assert!(
        !outcome.stdout.contains("hunter2secret") && !outcome.stderr.contains("hunter2secret"),
        "passwords are never echoed"
    );
    assert!(outcome.stdout.contains("redis://:***@127.0.0.1"), "{}", outcome.stdout);

    // Diagnosis alone still runs what it can, and fails.
    let outcome = runbook(&["run", "redis-memory-high", "--redis-url", &url, "--json"], "").await;
    assert_eq!(outcome.code, 3);
    assert_eq!(outcome.step("memory")["status"], "failed");
    assert!(!outcome.stdout.contains("hunter2secret"));
}

#[tokio::test]
async fn no_configured_target_means_nothing_was_checked_not_healthy() {
    let outcome = runbook(&["run", "redis-memory-high"], "").await;
    assert_eq!(outcome.code, 6, "inconclusive\n{}", outcome.stdout);
    assert!(outcome.stdout.contains("set REDIS_URL"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("inconclusive: no check could run"), "{}", outcome.stdout);
    assert!(!outcome.stdout.contains("healthy"), "{}", outcome.stdout);
}

#[tokio::test]
async fn an_unreachable_alerting_service_stops_the_run_before_it_starts() {
    let alerting = format!("http://127.0.0.1:{}", free_port());
    let outcome =
        runbook(&["run", "telemetry-pipeline-down", "--incident", "7", "--alerting-url", &alerting], "").await;
    assert_eq!(outcome.code, 3, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(
        outcome.stderr.contains("cannot reach the alerting service") && outcome.stderr.contains("nothing was run"),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.stdout.contains("booking-up"));
}

#[tokio::test]
async fn an_invalid_runbook_file_is_reported_with_its_line() {
    let dir = TempDir::new("runbook-test");
    let text = "# Broken\n## What it means for users\nx\n## Likely causes\nx\n## Diagnose\n```runbook-step\nid: a\ntitle: a\naction: postgres.drop_everything\n```\n## Mitigate\nx\n## Verify\nx\n## Escalate\nx\n";
    std::fs::write(dir.path("broken.md"), text).unwrap();
    let dir_arg = dir.0.display().to_string();
    let listed = runbook(&["--dir", &dir_arg, "list"], "").await;
    assert_eq!(listed.code, 2);
    assert!(
        listed.stderr.contains("broken.md:7: step `a`: unknown action `postgres.drop_everything`"),
        "{}",
        listed.stderr
    );
    let run = runbook(&["--dir", &dir_arg, "run", "broken"], "").await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unknown action"), "{}", run.stderr);
}
