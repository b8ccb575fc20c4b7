//! On a Redis Cluster of the test's own (3 masters, 3 replicas) with three
//! instances: concerts spread over the masters while each line stays on
//! one, admission runs once per tick and line across instances, and a
//! master killed mid-sale is survived.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use booking::queue::Queue;
use futures::future::join_all;
use serde_json::json;
use testkit::{info_field, redis_cli};

use super::support::{self, Backend, TestApp, spawn_app, spawn_app_with};

fn cluster(app: &TestApp) -> std::sync::MutexGuard<'_, testkit::RedisCluster> {
    app.resources.cluster.as_ref().expect("a cluster app").lock().unwrap()
}

/// `cmdstat_evalsha` calls on one node (every queue operation is a script).
fn script_calls(port: u16) -> u64 {
    let stats = redis_cli(port, &["info", "commandstats"]);
    info_field(&stats, "cmdstat_evalsha")
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concerts_spread_over_the_masters_and_each_concerts_keys_stay_on_one() {
    let app = spawn_app(Backend::Cluster).await;
    let prefix = app.resources.redis_prefix.clone();
    let masters = cluster(&app).masters();
    assert_eq!(masters.len(), 3);
    let before: HashMap<u16, u64> = masters.iter().map(|&m| (m, script_calls(m))).collect();

    // 30 concerts, one fan in each line, holding its one seat.
    let mut concerts = Vec::new();
    for _ in 0..30 {
        concerts.push(app.create_concert(1, 1).await);
    }
    let mut fans = Vec::new();
    for concert in &concerts {
        let mut fan = app.create_user("fan").await;
        let (status, body) = app.enter_queue(&mut fan, concert.id).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        fans.push(fan);
    }
    app.admit().await;
    for (fan, concert) in fans.iter().zip(&concerts) {
        let (status, body) = app.hold(fan, concert.seat_ids[0]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.state.queue.settle(Duration::from_secs(5)).await;

    let Queue::Redis(queue) = &app.state.queue else { panic!("a Redis queue") };
    let mut owners = HashSet::new();
    for concert in &concerts {
        let tag = format!("{{{prefix}:c{}}}", concert.id);
        let owner = cluster(&app).master_of(&tag);
        assert_eq!(
            queue.node_of(concert.id).await.unwrap(),
            Some(format!("127.0.0.1:{owner}")),
            "the client's slot map agrees"
        );
        // The line and the seat flag are all on the owner.
        for key in [format!("{tag}:active"), format!("{tag}:current"), format!("{tag}:seat:{}", concert.seat_ids[0])] {
            let kind = redis_cli(owner, &["type", &key]);
            assert_ne!(kind.trim(), "none", "{key} is on its concert's master {owner}");
        }
        owners.insert(owner);
    }
    assert_eq!(owners.len(), 3, "30 concerts land on every master: {owners:?}");
    // And so does the work: every master ran queue scripts.
    for &m in &masters {
        let ran = script_calls(m) - before[&m];
        assert!(ran >= 10, "master {m} ran {ran} scripts; the load does not spread");
    }
    // The per-node load booking exports for the dashboards: one series per master.
    booking::background::sample(&app.state).await;
    let metrics = app.metrics_text().await;
    for &m in &masters {
        let labels = format!("node=\"127.0.0.1:{m}\"");
        assert!(
            support::series_value(&metrics, "redis_node_commands_processed_total", &labels) > 0.0,
            "no commands counted for {m}:\n{metrics}"
        );
    }
}

/// A new place waits (at most 50 ms) for the line's replica to confirm it;
/// one that no replica confirmed still stands and is counted, as the
/// writes a failover at that moment could lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_place_no_replica_confirmed_stands_and_is_counted() {
    // One instance on a cluster of the test's own, so that its own counter is the one read.
    let resources = std::sync::Arc::new(support::Resources::new(Backend::Cluster).await);
    let app = support::spawn_instance(resources, booking::domain::Clock::default(), |s| s).await;
    let concert = app.create_concert(1, 1).await;
    let unconfirmed = |metrics: &str| support::series_value(metrics, "redis_replication_unconfirmed_total", "");
    let mut first = app.create_user("first").await;
    let (status, body) = app.enter_queue(&mut first, concert.id).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Usually 0 here; a replica slower than 50 ms on a loaded machine counts too, so the test counts from here.
    let before = unconfirmed(&app.metrics_text().await);

    let tag = format!("{{{}:c{}}}", app.resources.redis_prefix, concert.id);
    let replica = {
        let c = cluster(&app);
        c.replica_of(c.master_of(&tag))
    };
    let stalled = cluster(&app).pause(replica);
    let mut second = app.create_user("second").await;
    let (status, body) = app.enter_queue(&mut second, concert.id).await;
    drop(stalled);
    assert_eq!((status, body["position"].as_i64()), (StatusCode::CREATED, Some(2)), "the place stands: {body}");
    assert_eq!(unconfirmed(&app.metrics_text().await), before + 1.0, "and is counted");
}

/// Two lines, three instances, twelve admission calls per tick: each line
/// admits its batch exactly once per tick, in order, nobody twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_line_admits_once_per_tick_across_three_instances() {
    let first = spawn_app(Backend::Cluster).await;
    let others = [
        support::spawn_instance(first.resources.clone(), first.clock.clone(), |s| s).await,
        support::spawn_instance(first.resources.clone(), first.clock.clone(), |s| s).await,
    ];
    let concerts = [first.create_concert(1, 1).await, first.create_concert(1, 1).await];
    let mut entered = Vec::new();
    for i in 0..120 {
        let concert = &concerts[i % 2];
        let mut user = first.create_user(&format!("u{i}")).await;
        let (status, body) = first.enter_queue(&mut user, concert.id).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        entered.push((user, concert.id, body["position"].as_i64().unwrap()));
    }
    let policy = booking::queue::AdmissionPolicy { batch: 20, ..first.state.admission_policy() };
    for _ in 0..2 {
        first.clock.advance(Duration::from_millis(policy.interval_ms as u64));
        let now = first.clock.now_ms();
        let queues = [&first.state.queue, &others[0].state.queue, &others[1].state.queue];
        let calls = (0..12).map(|i| {
            let q = queues[i % 3].clone();
            tokio::spawn(async move { q.admit(policy, now).await.unwrap() })
        });
        let results: Vec<Option<u64>> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(results.iter().flatten().sum::<u64>(), 40, "two lines, 20 each, once: {results:?}");
    }
    // The first 40 of each line are active; the rest moved up by 40.
    for (i, (user, _, position)) in entered.iter().enumerate() {
        let app = [&first, &others[0], &others[1]][i % 3];
        let (_, status) = app
            .call("GET", "/v1/queue/tokens/current", &[("queue-token", user.queue_token.as_deref().unwrap())], None)
            .await;
        if *position <= 40 {
            assert_eq!(status["status"], "ACTIVE", "position {position}: {status}");
        } else {
            assert_eq!(
                (&status["status"], status["position"].as_i64()),
                (&json!("WAITING"), Some(position - 40)),
                "{status}"
            );
        }
    }
}

/// The master holding the sale's line is killed mid-sale. Admitted users
/// keep holding and paying while its replica takes over (the instances
/// remember whom they saw active; the database decides every seat); a
/// request meanwhile gets its answer or a documented 503, never another
/// 5xx. Once the replica is master, new places join and are admitted
/// through it: the client found the new topology by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_sale_is_survived() {
    let app = spawn_app_with(Backend::Cluster, |s| booking::settings::Settings {
        active_window: Duration::from_secs(3600),
        ..s
    })
    .await;
    let concert = app.create_concert(40, 1_000).await;
    let users = app.active_users(40, concert.id).await;
    for user in &users {
        app.charge(user, 1_000, &format!("fund-{}", user.id)).await;
        // Each instance sees the place active once (the round robin).
        for _ in 0..support::CLUSTER_INSTANCES {
            let (status, body) = app
                .call("GET", "/v1/queue/tokens/current", &[("queue-token", user.queue_token.as_deref().unwrap())], None)
                .await;
            assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ACTIVE")), "{body}");
        }
    }
    let tag = format!("{{{}:c{}}}", app.resources.redis_prefix, concert.id);
    let old_master = cluster(&app).master_of(&tag);
    cluster(&app).kill(old_master);

    // Every user buys their own seat now, retrying a documented 503.
    let started = Instant::now();
    let mut unavailable = 0;
    for (user, &seat) in users.iter().zip(&concert.seat_ids) {
        let (mut reservation, mut paid): (Option<String>, bool) = (None, false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let (status, body) = match &reservation {
                None => app.hold(user, seat).await,
                Some(rid) => app.pay(user, rid, &format!("pay-{}", user.id)).await,
            };
            match status {
                StatusCode::CREATED if reservation.is_none() => {
                    reservation = body["reservation_id"].as_str().map(str::to_owned)
                }
                StatusCode::CREATED => {
                    paid = true;
                    break;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(body["error"]["code"].is_string(), "a 503 with a JSON error: {body}");
                    unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("{other} during the failover: {body}"),
            }
        }
        assert!(paid, "user {} never bought a seat (reservation {reservation:?})", user.id);
    }
    let booked_in = started.elapsed();

    // The replica is the master now, and the clients use it.
    let new_master = {
        let c = cluster(&app);
        c.wait_failed_over(3);
        c.master_of(&tag)
    };
    assert_ne!(new_master, old_master);
    let mut late = app.create_user("late").await;
    let mut admitted = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !admitted && Instant::now() < deadline {
        let (status, body) = app.enter_queue(&mut late, concert.id).await;
        if status.is_success() {
            let policy = app.state.admission_policy();
            app.clock.advance(Duration::from_millis(policy.interval_ms as u64));
            let _ = app.state.queue.admit(policy, app.clock.now_ms()).await;
            let (_, place) = app
                .call("GET", "/v1/queue/tokens/current", &[("queue-token", late.queue_token.as_deref().unwrap())], None)
                .await;
            admitted = place["status"] == "ACTIVE";
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(admitted, "a new place joins and is admitted through the promoted replica");
    let audit = app.state.store.audit().await.unwrap();
    assert!(audit.violations().is_empty(), "{audit:?}");
    eprintln!("40 seats sold across the failover in {booked_in:?}, {unavailable} documented 503s on the way");
}

/// A `CLUSTER_PORT_BASE` whose every port (base..base+30 and the Redis
/// cluster bus, base+10001..base+10006) is free now.
fn free_port_base() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let base = 20_000 + (testkit::free_port() % 250) * 100;
        if (base..=base + 30).chain(base + 10_001..=base + 10_006).all(free) {
            return base;
        }
    }
}

/// `scripts/cluster.sh ARGS` for the cluster in `dir`: exit code, stdout, stderr.
fn cluster_sh(dir: &std::path::Path, base: u16, args: &[&str]) -> (i32, String, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let out = std::process::Command::new(script)
        .args(args)
        .env("CLUSTER_DIR", dir)
        .env("CLUSTER_PORT_BASE", base.to_string())
        .env("BOOKING_BIN", testkit::workspace_binary("booking"))
        // Booking's own settings pass through to every instance.
        .env("ADMISSION_INTERVAL_SECS", "1")
        .env("SIGNUP_RATE_PER_MINUTE", "off")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .expect("cluster.sh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `export NAME='value'` lines of cluster.env.
fn cluster_env(dir: &std::path::Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("cluster.env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, value) = l.strip_prefix("export ")?.split_once('=')?;
            Some((name.to_owned(), value.trim_matches('\'').to_owned()))
        })
        .collect()
}

/// Stops the cluster when the test ends, failing or not.
struct Down<'a>(&'a std::path::Path, u16);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let (code, _, err) = cluster_sh(self.0, self.1, &["down"]);
        if code != 0 {
            eprintln!("cluster.sh down: {err}");
        }
    }
}

/// The whole local cluster from `scripts/cluster.sh up`: a sale through
/// HAProxy, one instance `kill -9`ed mid-sale while everyone pays, and every
/// payment made once; `status` tells the truth before and after, and `down`
/// stops everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_sh_runs_a_sale_through_haproxy_that_survives_a_killed_instance() {
    let dir = testkit::TempDir::new("cluster-sh");
    // Other tests pick random ports too: one taken between the check and the
    // bind is a fresh try on another base (cluster.sh stops what it started).
    let mut attempt = 0;
    let base = loop {
        let base = free_port_base();
        let (code, _, err) = cluster_sh(&dir, base, &["up"]);
        if code == 0 {
            break base;
        }
        attempt += 1;
        let port_race = err.contains("Address already in use") || err.contains("taken");
        assert!(port_race && attempt < 3, "cluster.sh up failed:\n{err}");
    };
    let _down = Down(&dir, base);
    let (code, status, err) = cluster_sh(&dir, base, &["status"]);
    assert_eq!(code, 0, "{status}{err}");
    assert_eq!(
        status.lines().filter(|l| l.split_whitespace().nth(1) == Some("ok")).count(),
        6,
        "redis, postgres, 3 instances, haproxy:\n{status}"
    );
    let env = cluster_env(&dir);
    let (url, admin) = (env["BOOKING_URL"].clone(), env["ADMIN_KEY"].clone());
    let http = reqwest::Client::new();
    let call =
        |method: reqwest::Method, path: &str, body: Option<serde_json::Value>, headers: Vec<(&'static str, String)>| {
            let mut req = http.request(method, format!("{url}{path}"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(body) = body {
                req = req.json(&body);
            }
            async move {
                let resp = req.send().await.expect("HAProxy answers");
                let status = resp.status().as_u16();
                (status, resp.json::<serde_json::Value>().await.unwrap_or_default())
            }
        };
    use reqwest::Method;

    let seats: Vec<serde_json::Value> =
        (1..=20).map(|n| json!({ "seat_no": format!("A{n}"), "grade": "R", "price": 1_000 })).collect();
    let concert =
        json!({ "title": "Cluster", "performances": [{ "starts_at": "2030-05-01T19:00:00Z", "seats": seats }] });
    let (status, created) =
        call(Method::POST, "/v1/admin/concerts", Some(concert), vec![("x-admin-key", admin.clone())]).await;
    assert_eq!(status, 201, "{created}");
    let concert_id = created["concert_id"].as_i64().unwrap();
    let performance_id = created["performances"][0]["performance_id"].as_i64().unwrap();

    // 20 fans join, are admitted, fund their balance and hold a seat each.
    let mut fans = Vec::new();
    for i in 0..20 {
        let (status, user) = call(Method::POST, "/v1/users", Some(json!({ "name": format!("fan{i}") })), vec![]).await;
        assert_eq!(status, 201, "{user}");
        let bearer = format!("Bearer {}", user["token"].as_str().unwrap());
        let (status, place) = call(
            Method::POST,
            "/v1/queue/tokens",
            Some(json!({ "concert_id": concert_id })),
            vec![("authorization", bearer.clone())],
        )
        .await;
        assert_eq!(status, 201, "{place}");
        fans.push((bearer, place["queue_token"].as_str().unwrap().to_owned()));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (_, queue) in &fans {
        loop {
            let (_, place) =
                call(Method::GET, "/v1/queue/tokens/current", None, vec![("queue-token", queue.clone())]).await;
            if place["status"] == "ACTIVE" {
                break;
            }
            assert!(Instant::now() < deadline, "not admitted: {place}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (status, map) = call(
        Method::GET,
        &format!("/v1/performances/{performance_id}/seats"),
        None,
        vec![("authorization", fans[0].0.clone()), ("queue-token", fans[0].1.clone())],
    )
    .await;
    assert_eq!(status, 200, "{map}");
    let seat_ids: Vec<i64> = map["seats"].as_array().unwrap().iter().map(|s| s["seat_id"].as_i64().unwrap()).collect();
    let mut reservations = Vec::new();
    for (i, (bearer, queue)) in fans.iter().enumerate() {
        let headers = vec![("authorization", bearer.clone()), ("idempotency-key", format!("fund-{i}"))];
        let (status, body) =
            call(Method::POST, "/v1/users/me/balance/charges", Some(json!({ "amount": 1_000 })), headers).await;
        assert_eq!(status, 201, "{body}");
        let (status, held) = call(
            Method::POST,
            "/v1/reservations",
            Some(json!({ "seat_id": seat_ids[i] })),
            vec![("authorization", bearer.clone()), ("queue-token", queue.clone())],
        )
        .await;
        assert_eq!(status, 201, "{held}");
        reservations.push(held["reservation_id"].as_str().unwrap().to_owned());
    }

    // One instance dies; everyone pays through HAProxy, retrying a 503.
    let pid: i32 = std::fs::read_to_string(dir.join("run/booking-2.pid")).unwrap().trim().parse().unwrap();
    assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let mut statuses = HashMap::new();
    for (i, ((bearer, queue), rid)) in fans.iter().zip(&reservations).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let headers = vec![
                ("authorization", bearer.clone()),
                ("queue-token", queue.clone()),
                ("idempotency-key", format!("pay-{i}")),
            ];
            let (status, body) =
                call(Method::POST, "/v1/payments", Some(json!({ "reservation_id": rid })), headers).await;
            *statuses.entry(status).or_insert(0) += 1;
            if status == 201 {
                break;
            }
            assert_eq!(status, 503, "only a documented 503 while an instance is gone: {body}");
            assert!(Instant::now() < deadline, "payment {i} never went through");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("payments through HAProxy with one instance killed: {statuses:?}");

    // Every seat sold once, every payment once, and the books balance.
    let audit = std::process::Command::new(testkit::workspace_binary("booking"))
        .arg("audit")
        .env("DATABASE_URL", &env["DATABASE_URL"])
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "audit: {}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&env["DATABASE_URL"]).await.unwrap();
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(&mut conn).await.unwrap();
    assert_eq!(paid, 20);

    // status says what is down, and down leaves nothing running.
    let (code, status, _) = cluster_sh(&dir, base, &["status"]);
    assert_ne!(code, 0, "an instance is dead: {status}");
    assert!(status.lines().any(|l| l.starts_with("booking-2") && !l.contains(" ok ")), "{status}");
    let (code, _, err) = cluster_sh(&dir, base, &["down"]);
    assert_eq!(code, 0, "{err}");
    for instance in [1, 3] {
        let pid = std::fs::read_to_string(dir.join(format!("run/booking-{instance}.pid"))).unwrap_or_default();
        let alive = std::path::Path::new(&format!("/proc/{}/cwd", pid.trim())).exists();
        assert!(!alive || pid.trim().is_empty(), "booking-{instance} still runs after down");
    }
}
