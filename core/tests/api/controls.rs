//! The operator controls runbooks and alerting drills call: the chaos
//! switch, admission tuning, cache flushing, the queue-entry rate limit,
//! and the gauges the alert rules read.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{
    sample,
    support::{self, Backend, TestApp, bearer, spawn_app},
};

const ADMIN: (&str, &str) = ("x-admin-key", "dev-admin-key");

async fn metrics(app: &TestApp) -> String {
    let (status, body) = app.call("GET", "/metrics", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    body.as_str().unwrap().to_owned()
}

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    app.call(method, path, &[ADMIN], body).await
}

/// Polls `done` until it holds, for at most ten seconds.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn the_chaos_switch_fails_only_the_chosen_route_and_counts_every_fault(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(1, 1).await;
    let performances = format!("/v1/concerts/{}/performances", concert.id);
    let (status, off) = admin(&app, "GET", "/v1/admin/chaos", None).await;
    assert_eq!(
        (status, off),
        (StatusCode::OK, json!({ "enabled": false, "routes": [], "error_ratio": 0.0, "latency_ms": 0 }))
    );

    let before = metrics(&app).await;
    let (status, on) =
        admin(&app, "PUT", "/v1/admin/chaos", Some(json!({ "routes": ["/v1/concerts"], "error_ratio": 1.0 }))).await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert_eq!(on, json!({ "enabled": true, "routes": ["/v1/concerts"], "error_ratio": 1.0, "latency_ms": 0 }));
    for _ in 0..3 {
        let (status, body) = app.call("GET", "/v1/concerts", &[], None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("CHAOS_INJECTED")));
    }
    for _ in 0..2 {
        let (status, body) = app.call("GET", &performances, &[], None).await;
        assert_eq!(status, StatusCode::OK, "another route is left alone: {body}");
    }
    assert_eq!(app.call("GET", "/healthz", &[], None).await.0, StatusCode::OK);
    let after = metrics(&app).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(r#"http_server_requests_total{method="GET",route="/v1/concerts",status="503"}"#), 3.0);
    assert_eq!(delta(r#"http_server_requests_total{method="GET",route="/v1/concerts",status="200"}"#), 0.0);
    assert_eq!(delta(r#"http_server_request_duration_seconds_count{method="GET",route="/v1/concerts"}"#), 3.0);
    assert_eq!(
        delta(
            r#"http_server_requests_total{method="GET",route="/v1/concerts/{concert_id}/performances",status="200"}"#
        ),
        2.0
    );
    assert_eq!(delta(r#"booking_chaos_injected_total{kind="error"}"#), 3.0);
    assert_eq!(delta(r#"booking_chaos_injected_total{kind="latency"}"#), 0.0);

    // A new plan replaces the old one: only latency, on the other route.
    let (status, _) = admin(
        &app,
        "PUT",
        "/v1/admin/chaos",
        Some(json!({ "routes": ["/v1/concerts/{concert_id}/performances"], "latency_ms": 100 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..2 {
        let started = Instant::now();
        let (status, _) = app.call("GET", &performances, &[], None).await;
        assert_eq!(status, StatusCode::OK, "latency alone fails nothing");
        assert!(started.elapsed() >= Duration::from_millis(100), "the latency was injected");
    }
    assert_eq!(app.call("GET", "/v1/concerts", &[], None).await.0, StatusCode::OK);
    let later = metrics(&app).await;
    assert_eq!(
        sample(&later, r#"booking_chaos_injected_total{kind="latency"}"#)
            - sample(&after, r#"booking_chaos_injected_total{kind="latency"}"#),
        2.0
    );
    assert_eq!(
        sample(&later, r#"booking_chaos_injected_total{kind="error"}"#),
        sample(&after, r#"booking_chaos_injected_total{kind="error"}"#)
    );

    // No routes: everything but scrapes, liveness, readiness and the admin API.
    let (status, _) = admin(&app, "PUT", "/v1/admin/chaos", Some(json!({ "error_ratio": 1.0 }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.call("GET", &performances, &[], None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.call("GET", "/readyz", &[], None).await.0, StatusCode::OK);
    assert_eq!(app.call("GET", "/healthz", &[], None).await.0, StatusCode::OK);
    assert_eq!(app.call("GET", "/metrics", &[], None).await.0, StatusCode::OK);
    assert_eq!(admin(&app, "GET", "/v1/admin/queue/admission", None).await.0, StatusCode::OK);

    // DELETE restores service, and the counters stop.
    let (status, off) = admin(&app, "DELETE", "/v1/admin/chaos", None).await;
    assert_eq!((status, off["enabled"].as_bool()), (StatusCode::OK, Some(false)));
    let stopped = metrics(&app).await;
    assert_eq!(app.call("GET", "/v1/concerts", &[], None).await.0, StatusCode::OK);
    assert_eq!(app.call("GET", &performances, &[], None).await.0, StatusCode::OK);
    let end = metrics(&app).await;
    for kind in ["error", "latency"] {
        let series = format!(r#"booking_chaos_injected_total{{kind="{kind}"}}"#);
        assert_eq!(sample(&end, &series), sample(&stopped, &series), "{kind}");
    }
    assert_eq!(admin(&app, "GET", "/v1/admin/chaos", None).await.1["enabled"], false);
}

/// `/readyz` says why it is not ready, from a fixed set; a drill leaves it
/// ready (and says chaos is on) unless the drill names `/readyz`.
async fn readyz_says_why_it_is_not_ready_and_chaos_fails_it_only_when_named(backend: Backend) {
    let app = spawn_app(backend).await;
    let ready = json!({ "status": "ready", "reasons": [], "database": "ok", "queue": "ok", "chaos": false });
    assert_eq!(app.call("GET", "/readyz", &[], None).await, (StatusCode::OK, ready));

    let (status, _) = admin(&app, "PUT", "/v1/admin/chaos", Some(json!({ "error_ratio": 1.0 }))).await;
    assert_eq!(status, StatusCode::OK);
    let drill = json!({ "status": "ready", "reasons": [], "database": "ok", "queue": "ok", "chaos": true });
    assert_eq!(
        app.call("GET", "/readyz", &[], None).await,
        (StatusCode::OK, drill),
        "a drill of the routes is not an outage"
    );

    // Named, /readyz is drilled (a load balancer's drill): chaos is the
    // reason, and the database and queue are said to be fine.
    let before = metrics(&app).await;
    let (status, _) =
        admin(&app, "PUT", "/v1/admin/chaos", Some(json!({ "routes": ["/readyz"], "error_ratio": 1.0 }))).await;
    assert_eq!(status, StatusCode::OK);
    let drained =
        json!({ "status": "not_ready", "reasons": ["chaos"], "database": "ok", "queue": "ok", "chaos": true });
    assert_eq!(app.call("GET", "/readyz", &[], None).await, (StatusCode::SERVICE_UNAVAILABLE, drained));
    assert_eq!(app.call("GET", "/v1/concerts", &[], None).await.0, StatusCode::OK, "only /readyz is drilled");
    let after = metrics(&app).await;
    let injected = r#"booking_chaos_injected_total{kind="error"}"#;
    assert_eq!(sample(&after, injected) - sample(&before, injected), 1.0, "counted like any injected fault");
    assert_eq!(sample(&after, r#"http_server_requests_total{method="GET",route="/readyz",status="503"}"#), 1.0);

    // The database gone (its pool closed under the service).
    assert_eq!(admin(&app, "DELETE", "/v1/admin/chaos", None).await.0, StatusCode::OK);
    app.state.store.close().await;
    let no_database = json!({ "status": "not_ready", "reasons": ["database"], "database": "unavailable", "queue": "ok", "chaos": false });
    assert_eq!(app.call("GET", "/readyz", &[], None).await, (StatusCode::SERVICE_UNAVAILABLE, no_database));
}

// Not in `on_every_backend!` (main.rs), which another change is editing;
// the same two runs, by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_says_why_on_sqlite_and_the_memory_queue() {
    readyz_says_why_it_is_not_ready_and_chaos_fails_it_only_when_named(Backend::SqliteMemory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_says_why_on_postgres_and_redis() {
    readyz_says_why_it_is_not_ready_and_chaos_fails_it_only_when_named(Backend::PostgresRedis).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_names_the_queue_when_redis_is_down() {
    let redis = super::OwnRedis::start(support::free_port());
    let url = redis.url();
    let app = support::spawn_app_with(Backend::PostgresRedis, |s| booking::settings::Settings {
        redis_url: Some(booking::settings::Secret::new(url.clone())),
        ..s
    })
    .await;
    assert_eq!(app.call("GET", "/readyz", &[], None).await.0, StatusCode::OK);
    redis.stop();
    let (status, body) = app.call("GET", "/readyz", &[], None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (&body["status"], &body["reasons"], &body["database"], &body["queue"]),
        (&json!("not_ready"), &json!(["queue"]), &json!("ok"), &json!("unavailable")),
        "{body}"
    );
}

pub(crate) async fn invalid_operator_requests_are_clean_json_4xx_and_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let wrong = [("x-admin-key", "not-the-key")];
    let admin = [ADMIN];
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"error_ratio": 1.5}"#), 400, "INVALID_CHAOS"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"error_ratio": -0.5}"#), 400, "INVALID_CHAOS"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"latency_ms": -1}"#), 400, "INVALID_CHAOS"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"latency_ms": 60001}"#), 400, "INVALID_CHAOS"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{}"#), 400, "INVALID_CHAOS"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"routes": ["/metrics"], "error_ratio": 1}"#), 400, "INVALID_CHAOS"),
        (
            "PUT",
            "/v1/admin/chaos",
            &admin,
            Some(r#"{"routes": ["/v1/admin/chaos"], "error_ratio": 1}"#),
            400,
            "INVALID_CHAOS",
        ),
        (
            "PUT",
            "/v1/admin/chaos",
            &admin,
            Some(r#"{"routes": ["/v1/concerts/1/performances"], "error_ratio": 1}"#),
            400,
            "INVALID_CHAOS",
        ),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"error_ratio": 1, "kind": "error"}"#), 400, "INVALID_BODY"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"error_ratio": "half"}"#), 400, "INVALID_BODY"),
        ("PUT", "/v1/admin/chaos", &admin, Some(r#"{"error_ratio": "#), 400, "MALFORMED_JSON"),
        ("PUT", "/v1/admin/chaos", &wrong, Some(r#"{"error_ratio": 1}"#), 401, "INVALID_ADMIN_KEY"),
        ("PUT", "/v1/admin/chaos", &[], Some(r#"{"error_ratio": 1}"#), 401, "INVALID_ADMIN_KEY"),
        ("GET", "/v1/admin/chaos", &wrong, None, 401, "INVALID_ADMIN_KEY"),
        ("DELETE", "/v1/admin/chaos", &wrong, None, 401, "INVALID_ADMIN_KEY"),
        ("POST", "/v1/admin/chaos", &admin, None, 405, "METHOD_NOT_ALLOWED"),
        ("PUT", "/v1/admin/queue/admission", &admin, Some(r#"{"batch": 0}"#), 400, "INVALID_ADMISSION"),
        ("PUT", "/v1/admin/queue/admission", &admin, Some(r#"{"interval_ms": 50}"#), 400, "INVALID_ADMISSION"),
        ("PUT", "/v1/admin/queue/admission", &admin, Some(r#"{}"#), 400, "INVALID_ADMISSION"),
        ("PUT", "/v1/admin/queue/admission", &admin, Some(r#"{"active_window_secs": 5}"#), 400, "INVALID_BODY"),
        ("PUT", "/v1/admin/queue/admission", &wrong, Some(r#"{"batch": 5}"#), 401, "INVALID_ADMIN_KEY"),
        ("GET", "/v1/admin/queue/admission", &[], None, 401, "INVALID_ADMIN_KEY"),
        ("POST", "/v1/admin/caches/flush", &wrong, None, 401, "INVALID_ADMIN_KEY"),
        ("PUT", "/v1/admin/rate-limit", &admin, Some(r#"{"enabled": true}"#), 400, "INVALID_RATE_LIMIT"),
        (
            "PUT",
            "/v1/admin/rate-limit",
            &admin,
            Some(r#"{"enabled": true, "per_second": 0}"#),
            400,
            "INVALID_RATE_LIMIT",
        ),
        ("PUT", "/v1/admin/rate-limit", &admin, Some(r#"{"per_second": 5}"#), 400, "INVALID_BODY"),
        ("PUT", "/v1/admin/rate-limit", &wrong, Some(r#"{"enabled": false}"#), 401, "INVALID_ADMIN_KEY"),
        ("GET", "/v1/admin/rate-limit", &[], None, 401, "INVALID_ADMIN_KEY"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (got, value) = match body {
            Some(b) => app.call_raw(method, path, headers, b).await,
            None => app.call(method, path, headers, None).await,
        };
        assert_eq!(
            (got.as_u16(), value["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body:?} -> {value}"
        );
        assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, value) = support::send(app.router.clone(), "PUT", "/v1/admin/chaos", &admin, None).await;
    assert_eq!((status.as_u16(), value["error"]["code"].as_str()), (415, Some("UNSUPPORTED_MEDIA_TYPE")));

    // Nothing was turned on or changed.
    assert_eq!(app.call("GET", "/v1/admin/chaos", &admin, None).await.1["enabled"], false);
    assert_eq!(app.call("GET", "/v1/concerts", &[], None).await.0, StatusCode::OK);
    let (_, admission) = app.call("GET", "/v1/admin/queue/admission", &admin, None).await;
    assert_eq!(admission["batch"], app.state.settings.admission_batch);
    assert_eq!(
        app.call("GET", "/v1/admin/rate-limit", &admin, None).await.1,
        json!({ "enabled": false, "per_second": null })
    );
}

pub(crate) async fn admission_retuned_at_run_time_is_used_by_the_running_admission_loop(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(1, 1).await;
    let (status, policy) = admin(&app, "GET", "/v1/admin/queue/admission", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policy, json!({ "batch": 10_000, "interval_ms": 15_000, "active_window_secs": 600 }));

    // Time stands still half a second into a 15 s tick, which is also the
    // start of a 1 s tick: only a moved clock makes a new tick, under
    // either interval.
    let t0 = (app.clock.now_ms() / 15_000 + 1) * 15_000 + 500;
    // The first user joins in the tick before (a new line counts as
    // admitted at the tick it starts in), so the loop's tick at t0 admits them.
    app.clock.freeze_at(t0 - 15_000);
    let mut first = app.create_user("first").await;
    app.enter_queue(&mut first, concert.id).await;
    app.clock.freeze_at(t0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admission = tokio::spawn(booking::background::admission(app.state.clone(), stopped));
    let (a, q) = (&app, first.queue_token.clone().unwrap());
    let q = &q;
    eventually("the running loop to admit the first user", || async move {
        a.call("GET", "/v1/queue/tokens/current", &[("queue-token", q)], None).await.1["status"] == "ACTIVE"
    })
    .await;

    let (status, tuned) =
        admin(&app, "PUT", "/v1/admin/queue/admission", Some(json!({ "batch": 2, "interval_ms": 1_000 }))).await;
    assert_eq!(status, StatusCode::OK, "{tuned}");
    assert_eq!(tuned, json!({ "batch": 2, "interval_ms": 1_000, "active_window_secs": 600 }));
    assert_eq!(admin(&app, "GET", "/v1/admin/queue/admission", None).await.1, tuned);
    let (_, kept) = admin(&app, "PUT", "/v1/admin/queue/admission", Some(json!({ "batch": 2 }))).await;
    assert_eq!(kept, tuned, "a field left out keeps its value");

    let mut last = Value::Null;
    for i in 0..5 {
        let mut u = app.create_user(&format!("fan{i}")).await;
        let (status, place) = app.enter_queue(&mut u, concert.id).await;
        assert_eq!(status, StatusCode::CREATED, "{place}");
        last = place;
    }
    assert_eq!(last["position"], 5);
    // 3 ticks of 2 at 1 s, the first 0.5 s away (not 15 s under the old policy).
    assert_eq!(last["estimated_wait_seconds"], 3);

    let depth = || async move { a.state.queue.depth(a.clock.now_ms()).await.unwrap() };
    assert_eq!((depth().await.waiting, depth().await.active), (5, 1), "no tick without time moving");
    for (waiting, active) in [(3, 3), (1, 5), (0, 6)] {
        app.clock.advance(Duration::from_millis(1_000));
        eventually("the next tick", || async move { depth().await.waiting <= waiting }).await;
        let d = depth().await;
        assert_eq!((d.waiting, d.active), (waiting, active), "one batch of 2 per 1 s tick");
    }

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), admission).await.expect("the loop stops").unwrap();
}

pub(crate) async fn flushing_the_caches_drops_seat_maps_and_known_concerts(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(2, 1).await;
    let users = app.active_users(1, concert.id).await;
    let user = &users[0];
    let q = user.queue_token.clone().unwrap();
    let seats = format!("/v1/performances/{}/seats", concert.performance_id);
    let (status, map) = app.call("GET", &seats, &[("authorization", &bearer(user)), ("queue-token", &q)], None).await;
    assert_eq!((status, map["seats"][0]["status"].as_str()), (StatusCode::OK, Some("AVAILABLE")));
    let list = format!("/v1/concerts/{}/performances", concert.id);
    let available = |body: &Value| body["performances"][0]["available_seats"].as_i64();
    assert_eq!(available(&app.call("GET", &list, &[], None).await.1), Some(2));

    // A hold this instance did not see (as if by another replica).
    let now = app.clock.now_ms();
    let request = booking::store::HoldRequest {
        user_id: user.id,
        concert_id: concert.id,
        seat_id: concert.seat_ids[0],
        now,
        expires_at: now + 60_000,
        max_holds: 4,
    };
    app.state.store.hold_seat(&request).await.unwrap();
    assert_eq!(
        available(&app.call("GET", &list, &[], None).await.1),
        Some(2),
        "another instance's hold shows only after the TTL, or a flush"
    );

    let (status, flushed) = admin(&app, "POST", "/v1/admin/caches/flush", None).await;
    assert_eq!(
        (status, flushed),
        (StatusCode::OK, json!({ "flushed": { "seat_maps": 1, "known_concerts": 1, "performance_lists": 1 } }))
    );
    assert_eq!(available(&app.call("GET", &list, &[], None).await.1), Some(1), "the list is rendered afresh");
    let (_, map) = app.call("GET", &seats, &[("authorization", &bearer(user)), ("queue-token", &q)], None).await;
    assert_eq!(map["seats"][0]["status"], "HELD", "the map is rendered afresh");
    let (_, again) = admin(&app, "POST", "/v1/admin/caches/flush", None).await;
    assert_eq!(again, json!({ "flushed": { "seat_maps": 1, "known_concerts": 0, "performance_lists": 1 } }));
    let (_, empty) = admin(&app, "POST", "/v1/admin/caches/flush", None).await;
    assert_eq!(empty, json!({ "flushed": { "seat_maps": 0, "known_concerts": 0, "performance_lists": 0 } }));
    // Queue entry still finds the concert after its cache entry is gone.
    let mut late = app.create_user("late").await;
    assert_eq!(app.enter_queue(&mut late, concert.id).await.0, StatusCode::CREATED);
}

pub(crate) async fn the_queue_entry_rate_limit_answers_429_with_retry_after_only_when_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(1, 1).await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(app.create_user(&format!("u{i}")).await);
    }
    // The bucket refills with the service's clock; stopping it makes the
    // count exact.
    app.clock.freeze_at(app.clock.now_ms());
    let concert_id = concert.id;
    let enter = |user: &support::User| {
        let router = app.router.clone();
        let auth = bearer(user);
        async move {
            let body = json!({ "concert_id": concert_id }).to_string();
            support::send_for_headers(router, "POST", "/v1/queue/tokens", &[("authorization", &auth)], Some(body)).await
        }
    };
    let before = metrics(&app).await;
    assert_eq!(
        admin(&app, "GET", "/v1/admin/rate-limit", None).await.1,
        json!({ "enabled": false, "per_second": null })
    );
    for _ in 0..3 {
        for u in &users {
            let (status, _, body) = enter(u).await;
            assert!(status.is_success(), "no limit while off: {status} {body}");
        }
    }

    let (status, on) =
        admin(&app, "PUT", "/v1/admin/rate-limit", Some(json!({ "enabled": true, "per_second": 2 }))).await;
    assert_eq!((status, on), (StatusCode::OK, json!({ "enabled": true, "per_second": 2 })));
    assert_eq!(admin(&app, "GET", "/v1/admin/rate-limit", None).await.1, json!({ "enabled": true, "per_second": 2 }));
    assert!(enter(&users[0]).await.0.is_success());
    assert!(enter(&users[1]).await.0.is_success());
    let (status, headers, body) = enter(&users[2]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMITED")));
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    // Half a second brings back one entry.
    app.clock.advance(Duration::from_millis(500));
    assert!(enter(&users[2]).await.0.is_success());
    assert_eq!(enter(&users[3]).await.0, StatusCode::TOO_MANY_REQUESTS);

    let (status, off) = admin(&app, "PUT", "/v1/admin/rate-limit", Some(json!({ "enabled": false }))).await;
    assert_eq!((status, off), (StatusCode::OK, json!({ "enabled": false, "per_second": null })));
    for u in &users {
        assert!(enter(u).await.0.is_success());
    }
    let after = metrics(&app).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(r#"http_server_requests_total{method="POST",route="/v1/queue/tokens",status="429"}"#), 2.0);
}

pub(crate) async fn the_gauges_alert_rules_read_are_exposed_with_sane_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(1, 1).await;
    let users = app.active_users(1, concert.id).await;
    let (status, held) = app.hold(&users[0], concert.seat_ids[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");

    booking::background::sample(&app.state).await;
    let text = metrics(&app).await;
    assert!(sample(&text, "booking_cpu_limit_cores") > 0.0, "cpu limit");
    assert!(sample(&text, "booking_memory_limit_bytes") > 0.0, "memory limit");
    assert!(sample(&text, "process_resident_memory_bytes") > 0.0);
    assert!(text.lines().any(|l| l.starts_with("process_cpu_seconds_total ")));
    assert!(text.lines().any(|l| l.starts_with(r#"booking_chaos_injected_total{kind="error"} "#)));
    assert!(text.lines().any(|l| l == "booking_holds_overdue 0"), "a live hold is not overdue");
    assert!(text.lines().any(|l| l == "db_replica_lag_seconds 0"), "no replica, no lag");
    assert!(!text.contains("db_replica_up"), "no replica, no replica health");
    if backend != Backend::SqliteMemory {
        let (used, max) = (sample(&text, "redis_memory_used_bytes"), sample(&text, "redis_memory_max_bytes"));
        assert!(used > 0.0 && max >= used, "Redis memory {used} against its effective limit {max}");
    }

    // Lapsed, but the sweeper still has its grace period.
    let hold = app.state.settings.hold_duration;
    app.clock.advance(hold + Duration::from_secs(20));
    booking::background::sample(&app.state).await;
    assert_eq!(sample(&metrics(&app).await, "booking_holds_overdue"), 0.0);
    // More than 30 s past expiry and still HELD: overdue.
    app.clock.advance(Duration::from_secs(11));
    booking::background::sample(&app.state).await;
    assert_eq!(sample(&metrics(&app).await, "booking_holds_overdue"), 1.0);
    // Once swept, nothing is overdue.
    assert_eq!(app.state.store.sweep_expired(app.clock.now_ms(), 10).await.unwrap(), 1);
    booking::background::sample(&app.state).await;
    assert!(metrics(&app).await.lines().any(|l| l == "booking_holds_overdue 0"));
}
