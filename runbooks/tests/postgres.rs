//! db-pool-saturation against the real PostgreSQL: the diagnosis finds a
//! long query of booking's, and the mitigation terminates it and nothing
//! else; other applications' sessions are never terminated, and their SQL
//! is never printed or recorded.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;
use support::{Alerting, Deadline, FIRING_RULES, TestDb, runbook};

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
    sqlx::query("SELECT 1 FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_optional(&mut *observer)
        .await
        .expect("pg_stat_activity")
        .is_some()
}

async fn pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.expect("pid")
}

fn pids(step: &Value, list: &str) -> Vec<i64> {
    step["output"][list]
        .as_array()
        .expect("a list of sessions")
        .iter()
        .map(|q| q["pid"].as_i64().expect("pid"))
        .collect()
}

/// The session `pid` in a step's `list` of sessions.
fn listed(step: &Value, list: &str, pid: i32) -> Value {
    let sessions = step["output"][list].as_array().expect("a list of sessions");
    sessions.iter().find(|q| q["pid"] == pid).cloned().unwrap_or_else(|| panic!("pid {pid} is not in {list}: {step:#}"))
}

/// Waits until session `pid` has been running its query for `seconds`.
async fn active_for(observer: &mut sqlx::PgConnection, pid: i32, seconds: f64) {
    let wait = Deadline::new("a query to run past the threshold", Duration::from_secs(30));
    while !active_seconds(observer, pid).await.is_some_and(|s| s >= seconds) {
        wait.tick().await;
    }
}

#[tokio::test]
async fn a_long_query_is_found_and_only_it_is_terminated() {
    let db = TestDb::create().await;
    let mut observer = db.session("rb-observer").await;

    let mut long = db.session("booking").await;
    let long_pid = pid(&mut long).await;
    let long_query = tokio::spawn(async move { sqlx::query("SELECT pg_sleep(60)").execute(&mut long).await.map(drop) });
    let mut idle = db.session("rb-idle").await;
    let idle_pid = pid(&mut idle).await;

    // The threshold is 5 s; wait until the long query is clearly past it.
    active_for(&mut observer, long_pid, 6.0).await;

    let args = [
        "run",
        "db-pool-saturation",
        "--database-url",
        &db.url,
        "--skip",
        "booking",
        "--set",
        "min_seconds=5",
        "--json",
    ];
    let diagnosis = runbook(&args, "").await;
    assert_eq!(diagnosis.code, 1, "problem found\n{}\n{}", diagnosis.stdout, diagnosis.stderr);
    let found = diagnosis.step("long-queries");
    assert_eq!(found["status"], "problem");
    assert_eq!(pids(&found, "queries"), [i64::from(long_pid)], "only the long query is listed: {found:#}");
    assert_eq!(found["output"]["queries"][0]["application_name"], "booking");
    assert_eq!(diagnosis.status("terminate-long-queries"), "skipped: not_applied");
    assert!(alive(&mut observer, long_pid).await, "diagnosis must not terminate anything");

    // A shorter query, started just now, must survive the mitigation.
    let mut short = db.session("booking").await;
    let short_pid = pid(&mut short).await;
    let short_query =
        tokio::spawn(async move { sqlx::query("SELECT pg_sleep(30)").execute(&mut short).await.map(drop) });
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

    let outcome =
        tokio::time::timeout(Duration::from_secs(10), long_query).await.expect("the long query ended").expect("task");
    assert!(outcome.is_err(), "the long query was terminated, not completed");
    assert!(!alive(&mut observer, long_pid).await);
    assert!(alive(&mut observer, idle_pid).await, "the idle session survives");
    assert!(active_seconds(&mut observer, short_pid).await.is_some(), "the shorter query is still running");

    // Safe to re-run: nothing left above the threshold, nothing applied.
    let again = runbook(&apply, "").await;
    assert_eq!(again.code, 0, "healthy now\n{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.status("terminate-long-queries"), "skipped: not_needed");
    assert!(active_seconds(&mut observer, short_pid).await.is_some(), "a re-run terminates nothing");

    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(short_pid)
        .execute(&mut observer)
        .await
        .expect("cancel the short query");
    let _ = tokio::time::timeout(Duration::from_secs(10), short_query).await;
    drop(idle);
}

/// The backup's SQL: it must appear in nothing the runbook prints or records.
const BACKUP_SQL: &str = "pg_sleep(600)";
const BACKUP_QUERY: &str = "SELECT pg_sleep(600)";

#[tokio::test]
async fn only_bookings_sessions_are_terminated_and_other_sessions_sql_is_never_recorded() {
    let alerting = Alerting::start(FIRING_RULES).await;
    let incident = alerting.open_incident().await.to_string();
    let db = TestDb::create().await;
    let mut observer = db.session("rb-observer").await;

    let mut backup = db.session("backup").await;
    let backup_pid = pid(&mut backup).await;
    let backup_query = tokio::spawn(async move { sqlx::query(BACKUP_QUERY).execute(&mut backup).await.map(drop) });
    let mut booking = db.session("booking").await;
    let booking_pid = pid(&mut booking).await;
    let booking_query =
        tokio::spawn(async move { sqlx::query("SELECT pg_sleep(300)").execute(&mut booking).await.map(drop) });
    active_for(&mut observer, backup_pid, 6.0).await;
    active_for(&mut observer, booking_pid, 6.0).await;

    let args = ["run", "db-pool-saturation", "--database-url", &db.url, "--skip", "booking", "--set", "min_seconds=5"];
    let recorded = ["--incident", &incident, "--alerting-url", &alerting.url];
    // The dry run, as an operator reads it.
    let dry_run = runbook(&args, "").await;
    // Every application's long queries (the runbook looks at booking's only),
    // as JSON and on the incident.
    let mut everything: Vec<&str> = args.to_vec();
    everything.extend(["--set", "long-queries.application_name=null", "--json"]);
    everything.extend(recorded);
    let everything = runbook(&everything, "").await;
    let mut apply: Vec<&str> = args.to_vec();
    apply.extend(["--apply", "--yes", "--json"]);
    apply.extend(recorded);
    let applied = runbook(&apply, "").await;

    let outcome = tokio::time::timeout(Duration::from_secs(10), booking_query)
        .await
        .expect("booking's query ended")
        .expect("task");
    assert!(outcome.is_err(), "booking's query was terminated\n{}\n{}", applied.stdout, applied.stderr);
    assert!(alive(&mut observer, backup_pid).await, "the backup session survives\n{}", applied.stdout);
    assert!(active_seconds(&mut observer, backup_pid).await.is_some(), "the backup's query is still running");

    let timeline = alerting.get(&format!("/v1/incidents/{incident}")).await.to_string();
    for (what, text) in [
        ("dry run stdout", &dry_run.stdout),
        ("dry run stderr", &dry_run.stderr),
        ("every application's JSON", &everything.stdout),
        ("every application's stderr", &everything.stderr),
        ("apply JSON", &applied.stdout),
        ("apply stderr", &applied.stderr),
        ("incident timeline", &timeline),
    ] {
        assert!(!text.contains(BACKUP_SQL), "the backup's SQL is in the {what}:\n{text}");
    }
    assert!(
        timeline.contains("terminate-long-queries") && timeline.contains("long-queries"),
        "the runs were recorded: {timeline}"
    );

    assert_eq!(dry_run.code, 1, "problem found\n{}\n{}", dry_run.stdout, dry_run.stderr);
    assert!(
        dry_run
            .stdout
            .contains("would terminate queries of application booking active longer than 5s in the current database"),
        "the dry run says whose queries it would terminate:\n{}",
        dry_run.stdout
    );
    let all = everything.step("long-queries");
    let theirs = listed(&all, "queries", backup_pid);
    assert_eq!(
        json!([theirs["application_name"], theirs["state"], theirs["query"]]),
        json!(["backup", "active", null]),
        "{all:#}"
    );
    assert!(theirs["seconds"].as_f64().is_some_and(|s| s >= 5.0), "{theirs:#}");
    let ours = listed(&all, "queries", booking_pid);
    assert!(
        ours["query"].as_str().is_some_and(|q| q.contains("pg_sleep(300)")),
        "booking's own SQL is shown: {ours:#}"
    );

    assert_eq!(applied.code, 4, "mitigated\n{}\n{}", applied.stdout, applied.stderr);
    let terminated = applied.step("terminate-long-queries");
    assert_eq!(pids(&terminated, "terminated"), [i64::from(booking_pid)], "{terminated:#}");
    assert_eq!(terminated["output"]["other_applications"], 1, "{terminated:#}");

    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(backup_pid)
        .execute(&mut observer)
        .await
        .expect("cancel the backup's query");
    let _ = tokio::time::timeout(Duration::from_secs(10), backup_query).await;
}

#[tokio::test]
async fn a_blocker_of_another_application_is_shown_by_its_ids_and_never_its_sql() {
    let db = TestDb::create().await;
    let mut observer = db.session("rb-observer").await;
    sqlx::raw_sql("CREATE TABLE ledger (id int PRIMARY KEY, note text); INSERT INTO ledger VALUES (1, 'start')")
        .execute(&mut observer)
        .await
        .expect("table");

    // A DBA's psql holds a row lock, idle in its transaction; its last SQL
    // quotes a value that must not leave the server.
    let mut dba = db.session("psql").await;
    let dba_pid = pid(&mut dba).await;
    sqlx::raw_sql("BEGIN").execute(&mut dba).await.expect("begin");
    sqlx::raw_sql("UPDATE ledger SET note = 'dba-private-note' WHERE id = 1")
        .execute(&mut dba)
        .await
        .expect("lock the row");
    let mut booking = db.session("booking").await;
    let booking_pid = pid(&mut booking).await;
    let waiter = tokio::spawn(async move {
        sqlx::query("UPDATE ledger SET note = $1 WHERE id = 1").bind("ours").execute(&mut booking).await.map(drop)
    });
    let wait = Deadline::new("booking's update to wait on the DBA's lock", Duration::from_secs(30));
    loop {
        let blockers: Vec<i32> = sqlx::query_scalar("SELECT pg_blocking_pids($1)")
            .bind(booking_pid)
            .fetch_one(&mut observer)
            .await
            .expect("pg_blocking_pids");
        if blockers.contains(&dba_pid) {
            break;
        }
        wait.tick().await;
    }

    let args = ["run", "db-pool-saturation", "--database-url", &db.url, "--skip", "booking"];
    let text = runbook(&args, "").await;
    let mut as_json = args.to_vec();
    as_json.push("--json");
    let json = runbook(&as_json, "").await;
    for output in [&text.stdout, &text.stderr, &json.stdout, &json.stderr] {
        assert!(!output.contains("dba-private-note"), "the DBA's SQL was printed:\n{output}");
    }

    assert_eq!(json.code, 1, "problem found\n{}\n{}", json.stdout, json.stderr);
    let step = json.step("lock-waits");
    assert_eq!(step["status"], "problem");
    let blocker = listed(&step, "blockers", dba_pid);
    assert_eq!(
        json!([blocker["application_name"], blocker["state"], blocker["query"]]),
        json!(["psql", "idle in transaction", null]),
        "{step:#}"
    );
    let waiting = listed(&step, "waits", booking_pid);
    assert!(
        waiting["query"].as_str().is_some_and(|q| q.contains("UPDATE ledger SET note = $1")),
        "booking's own SQL is shown: {waiting:#}"
    );
    assert!(waiting["wait_event"].as_str().is_some_and(|w| w.starts_with("Lock:")), "{waiting:#}");
    assert!(
        text.stdout.contains(&format!("pid {dba_pid} psql idle in transaction")),
        "the blocker by its ids:\n{}",
        text.stdout
    );

    sqlx::raw_sql("ROLLBACK").execute(&mut dba).await.expect("release the lock");
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("booking's update finished")
        .expect("task")
        .expect("booking's update succeeded");
}
