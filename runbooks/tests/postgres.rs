//! db-pool-saturation against the real PostgreSQL: the diagnosis finds a
//! long query, and the mitigation terminates it and nothing else.

mod support;

use std::time::Duration;

use sqlx::Row;
use support::{Deadline, TestDb, runbook};

/// How long a session has been running its current query, if it is active.
async fn active_seconds(observer: &mut sqlx::PgConnection, pid: i32) -> Option<f64> {
    sqlx::query("SELECT extract(epoch FROM clock_timestamp() - query_start)::float8 AS s FROM pg_stat_activity WHERE pid = $1 AND state = 'active'")
        .bind(pid)
        .fetch_optional(&mut *observer)
        .await
        .expect("pg_stat_activity")
        .map(|row| row.get::<f64, _>("s"))
}

async fn alive(observer: &mut sqlx::PgConnection, pid: i32) -> bool {
    sqlx::query("SELECT 1 FROM pg_stat_activity WHERE pid = $1").bind(pid).fetch_optional(&mut *observer).await.expect("pg_stat_activity").is_some()
}

async fn pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.expect("pid")
}

fn pids(step: &serde_json::Value, list: &str) -> Vec<i64> {
    step["output"][list].as_array().expect("a list of sessions").iter().map(|q| q["pid"].as_i64().expect("pid")).collect()
}

#[tokio::test]
async fn a_long_query_is_found_and_only_it_is_terminated() {
    let db = TestDb::create().await;
    let mut observer = db.session("rb-observer").await;

    let mut long = db.session("rb-long").await;
    let long_pid = pid(&mut long).await;
    let long_query = tokio::spawn(async move { sqlx::query("SELECT pg_sleep(60)").execute(&mut long).await.map(drop) });
    let mut idle = db.session("rb-idle").await;
    let idle_pid = pid(&mut idle).await;

    // The threshold is 5 s; wait until the long query is clearly past it.
    let wait = Deadline::new("the long query to run for 6 s", Duration::from_secs(30));
    while !active_seconds(&mut observer, long_pid).await.is_some_and(|s| s >= 6.0) {
        wait.tick().await;
    }

    let args = ["run", "db-pool-saturation", "--database-url", &db.url, "--skip", "booking", "--set", "min_seconds=5", "--json"];
    let diagnosis = runbook(&args, "").await;
    assert_eq!(diagnosis.code, 1, "problem found\n{}\n{}", diagnosis.stdout, diagnosis.stderr);
    let found = diagnosis.step("long-queries");
    assert_eq!(found["status"], "problem");
    assert_eq!(pids(&found, "queries"), [i64::from(long_pid)], "only the long query is listed: {found:#}");
    assert_eq!(found["output"]["queries"][0]["application_name"], "rb-long");
    assert_eq!(diagnosis.step("terminate-long-queries")["status"], "listed");
    assert!(alive(&mut observer, long_pid).await, "diagnosis must not terminate anything");

    // A shorter query, started just now, must survive the mitigation.
    let mut short = db.session("rb-short").await;
    let short_pid = pid(&mut short).await;
    let short_query = tokio::spawn(async move { sqlx::query("SELECT pg_sleep(30)").execute(&mut short).await.map(drop) });
    let wait = Deadline::new("the short query to start", Duration::from_secs(10));
    while active_seconds(&mut observer, short_pid).await.is_none() {
        wait.tick().await;
    }

    let mut apply: Vec<&str> = args.to_vec();
    apply.extend(["--apply", "--yes"]);
    let applied = runbook(&apply, "").await;
    assert_eq!(applied.code, 4, "mitigated\n{}\n{}", applied.stdout, applied.stderr);
    let terminated = applied.step("terminate-long-queries");
    assert_eq!(terminated["status"], "applied");
    assert_eq!(pids(&terminated, "terminated"), [i64::from(long_pid)], "{terminated:#}");
    assert_eq!(applied.step("long-queries-after")["status"], "ok");

    let outcome = tokio::time::timeout(Duration::from_secs(10), long_query).await.expect("the long query ended").expect("task");
    assert!(outcome.is_err(), "the long query was terminated, not completed");
    assert!(!alive(&mut observer, long_pid).await);
    assert!(alive(&mut observer, idle_pid).await, "the idle session survives");
    assert!(active_seconds(&mut observer, short_pid).await.is_some(), "the shorter query is still running");

    // Safe to re-run: nothing left above the threshold, nothing applied.
    let again = runbook(&apply, "").await;
    assert_eq!(again.code, 0, "healthy now\n{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.step("terminate-long-queries")["status"], "not_needed");
    assert!(active_seconds(&mut observer, short_pid).await.is_some(), "a re-run terminates nothing");

    sqlx::query("SELECT pg_cancel_backend($1)").bind(short_pid).execute(&mut observer).await.expect("cancel the short query");
    let _ = tokio::time::timeout(Duration::from_secs(10), short_query).await;
    drop(idle);
}
