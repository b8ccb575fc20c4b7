//! The behavioural suite. Every test runs once per backend combination:
//! SQLite with the in-process queue (the embedded default), and PostgreSQL
//! with Redis (production).

mod claims;
mod cluster;
mod contract;
mod controls;
mod hardening;
mod k6;
mod observability;
mod replica;
mod support;
mod telemetry;

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::http::StatusCode;
use booking::domain::Clock;
use controls::{
    admission_retuned_at_run_time_is_used_by_the_running_admission_loop,
    flushing_the_caches_drops_seat_maps_and_known_concerts,
    invalid_operator_requests_are_clean_json_4xx_and_change_nothing,
    the_chaos_switch_fails_only_the_chosen_route_and_counts_every_fault,
    the_gauges_alert_rules_read_are_exposed_with_sane_values,
    the_queue_entry_rate_limit_answers_429_with_retry_after_only_when_on,
};
use futures::future::join_all;
use hardening::{
    a_queue_place_of_another_concert_cannot_pay_for_a_seat, idempotency_keys_past_their_retention_are_deleted,
    the_flags_of_one_seat_land_in_the_order_they_were_made, users_who_paid_or_lapsed_leave_nothing_in_the_queue,
};
use serde_json::{Value, json};
use support::{Backend, TestApp, bearer, spawn_app, spawn_instance};

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite_and_memory_queue {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::SqliteMemory).await
                }
            )*
        }
        mod postgres_and_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::PostgresRedis).await
                }
            )*
        }
    };
}

/// The races again, with each request sent to the next of three instances
/// in turn (as HAProxy's round robin does), on one PostgreSQL and a Redis
/// Cluster of the test's own: a user's hold, payment and retry each land on
/// another instance than the last.
macro_rules! on_three_instances_and_a_redis_cluster {
    ($($name:ident),* $(,)?) => {
        mod three_instances_on_a_redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Cluster).await
                }
            )*
        }
    };
}

on_three_instances_and_a_redis_cluster!(
    a_full_booking_flow_sells_the_seat_and_ends_the_queue_token,
    a_thousand_attempts_on_one_seat_have_exactly_one_winner,
    a_thousand_attempts_on_a_hundred_seats_make_exactly_a_hundred_holds,
    a_payment_racing_hold_expiry_has_exactly_one_winner_and_money_is_conserved,
    concurrent_duplicate_charges_with_one_key_charge_once,
    a_payment_retried_on_other_instances_is_paid_once,
    the_queue_is_fifo_under_a_burst_and_admits_nobody_twice_with_two_instances,
);

on_every_backend!(
    a_payment_retried_on_other_instances_is_paid_once,
    known_requests_move_the_metrics_by_exactly_their_count,
    a_full_booking_flow_sells_the_seat_and_ends_the_queue_token,
    a_thousand_attempts_on_a_hundred_seats_make_exactly_a_hundred_holds,
    a_thousand_attempts_on_one_seat_have_exactly_one_winner,
    a_payment_racing_hold_expiry_has_exactly_one_winner_and_money_is_conserved,
    concurrent_duplicate_charges_with_one_key_charge_once,
    the_queue_is_fifo_under_a_burst_and_admits_nobody_twice_with_two_instances,
    a_second_entry_returns_the_same_place,
    the_wait_estimate_counts_down_to_a_started_tick_and_never_jumps_back_up,
    a_user_cannot_hold_more_than_the_limit,
    expired_holds_are_available_again_and_the_sweeper_expires_them,
    every_error_is_a_clean_json_4xx,
    nobody_can_read_or_change_another_users_data,
    restarting_loses_nothing_that_was_acknowledged,
    the_chaos_switch_fails_only_the_chosen_route_and_counts_every_fault,
    invalid_operator_requests_are_clean_json_4xx_and_change_nothing,
    admission_retuned_at_run_time_is_used_by_the_running_admission_loop,
    flushing_the_caches_drops_seat_maps_and_known_concerts,
    the_queue_entry_rate_limit_answers_429_with_retry_after_only_when_on,
    the_gauges_alert_rules_read_are_exposed_with_sane_values,
    a_queue_place_of_another_concert_cannot_pay_for_a_seat,
    users_who_paid_or_lapsed_leave_nothing_in_the_queue,
    the_flags_of_one_seat_land_in_the_order_they_were_made,
    idempotency_keys_past_their_retention_are_deleted,
);

async fn ok(app: &TestApp) -> (Vec<support::User>, support::Concert) {
    let concert = app.create_concert(10, 50_000).await;
    let users = app.active_users(2, concert.id).await;
    (users, concert)
}

async fn a_full_booking_flow_sells_the_seat_and_ends_the_queue_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(3, 70_000).await;
    let mut user = app.create_user("kim").await;

    let (status, place) = app.enter_queue(&mut user, concert.id).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(place["status"], "WAITING");
    assert_eq!(place["position"], 1);
    let q = user.queue_token.clone().unwrap();

    // Waiting users cannot see or hold seats.
    let seats_path = format!("/v1/performances/{}/seats", concert.performance_id);
    let (status, body) =
        app.call("GET", &seats_path, &[("authorization", &bearer(&user)), ("queue-token", &q)], None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("QUEUE_TOKEN_NOT_ACTIVE")));

    assert_eq!(app.admit().await, Some(1));
    let (status, current) = app.call("GET", "/v1/queue/tokens/current", &[("queue-token", &q)], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["status"], "ACTIVE");
    assert!(current["active_until"].is_string());

    let (status, perfs) = app.call("GET", &format!("/v1/concerts/{}/performances", concert.id), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(perfs["performances"][0]["available_seats"], 3);

    let seat = concert.seat_ids[0];
    let (status, held) = app.hold(&user, seat).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(held["status"], "HELD");
    assert_eq!(held["price"], 70_000);
    let reservation_id = held["reservation_id"].as_str().unwrap().to_owned();

    let (_, perfs) = app.call("GET", &format!("/v1/concerts/{}/performances", concert.id), &[], None).await;
    assert_eq!(perfs["performances"][0]["available_seats"], 2);
    let (status, map) =
        app.call("GET", &seats_path, &[("authorization", &bearer(&user)), ("queue-token", &q)], None).await;
    assert_eq!(status, StatusCode::OK, "{map}");
    let statuses: Vec<&str> = map["seats"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["HELD", "AVAILABLE", "AVAILABLE"], "the seat map shows this instance's hold at once");

    let (status, body) = app.pay(&user, &reservation_id, "pay-1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("INSUFFICIENT_BALANCE")));

    let (status, charged) = app.charge(&user, 100_000, "charge-1").await;
    assert_eq!(status, StatusCode::CREATED, "{charged}");
    assert_eq!(charged["balance"], 100_000);

    let (status, paid) = app.pay(&user, &reservation_id, "pay-1").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["amount"], 70_000);
    assert_eq!(app.balance(&user).await, 30_000);
    // One instance's sale patches its cached seat map at once (the user's
    // place has ended, so the cache is read directly; behind the round
    // robin the sale and the map were on other instances).
    if backend != Backend::Cluster {
        let map = app.state.caches.seat_map(concert.performance_id).expect("the map stays cached");
        let map: serde_json::Value = serde_json::from_slice(&map.body).unwrap();
        let statuses: Vec<&str> =
            map["seats"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["SOLD", "AVAILABLE", "AVAILABLE"], "the seat map shows this instance's sale at once");
    }
    let (_, perfs) = app.call("GET", &format!("/v1/concerts/{}/performances", concert.id), &[], None).await;
    assert_eq!(perfs["performances"][0]["available_seats"], 2);

    // A retry of the same payment replays it, even though the queue token ended.
    let (status, replay) = app.pay(&user, &reservation_id, "pay-1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replay["payment_id"], paid["payment_id"]);
    assert_eq!(app.balance(&user).await, 30_000);

    let (_, current) = app.call("GET", "/v1/queue/tokens/current", &[("queue-token", &q)], None).await;
    assert_eq!(current["status"], "EXPIRED");

    let (status, r) = app
        .call("GET", &format!("/v1/reservations/{reservation_id}"), &[("authorization", &bearer(&user))], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["status"], "PAID");
    assert_eq!(r["payment_id"], paid["payment_id"]);

    let seats = app.state.store.seats(concert.performance_id, app.clock.now_ms()).await.unwrap();
    assert_eq!(serde_json::to_value(seats[0].status).unwrap(), "SOLD");
    assert!(app.state.store.audit().await.unwrap().violations().is_empty());
}

/// Fires `attempts` holds at once, attempt `i` from user `i % users.len()`
/// on seat `seats[i % seats.len()]`; returns the statuses.
async fn race(app: &TestApp, users: &[support::User], seats: &[i64], attempts: usize) -> Vec<(StatusCode, Value)> {
    let tasks = (0..attempts).map(|i| {
        let router = app.router.clone();
        let user = users[i % users.len()].clone();
        let seat = seats[i % seats.len()];
        tokio::spawn(async move { support::hold(router, &user, seat).await })
    });
    join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect()
}

async fn a_thousand_attempts_on_a_hundred_seats_make_exactly_a_hundred_holds(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(100, 10_000).await;
    let users = app.active_users(1000, concert.id).await;
    let results = race(&app, &users, &concert.seat_ids, 1000).await;
    let held = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let refused =
        results.iter().filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "SEAT_UNAVAILABLE").count();
    assert_eq!(held, 100);
    assert_eq!(
        refused,
        900,
        "every loser gets SEAT_UNAVAILABLE: {:?}",
        results.iter().find(|(s, _)| *s != StatusCode::CREATED && *s != StatusCode::CONFLICT)
    );
    let seats: HashSet<i64> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b["seat_id"].as_i64().unwrap())
        .collect();
    assert_eq!(seats.len(), 100);
    assert!(app.state.store.audit().await.unwrap().violations().is_empty());
}

async fn a_thousand_attempts_on_one_seat_have_exactly_one_winner(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(1, 10_000).await;
    let users = app.active_users(1000, concert.id).await;
    let results = race(&app, &users, &concert.seat_ids, 1000).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count(), 1);
    assert_eq!(results.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).count(), 999);
}

async fn a_payment_racing_hold_expiry_has_exactly_one_winner_and_money_is_conserved(backend: Backend) {
    // Windows long enough that every round's places stay active.
    let app = support::spawn_app_with(backend, |s| booking::settings::Settings {
        active_window: Duration::from_secs(86_400),
        ..s
    })
    .await;
    let rounds = 24;
    let concert = app.create_concert(rounds, 1_000).await;
    let mut payer = app.create_user("payer").await;
    let mut rival = app.create_user("rival").await;
    app.charge(&payer, 1_000 * rounds as i64, "fund").await;
    let mut payer_won = 0;
    for (round, &seat) in concert.seat_ids.iter().enumerate() {
        // Fresh queue places each round: the windows run out as time moves.
        app.enter_queue(&mut payer, concert.id).await;
        app.enter_queue(&mut rival, concert.id).await;
        app.admit().await;
        let (status, held) = app.hold(&payer, seat).await;
        assert_eq!(status, StatusCode::CREATED, "{held}");
        let reservation_id = held["reservation_id"].as_str().unwrap().to_owned();
        let expires_at = booking::domain::clock::parse_rfc3339(held["expires_at"].as_str().unwrap()).unwrap();
        // Stop the clock a few milliseconds either side of the expiry, then
        // let the payment, a rival's claim and the sweeper race.
        let offset = (round as i64 % 6) - 3;
        app.clock.freeze_at(expires_at + offset);
        let sweep = {
            let store = app.state.store.clone();
            let now = app.clock.now_ms();
            tokio::spawn(async move { store.sweep_expired(now, 100).await.unwrap() })
        };
        let payment = {
            let (router, payer, rid) = (app.router.clone(), payer.clone(), reservation_id.clone());
            tokio::spawn(async move { support::pay(router, &payer, &rid, &format!("pay-{round}")).await })
        };
        let claim = {
            let (router, rival) = (app.router.clone(), rival.clone());
            tokio::spawn(async move { support::hold(router, &rival, seat).await })
        };
        let (paid, claimed, _) = (payment.await.unwrap(), claim.await.unwrap(), sweep.await.unwrap());
        let (paid_ok, claim_ok) = (paid.0 == StatusCode::CREATED, claimed.0 == StatusCode::CREATED);
        assert!(paid_ok != claim_ok, "round {round}: exactly one winner, got payment {paid:?} and claim {claimed:?}");
        // Before the expiry instant the hold is the payer's; from it on, the seat is free.
        assert_eq!(paid_ok, offset < 0, "round {round} (offset {offset}): payment {paid:?}, claim {claimed:?}");
        if paid_ok {
            payer_won += 1;
            assert_eq!(claimed.1["error"]["code"], "SEAT_UNAVAILABLE");
        } else {
            assert_eq!(paid.1["error"]["code"], "HOLD_EXPIRED", "{paid:?}");
        }
    }
    let audit = app.state.store.audit().await.unwrap();
    assert!(audit.violations().is_empty(), "{audit:?}");
    assert_eq!(audit.payments, payer_won);
    assert_eq!(payer_won, rounds as i64 / 2);
    assert_eq!(app.balance(&payer).await, 1_000 * (rounds as i64 - payer_won));
}

/// A client that lost the answer to its payment retries with the same key,
/// and the balancer sends the retry elsewhere; a burst of retries at once
/// lands on every instance. One payment, one debit, the same answer to all.
async fn a_payment_retried_on_other_instances_is_paid_once(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let concert = app.create_concert(2, 30_000).await;
    let users = app.active_users(1, concert.id).await;
    let user = &users[0];
    app.charge(user, 50_000, "fund").await;
    let (status, held) = app.hold(user, concert.seat_ids[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let rid = held["reservation_id"].as_str().unwrap().to_owned();
    let (status, first) = app.pay(user, &rid, "pay-once").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let retries = (0..12).map(|_| {
        let (app, user, rid) = (app.clone(), user.clone(), rid.clone());
        tokio::spawn(async move { app.pay(&user, &rid, "pay-once").await })
    });
    for (status, again) in join_all(retries).await.into_iter().map(|r| r.unwrap()) {
        assert_eq!(status, StatusCode::CREATED, "a retry is answered like the first: {again}");
        assert_eq!(again["payment_id"], first["payment_id"]);
    }
    assert_eq!(app.balance(user).await, 20_000, "charged once");
    assert_eq!(booking::store::ledger_sum(&app.state.store, user.id).await.unwrap(), 20_000);
    assert!(app.state.store.audit().await.unwrap().violations().is_empty());
}

async fn concurrent_duplicate_charges_with_one_key_charge_once(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let user = app.create_user("lee").await;
    let tasks = (0..50).map(|_| {
        let app = app.clone();
        let user = user.clone();
        tokio::spawn(async move { app.charge(&user, 5_000, "same-key").await })
    });
    let results: Vec<_> = join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    assert!(results.iter().all(|(s, _)| *s == StatusCode::CREATED), "{results:?}");
    let ids: HashSet<String> = results.iter().map(|(_, b)| b["charge_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "every replay returns the first result");
    assert_eq!(app.balance(&user).await, 5_000);
    assert_eq!(booking::store::ledger_sum(&app.state.store, user.id).await.unwrap(), 5_000);

    let (status, body) = app.charge(&user, 6_000, "same-key").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("IDEMPOTENCY_KEY_REUSED"))
    );
}

async fn the_queue_is_fifo_under_a_burst_and_admits_nobody_twice_with_two_instances(backend: Backend) {
    let first = spawn_app(backend).await;
    // With Redis, a second replica shares the queue; the in-process queue is
    // one instance by design, so its two callers share one state.
    let second = match backend {
        Backend::PostgresRedis | Backend::Cluster => {
            spawn_instance(first.resources.clone(), first.clock.clone(), |s| s).await
        }
        Backend::SqliteMemory => TestApp {
            router: first.router.clone(),
            state: first.state.clone(),
            clock: first.clock.clone(),
            resources: first.resources.clone(),
        },
    };
    let concert = first.create_concert(1, 1).await;
    let mut users = Vec::new();
    for i in 0..200 {
        users.push(first.create_user(&format!("u{i}")).await);
    }
    let entries = users.iter().cloned().enumerate().map(|(i, mut u)| {
        let router = if i % 2 == 0 { first.router.clone() } else { second.router.clone() };
        tokio::spawn(async move {
            let (status, body) = support::send(
                router,
                "POST",
                "/v1/queue/tokens",
                &[("authorization", &bearer(&u))],
                Some(json!({ "concert_id": concert.id }).to_string()),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            u.queue_token = body["queue_token"].as_str().map(str::to_owned);
            (u, body["position"].as_i64().unwrap())
        })
    });
    let entered: Vec<_> = join_all(entries).await.into_iter().map(|r| r.unwrap()).collect();
    let positions: HashSet<i64> = entered.iter().map(|(_, p)| *p).collect();
    assert_eq!(positions, (1..=200).collect(), "positions are a permutation: no ties, no gaps");

    // Both instances race for the same ticks, many times each.
    let policy = booking::queue::AdmissionPolicy { batch: 50, ..first.state.admission_policy() };
    let mut admitted_per_tick = Vec::new();
    for _ in 0..2 {
        first.clock.advance(Duration::from_millis(policy.interval_ms as u64));
        let now = first.clock.now_ms();
        let calls = (0..10).map(|i| {
            let q = if i % 2 == 0 { first.state.queue.clone() } else { second.state.queue.clone() };
            tokio::spawn(async move { q.admit(policy, now).await.unwrap() })
        });
        let results: Vec<_> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1, "one admission per tick: {results:?}");
        admitted_per_tick.push(results.iter().flatten().sum::<u64>());
    }
    assert_eq!(admitted_per_tick, vec![50, 50]);

    // Exactly the first 100 in line are active, in order.
    for (user, position) in &entered {
        let q = user.queue_token.clone().unwrap();
        let (_, status) = second.call("GET", "/v1/queue/tokens/current", &[("queue-token", &q)], None).await;
        if *position <= 100 {
            assert_eq!(status["status"], "ACTIVE", "position {position}");
        } else {
            assert_eq!(status["status"], "WAITING");
            assert_eq!(status["position"].as_i64().unwrap(), position - 100);
        }
    }
}

/// The tick's batch is admitted a moment after the tick starts; in that
/// moment a user next in line is due now, not a whole interval away. Polled
/// through another instance than the one that ran the tick, with Redis.
async fn the_wait_estimate_counts_down_to_a_started_tick_and_never_jumps_back_up(backend: Backend) {
    let first = spawn_app(backend).await;
    let second = match backend {
        Backend::PostgresRedis | Backend::Cluster => {
            spawn_instance(first.resources.clone(), first.clock.clone(), |s| s).await
        }
        Backend::SqliteMemory => TestApp {
            router: first.router.clone(),
            state: first.state.clone(),
            clock: first.clock.clone(),
            resources: first.resources.clone(),
        },
    };
    let concert = first.create_concert(1, 1).await;
    let policy = first.state.admission_policy();
    assert_eq!(policy.interval_ms, 15_000);
    let tick = (first.clock.now_ms() / policy.interval_ms + 1) * policy.interval_ms;
    first.clock.freeze_at(tick + 500);
    // This tick has run (the in-process queue); a line new to Redis counts as
    // admitted at the tick it starts in, so both wait for the next one.
    first.state.queue.admit(policy, tick + 500).await.unwrap();
    let mut user = first.create_user("fan").await;
    let (_, entered) = first.enter_queue(&mut user, concert.id).await;
    assert_eq!((&entered["position"], &entered["estimated_wait_seconds"]), (&json!(1), &json!(15)), "{entered}");

    let q = user.queue_token.clone().unwrap();
    let mut polls = Vec::new();
    for at in [tick + 12_000, tick + 14_000, tick + 15_200, tick + 15_900] {
        first.clock.freeze_at(at);
        let (_, place) = second.call("GET", "/v1/queue/tokens/current", &[("queue-token", &q)], None).await;
        assert_eq!((&place["status"], &place["position"]), (&json!("WAITING"), &json!(1)), "{place}");
        polls.push(place["estimated_wait_seconds"].as_i64().unwrap());
    }
    assert_eq!(polls, [3, 1, 0, 0], "once the next tick has started, its batch is due now, not 15 s away");
    assert!(first.state.queue.admit(policy, tick + 15_900).await.unwrap().is_some());
    let (_, place) = second.call("GET", "/v1/queue/tokens/current", &[("queue-token", &q)], None).await;
    assert_eq!(place["status"], "ACTIVE", "{place}");
}

async fn a_second_entry_returns_the_same_place(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(1, 1).await;
    let mut a = app.create_user("a").await;
    let mut b = app.create_user("b").await;
    app.enter_queue(&mut a, concert.id).await;
    let (_, first) = app.enter_queue(&mut b, concert.id).await;
    let (status, again) = app.enter_queue(&mut b, concert.id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["queue_token"], first["queue_token"]);
    assert_eq!(again["position"], 2);
    assert!(again["estimated_wait_seconds"].as_i64().unwrap() > 0);
    let (status, body) = app
        .call("POST", "/v1/queue/tokens", &[("authorization", &bearer(&a))], Some(json!({ "concert_id": 999_999 })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("CONCERT_NOT_FOUND")));
}

async fn a_user_cannot_hold_more_than_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(10, 1).await;
    let users = app.active_users(1, concert.id).await;
    // Eight parallel attempts on eight free seats: the limit (4) is exact.
    let results = race(&app, &users, &concert.seat_ids[..8], 8).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count(), 4);
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != StatusCode::CREATED)
            .all(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "HOLD_LIMIT_REACHED")
    );
}

async fn expired_holds_are_available_again_and_the_sweeper_expires_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(2, 1).await;
    let users = app.active_users(2, concert.id).await;
    let (_, held) = app.hold(&users[0], concert.seat_ids[0]).await;
    let rid = held["reservation_id"].as_str().unwrap().to_owned();
    let (status, _) = app.hold(&users[1], concert.seat_ids[0]).await;
    assert_eq!(status, StatusCode::CONFLICT);

    app.clock.advance(app.state.settings.hold_duration + Duration::from_millis(1));
    // Lazy expiry: available before any sweep.
    let (_, perfs) = app.call("GET", &format!("/v1/concerts/{}/performances", concert.id), &[], None).await;
    assert_eq!(perfs["performances"][0]["available_seats"], 2);
    let (_, r) =
        app.call("GET", &format!("/v1/reservations/{rid}"), &[("authorization", &bearer(&users[0]))], None).await;
    assert_eq!(r["status"], "EXPIRED");

    let (_, also) = app.hold(&users[0], concert.seat_ids[1]).await;
    assert_eq!(app.state.store.sweep_expired(app.clock.now_ms(), 10).await.unwrap(), 1, "{also}");
    assert_eq!(app.state.store.sweep_expired(app.clock.now_ms(), 10).await.unwrap(), 0);
    let (status, body) = app.hold(&users[1], concert.seat_ids[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.pay(&users[0], &rid, "late").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("HOLD_EXPIRED")));
}

async fn every_error_is_a_clean_json_4xx(backend: Backend) {
    let app = spawn_app(backend).await;
    let (users, concert) = ok(&app).await;
    let u = &users[0];
    let auth = bearer(u);
    let q = u.queue_token.clone().unwrap();
    let admin = [("x-admin-key", "dev-admin-key")];
    let a = [("authorization", auth.as_str())];
    let aq = [("authorization", auth.as_str()), ("queue-token", q.as_str())];
    let charge = [("authorization", auth.as_str()), ("idempotency-key", "k1")];
    let huge = "{\"amount\": 99999999999999999999999}";
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", "/v1/users".into(), vec![], Some("{\"name\":"), 400, "MALFORMED_JSON"),
        ("POST", "/v1/users".into(), vec![], Some("{\"name\": 5}"), 400, "INVALID_BODY"),
        ("POST", "/v1/users".into(), vec![], Some("{\"name\": \"\"}"), 400, "INVALID_NAME"),
        ("POST", "/v1/users".into(), vec![], Some("{\"name\": \"x\", \"admin\": true}"), 400, "INVALID_BODY"),
        ("GET", "/v1/users/me/balance".into(), vec![], None, 401, "UNAUTHORIZED"),
        (
            "GET",
            "/v1/users/me/balance".into(),
            vec![("authorization", "Bearer u.1.99999999999999.forged")],
            None,
            401,
            "UNAUTHORIZED",
        ),
        (
            "POST",
            "/v1/users/me/balance/charges".into(),
            a.to_vec(),
            Some("{\"amount\": 5}"),
            400,
            "MISSING_IDEMPOTENCY_KEY",
        ),
        (
            "POST",
            "/v1/users/me/balance/charges".into(),
            vec![("authorization", auth.as_str()), ("idempotency-key", "bad key!")],
            Some("{\"amount\": 5}"),
            400,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            "POST",
            "/v1/users/me/balance/charges".into(),
            charge.to_vec(),
            Some("{\"amount\": 0}"),
            400,
            "INVALID_AMOUNT",
        ),
        (
            "POST",
            "/v1/users/me/balance/charges".into(),
            charge.to_vec(),
            Some("{\"amount\": -5}"),
            400,
            "INVALID_AMOUNT",
        ),
        ("POST", "/v1/users/me/balance/charges".into(), charge.to_vec(), Some(huge), 400, "INVALID_BODY"),
        (
            "POST",
            "/v1/users/me/balance/charges".into(),
            charge.to_vec(),
            Some("{\"amount\": 9223372036854775807}"),
            400,
            "INVALID_AMOUNT",
        ),
        (
            "POST",
            "/v1/users/me/balance/charges".into(),
            charge.to_vec(),
            Some("{\"amount\": \"10\"}"),
            400,
            "INVALID_BODY",
        ),
        ("POST", "/v1/admin/concerts".into(), vec![], Some("{}"), 401, "INVALID_ADMIN_KEY"),
        (
            "POST",
            "/v1/admin/concerts".into(),
            admin.to_vec(),
            Some("{\"title\":\"x\",\"performances\":[]}"),
            400,
            "INVALID_CONCERT",
        ),
        (
            "POST",
            "/v1/admin/concerts".into(),
            admin.to_vec(),
            Some(
                "{\"title\":\"x\",\"performances\":[{\"starts_at\":\"soon\",\"seats\":[{\"seat_no\":\"1\",\"grade\":\"R\",\"price\":1}]}]}",
            ),
            400,
            "INVALID_CONCERT",
        ),
        (
            "POST",
            "/v1/admin/concerts".into(),
            admin.to_vec(),
            Some(
                "{\"title\":\"x\",\"performances\":[{\"starts_at\":\"2030-01-01T00:00:00Z\",\"seats\":[{\"seat_no\":\"1\",\"grade\":\"R\",\"price\":1},{\"seat_no\":\"1\",\"grade\":\"R\",\"price\":1}]}]}",
            ),
            400,
            "INVALID_CONCERT",
        ),
        ("GET", "/v1/concerts/abc/performances".into(), vec![], None, 400, "INVALID_ID"),
        ("GET", "/v1/concerts/99999999999999999999999/performances".into(), vec![], None, 400, "INVALID_ID"),
        ("GET", "/v1/concerts/424242/performances".into(), vec![], None, 404, "CONCERT_NOT_FOUND"),
        ("GET", "/v1/queue/tokens/current".into(), vec![], None, 401, "INVALID_QUEUE_TOKEN"),
        (
            "GET",
            "/v1/queue/tokens/current".into(),
            vec![("queue-token", "q.1.1.1.AAAA")],
            None,
            401,
            "INVALID_QUEUE_TOKEN",
        ),
        ("POST", "/v1/queue/tokens".into(), a.to_vec(), Some("{\"concert_id\": \"one\"}"), 400, "INVALID_BODY"),
        ("GET", format!("/v1/performances/{}/seats", 777_777), aq.to_vec(), None, 404, "PERFORMANCE_NOT_FOUND"),
        ("POST", "/v1/reservations".into(), aq.to_vec(), Some("{\"seat_id\": 987654}"), 404, "SEAT_NOT_FOUND"),
        ("POST", "/v1/reservations".into(), a.to_vec(), Some("{\"seat_id\": 1}"), 401, "INVALID_QUEUE_TOKEN"),
        ("POST", "/v1/reservations".into(), aq.to_vec(), Some("{\"seat_id\": [1,2]}"), 400, "INVALID_BODY"),
        ("GET", "/v1/reservations/not-a-uuid".into(), a.to_vec(), None, 404, "RESERVATION_NOT_FOUND"),
        ("GET", format!("/v1/reservations/{}", uuid::Uuid::now_v7()), a.to_vec(), None, 404, "RESERVATION_NOT_FOUND"),
        (
            "DELETE",
            format!("/v1/reservations/{}", uuid::Uuid::now_v7()),
            a.to_vec(),
            None,
            404,
            "RESERVATION_NOT_FOUND",
        ),
        (
            "POST",
            "/v1/payments".into(),
            vec![("authorization", auth.as_str()), ("queue-token", q.as_str()), ("idempotency-key", "p")],
            Some(&*Box::leak(format!("{{\"reservation_id\":\"{}\"}}", uuid::Uuid::now_v7()).into_boxed_str())),
            404,
            "RESERVATION_NOT_FOUND",
        ),
        ("PUT", "/v1/users".into(), vec![], None, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v2/nothing".into(), vec![], None, 404, "ROUTE_NOT_FOUND"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (got, value) = match body {
            Some(b) => app.call_raw(method, &path, &headers, b).await,
            None => app.call(method, &path, &headers, None).await,
        };
        assert_eq!(
            (got.as_u16(), value["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body:?} -> {value}"
        );
        assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Body over the limit, and a body without a JSON content type.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(100_000));
    let (status, value) = app.call_raw("POST", "/v1/users", &[], &big).await;
    assert_eq!((status.as_u16(), value["error"]["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    let (status, value) = support::send(app.router.clone(), "POST", "/v1/users", &[], None).await;
    assert_eq!((status.as_u16(), value["error"]["code"].as_str()), (415, Some("UNSUPPORTED_MEDIA_TYPE")));

    // A seat, or a seat map, of another concert is unknown to this queue
    // token, whether the map is fresh or cached.
    let other = app.create_concert(1, 1).await;
    for _ in 0..2 {
        let path = format!("/v1/performances/{}/seats", other.performance_id);
        let (status, body) = app.call("GET", &path, &aq, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("PERFORMANCE_NOT_FOUND")));
    }
    let (status, body) = app.hold(u, other.seat_ids[0]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("SEAT_NOT_FOUND")));
    let _ = concert;
    // None of it changed any money.
    assert_eq!(app.balance(u).await, 0);
    assert!(app.state.store.audit().await.unwrap().violations().is_empty());
}

async fn nobody_can_read_or_change_another_users_data(backend: Backend) {
    let app = spawn_app(backend).await;
    let (users, concert) = ok(&app).await;
    let (owner, other) = (&users[0], &users[1]);
    let (_, held) = app.hold(owner, concert.seat_ids[0]).await;
    let rid = held["reservation_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/reservations/{rid}");
    let (status, _) = app.call("GET", &path, &[("authorization", &bearer(other))], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.call("DELETE", &path, &[("authorization", &bearer(other))], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.charge(other, 1_000_000, "rich").await;
    let (status, body) = app.pay(other, &rid, "steal").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("RESERVATION_NOT_PAYABLE")));
    // Another user's queue token is refused.
    let mut stolen = other.clone();
    stolen.queue_token = owner.queue_token.clone();
    let (status, body) = app.hold(&stolen, concert.seat_ids[1]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("QUEUE_TOKEN_MISMATCH")));
    assert_eq!(app.balance(other).await, 1_000_000);
    let (status, r) = app.call("DELETE", &path, &[("authorization", &bearer(owner))], None).await;
    assert_eq!((status, r["status"].as_str()), (StatusCode::OK, Some("RELEASED")));
    let (status, body) = app.call("DELETE", &path, &[("authorization", &bearer(owner))], None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("RESERVATION_NOT_HELD")));
}

async fn restarting_loses_nothing_that_was_acknowledged(backend: Backend) {
    let app = spawn_app(backend).await;
    let (users, concert) = ok(&app).await;
    let u = &users[0];
    app.charge(u, 200_000, "c").await;
    let (_, held) = app.hold(u, concert.seat_ids[0]).await;
    let rid = held["reservation_id"].as_str().unwrap().to_owned();
    let (status, paid) = app.pay(u, &rid, "p").await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, second) = app.hold(&users[1], concert.seat_ids[1]).await;
    let resources = app.resources.clone();
    let clock: Clock = app.clock.clone();
    app.state.store.close().await;
    drop(app);

    let restarted = spawn_instance(resources, clock, |s| s).await;
    assert_eq!(restarted.balance(u).await, 150_000);
    let (_, r) =
        restarted.call("GET", &format!("/v1/reservations/{rid}"), &[("authorization", &bearer(u))], None).await;
    assert_eq!((r["status"].as_str(), &r["payment_id"]), (Some("PAID"), &paid["payment_id"]));
    let rid2 = second["reservation_id"].as_str().unwrap();
    let (_, r2) = restarted
        .call("GET", &format!("/v1/reservations/{rid2}"), &[("authorization", &bearer(&users[1]))], None)
        .await;
    assert_eq!(r2["status"], "HELD");
    let (status, replay) = restarted.charge(u, 200_000, "c").await;
    assert_eq!((status, restarted.balance(u).await), (StatusCode::CREATED, 150_000), "{replay}");
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let doc: Value = serde_json::from_str(booking::http::ops_openapi()).expect("openapi.json is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in
            ops.as_object().unwrap().keys().filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
        {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut implemented: Vec<(String, String)> =
        booking::http::routes().iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    implemented.sort();
    assert_eq!(documented, implemented);

    // And every listed route is really served: none answers ROUTE_NOT_FOUND
    // or METHOD_NOT_ALLOWED.
    let app = spawn_app(Backend::SqliteMemory).await;
    for (method, path) in implemented {
        let concrete =
            path.replace("{concert_id}", "1").replace("{performance_id}", "1").replace("{reservation_id}", "x");
        let (status, body) = app.call(&method, &concrete, &[], None).await;
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && body["error"]["code"] != "ROUTE_NOT_FOUND",
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
}

/// A Redis server of the test's own, so it can be stopped and started.
struct OwnRedis {
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let redis = Self { port };
        redis.start_again();
        redis
    }

    /// Starts (again) on the same port: an empty Redis, as after a crash.
    fn start_again(&self) {
        let port = self.port;
        let status = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .args(["--pidfile", &format!("/tmp/booking-test-redis-{port}.pid")])
            .status()
            .expect("redis-server is installed");
        assert!(status.success());
        self.wait(true);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    }

    /// Polls until the server's state is `up`, for at most ten seconds.
    fn wait(&self, up: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.answers() != up {
            assert!(
                std::time::Instant::now() < deadline,
                "redis on {} did not become {}",
                self.port,
                if up { "up" } else { "down" }
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self) {
        let _ =
            std::process::Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown", "nosave"]).output();
        self.wait(false);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

use support::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admitted_users_book_and_pay_through_a_redis_outage_and_the_queue_recovers() {
    let redis = OwnRedis::start(free_port());
    let url = redis.url();
    let app = support::spawn_app_with(Backend::PostgresRedis, |s| booking::settings::Settings {
        redis_url: Some(booking::settings::Secret::new(url.clone())),
        ..s
    })
    .await;
    let concert = app.create_concert(3, 1_000).await;
    let users = app.active_users(1, concert.id).await;
    let user = &users[0];
    app.charge(user, 5_000, "fund").await;
    let q = user.queue_token.clone().unwrap();
    let (_, current) = app.call("GET", "/v1/queue/tokens/current", &[("queue-token", &q)], None).await;
    assert_eq!(current["status"], "ACTIVE");

    redis.stop();
    let (status, _) = app.call("GET", "/readyz", &[], None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Already admitted: can still hold and pay.
    let (status, held) = app.hold(user, concert.seat_ids[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let (status, paid) = app.pay(user, held["reservation_id"].as_str().unwrap(), "pay").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    // New entries are turned away with a hint to retry.
    let mut newcomer = app.create_user("late").await;
    let (status, body) = app.enter_queue(&mut newcomer, concert.id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("QUEUE_UNAVAILABLE")));
    let router = app.router.clone();
    let response = tower::ServiceExt::oneshot(
        router,
        axum::http::Request::post("/v1/queue/tokens")
            .header("authorization", bearer(&newcomer))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json!({ "concert_id": concert.id }).to_string()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(response.headers().contains_key("retry-after"));

    // Redis returns (empty: it keeps nothing on disk) and the service heals by itself.
    redis.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = app.enter_queue(&mut newcomer, concert.id).await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "queue did not recover: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = app.state.store.audit().await.unwrap();
    assert!(audit.violations().is_empty(), "{audit:?}");
    assert_eq!(audit.payments, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_and_stops_within_the_grace_period() {
    let resources = support::Resources::new(Backend::SqliteMemory).await;
    let settings = booking::settings::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        shutdown_grace: Duration::from_secs(2),
        ..resources.settings()
    };
    let application = booking::Application::build(settings).await.unwrap();
    let port = application.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    // A real request over TCP is served.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    stop.send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "server stops cleanly within the grace period: {finished:?}");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "no longer listening");
}

/// The value of one sample in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn known_requests_move_the_metrics_by_exactly_their_count(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(2, 100).await;
    let users = app.active_users(2, concert.id).await;
    let metrics = || async { app.call("GET", "/metrics", &[], None).await.1.as_str().unwrap().to_owned() };
    let before = metrics().await;
    let (_, held) = app.hold(&users[0], concert.seat_ids[0]).await;
    app.hold(&users[1], concert.seat_ids[0]).await;
    app.hold(&users[1], 987_654).await;
    app.charge(&users[0], 100, "c1").await;
    app.charge(&users[0], 100, "c1").await;
    app.pay(&users[0], held["reservation_id"].as_str().unwrap(), "p1").await;
    app.pay(&users[0], held["reservation_id"].as_str().unwrap(), "p1").await;
    for _ in 0..3 {
        app.call("GET", "/v1/concerts", &[], None).await;
    }
    app.call("GET", "/v1/concerts/abc/performances", &[], None).await;
    let after = metrics().await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(r#"http_server_requests_total{method="GET",route="/v1/concerts",status="200"}"#), 3.0);
    assert_eq!(delta(r#"http_server_request_duration_seconds_count{method="GET",route="/v1/concerts"}"#), 3.0);
    assert_eq!(
        delta(
            r#"http_server_requests_total{method="GET",route="/v1/concerts/{concert_id}/performances",status="400"}"#
        ),
        1.0
    );
    assert_eq!(delta(r#"http_server_requests_total{method="POST",route="/v1/reservations",status="201"}"#), 1.0);
    assert_eq!(delta(r#"http_server_requests_total{method="POST",route="/v1/reservations",status="409"}"#), 1.0);
    assert_eq!(delta(r#"booking_hold_attempts_total{outcome="held"}"#), 1.0);
    assert_eq!(
        delta(r#"booking_hold_attempts_total{outcome="rejected_fast"}"#)
            + delta(r#"booking_hold_attempts_total{outcome="conflict"}"#),
        1.0
    );
    assert_eq!(delta(r#"booking_hold_attempts_total{outcome="not_found"}"#), 1.0);
    assert_eq!(delta("booking_balance_charges_total"), 1.0, "a replayed charge is not a second charge");
    assert_eq!(delta(r#"booking_payments_total{outcome="paid"}"#), 1.0);
    assert_eq!(delta(r#"booking_payments_total{outcome="replayed"}"#), 1.0);
    assert_eq!(delta(r#"db_operation_duration_seconds_count{operation="pay"}"#), 1.0);
    assert!(after.contains("process_resident_memory_bytes"));
    assert_eq!(sample(&after, "booking_queue_active"), 1.0, "the payer's place ended");
}
