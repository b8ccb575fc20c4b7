//! A PostgreSQL primary and a streaming replica of the test's own: the
//! catalogue is read on the replica while it keeps up, and on the primary
//! (the circuit breaker) while it lags past the bound or is down; seats and
//! money never go there.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use booking::{domain::Clock, settings::Secret, store::ReplicaHealth};
use sqlx::Connection;
use testkit::PgCluster;

use super::support::{self, Resources, TestApp, series_value};

/// Probes until `ok` holds (every probe is real: the primary's WAL
/// position, then the replica's replay position); panics after 20 s.
async fn probe_until(app: &TestApp, what: &str, ok: impl Fn(ReplicaHealth) -> bool) -> ReplicaHealth {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = booking::background::probe_replica(&app.state).await.expect("a replica is configured");
        if ok(health) {
            return health;
        }
        assert!(Instant::now() < deadline, "{what}: last probe {health:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn titles(app: &TestApp) -> Vec<String> {
    let (status, body) = app.call("GET", "/v1/concerts", &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["concerts"].as_array().unwrap().iter().map(|c| c["title"].as_str().unwrap().to_owned()).collect()
}

async fn create_titled(app: &TestApp, title: &str) -> i64 {
    let seats = [serde_json::json!({ "seat_no": "A1", "grade": "R", "price": 1 })];
    let body = serde_json::json!({ "title": title, "performances": [{ "starts_at": "2030-05-01T19:00:00Z", "seats": seats }] });
    let (status, created) =
        app.call("POST", "/v1/admin/concerts", &[("x-admin-key", "dev-admin-key")], Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["concert_id"].as_i64().unwrap()
}

async fn on_replica(replica: &PgCluster, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&replica.url("booking")).await.expect("the replica answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalogue_is_read_on_the_replica_until_it_lags_or_stops_and_on_the_primary_meanwhile() {
    let primary = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&primary.url("postgres")).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE booking").execute(&mut conn).await.unwrap();
    let resources = Arc::new(Resources::on_database(primary.url("booking")));
    // Migrated before the replica is taken, so the replica starts with the schema.
    drop(booking::store::Store::connect(&primary.url("booking"), 1).await.unwrap());
    let replica = {
        let primary = &primary;
        std::thread::scope(|s| s.spawn(|| primary.replica()).join().unwrap())
    };
    let read_url = replica.url("booking");
    let app = support::spawn_instance(resources, Clock::default(), move |s| booking::settings::Settings {
        database_read_url: Some(Secret::new(read_url)),
        database_read_max_lag: Duration::from_secs(2),
        ..s
    })
    .await;

    create_titled(&app, "first").await;
    probe_until(&app, "the replica catches up and is used", |h| h.up && h.in_use && h.lag_seconds == 0.0).await;
    assert_eq!(titles(&app).await, ["first"]);
    let metrics = app.metrics_text().await;
    assert_eq!(series_value(&metrics, "db_replica_in_use", ""), 1.0, "{metrics}");
    assert_eq!(series_value(&metrics, "db_replica_up", ""), 1.0);

    // Replay paused: the replica falls behind. Within the bound the list is
    // the replica's (a concert created since is not in it: the read really
    // went there); past it, the primary's.
    on_replica(&replica, "SELECT pg_wal_replay_pause()").await;
    let second = create_titled(&app, "second").await;
    let health = booking::background::probe_replica(&app.state).await.unwrap();
    assert!(health.in_use && health.lag_seconds > 0.0, "behind, within the bound: {health:?}");
    assert_eq!(titles(&app).await, ["first"], "read on the paused replica");
    let behind = probe_until(&app, "the breaker opens past the lag bound", |h| !h.in_use).await;
    assert!(behind.up && behind.lag_seconds >= 2.0, "{behind:?}");
    assert_eq!(titles(&app).await, ["first", "second"], "read on the primary");
    assert!(series_value(&app.metrics_text().await, "db_replica_lag_seconds", "") >= 2.0);

    // What decides a seat stays on the primary, however far the replica lags.
    let mut fan = app.create_user("fan").await;
    let (status, body) = app.enter_queue(&mut fan, second).await;
    assert_eq!(status, StatusCode::CREATED, "a concert the replica has not seen: {body}");

    // Replay resumed: the replica catches up and is used again.
    on_replica(&replica, "SELECT pg_wal_replay_resume()").await;
    let back =
        probe_until(&app, "the replica is used again once caught up", |h| h.in_use && h.lag_seconds == 0.0).await;
    assert_eq!(back.lag_seconds, 0.0);
    assert_eq!(titles(&app).await, ["first", "second"]);

    // The replica stops between probes: the next read fails there, trips the
    // breaker and is answered from the primary, not with an error.
    replica.stop();
    assert_eq!(titles(&app).await, ["first", "second"], "answered despite the replica being down");
    assert!(!app.state.store.probe_replica().await.unwrap().in_use);
    let down = probe_until(&app, "the probe sees the replica down", |h| !h.up).await;
    assert!(!down.in_use);
    assert_eq!(series_value(&app.metrics_text().await, "db_replica_up", ""), 0.0);
    replica.start_again();
    probe_until(&app, "the replica is used again after its restart", |h| h.up && h.in_use && h.lag_seconds == 0.0)
        .await;
    assert_eq!(titles(&app).await, ["first", "second"]);
}
