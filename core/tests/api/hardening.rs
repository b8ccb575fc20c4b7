//! What a hostile or careless client meets: secrets that cannot be guessed or
//! read off the repository, bounded metric labels, slow clients cut off
//! without paging anyone, per-client limits, and queue state that does not
//! outlive its users. Tests about the wire go over a real socket.

use std::time::Duration;

use axum::http::StatusCode;
use booking::settings::{PUBLIC_SECRETS, Secret, Settings};
use serde_json::{Value, json};
use testkit::exchange;

use super::support::{Backend, TestApp, bearer, series_value, spawn_app, spawn_app_with, spawn_instance};

/// How long a test waits for a condition before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(PATIENCE).build().unwrap()
}

/// Every series of `/metrics`: names with labels, without values.
fn series(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, _)| s.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unknown_methods_are_one_other_and_add_no_series() {
    let app = spawn_app(Backend::SqliteMemory).await;
    let served = app.serve().await;
    let client = http();
    let send = |method: String| {
        let request =
            client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), served.url("/v1/concerts"));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(send("BREW".into()).await, reqwest::StatusCode::METHOD_NOT_ALLOWED);
    // The first scrape is itself counted by the next one.
    app.metrics_text().await;
    let before = app.metrics_text().await;
    assert!(before.contains("method=\"_OTHER\""), "unknown methods are counted as _OTHER");
    assert!(!before.contains("BREW"));
    for i in 0..10_000 {
        assert_eq!(send(format!("M{i:05}")).await, reqwest::StatusCode::METHOD_NOT_ALLOWED);
    }
    let after = app.metrics_text().await;
    let added: Vec<_> = series(&after).difference(&series(&before)).cloned().collect();
    assert!(added.is_empty(), "10,000 new methods added series: {added:?}");
    let other = "method=\"_OTHER\",route=\"/v1/concerts\",status=\"405\"";
    assert_eq!(series_value(&after, "http_server_requests_total", other), 10_001.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_with_a_408_that_no_error_rate_counts() {
    let app = spawn_app_with(Backend::SqliteMemory, |s| Settings {
        request_timeout: Duration::from_secs(4),
        http: serving::Limits {
            header_read_timeout: Duration::from_millis(700),
            body_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            max_connections: 64,
        },
        ..s
    })
    .await;
    let served = app.serve().await;

    // A body trickled past its deadline: 408 with the JSON error body.
    let answer = exchange(
        served.addr,
        b"POST /v1/users HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"na",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {body}"));
    assert_eq!(error["error"]["code"], "REQUEST_TIMEOUT");

    // A head that never ends: the connection is closed, and counted.
    let answer = exchange(served.addr, b"GET /v1/concerts HTTP/1.1\r\nhost: t\r\n").await;
    assert!(!answer.contains("200 OK"), "{answer}");

    let metrics = app.metrics_text().await;
    assert_eq!(
        series_value(&metrics, "http_server_requests_total", "method=\"POST\",route=\"/v1/users\",status=\"408\""),
        1.0
    );
    let server_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("http_server_requests_total{") && l.contains("status=\"5"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(server_errors, 0.0, "a slow client is not a server error:\n{metrics}");
    assert_eq!(series_value(&metrics, "http_server_connections_closed_total", "reason=\"header_timeout\""), 1.0);
    assert_eq!(series_value(&metrics, "http_server_connections_max", ""), 64.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_limited_per_client_and_only_a_trusted_proxy_names_the_client() {
    let app = spawn_app_with(Backend::SqliteMemory, |s| Settings { signup_rate_per_minute: Some(3), ..s }).await;
    let served = app.serve().await;
    let client = http();
    let sign_up = |forwarded_for: Option<&'static str>| {
        let mut request = client.post(served.url("/v1/users")).json(&json!({ "name": "kim" }));
        if let Some(xff) = forwarded_for {
            request = request.header("x-forwarded-for", xff);
        }
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let status = response.status();
            (status, retry_after, response.json::<Value>().await.unwrap())
        }
    };
    for _ in 0..3 {
        assert_eq!(sign_up(None).await.0, reqwest::StatusCode::CREATED);
    }
    let (status, retry_after, body) = sign_up(None).await;
    assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(retry_after.as_deref(), Some("20"), "one sign-up every 20 s at 3 a minute");
    // Naming another address does not help a client whose proxy is not trusted.
    assert_eq!(sign_up(Some("198.51.100.1")).await.0, reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(series_value(&app.metrics_text().await, "booking_client_limited_total", "limit=\"signup\""), 2.0);
    drop(served);

    // Behind a trusted proxy, each forwarded client has its own allowance.
    let proxied = spawn_instance(app.resources.clone(), app.clock.clone(), |s| Settings {
        signup_rate_per_minute: Some(3),
        trusted_proxies: "127.0.0.1".parse().unwrap(),
        ..s
    })
    .await;
    let served = proxied.serve().await;
    let sign_up = |xff: &'static str| {
        let request =
            client.post(served.url("/v1/users")).header("x-forwarded-for", xff).json(&json!({ "name": "lee" }));
        async move { request.send().await.unwrap().status() }
    };
    for _ in 0..3 {
        assert_eq!(sign_up("198.51.100.1").await, reqwest::StatusCode::CREATED);
    }
    assert_eq!(sign_up("198.51.100.1").await, reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sign_up("198.51.100.2").await, reqwest::StatusCode::CREATED);
    // A client's own first hop is not believed: the proxy appended the real one.
    assert_eq!(sign_up("203.0.113.50, 198.51.100.1").await, reqwest::StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_keys_are_throttled_per_client_until_the_minute_passes() {
    let app = spawn_app(Backend::SqliteMemory).await;
    let served = app.serve().await;
    let client = http();
    let admin = |key: &'static str| {
        let request = client.get(served.url("/v1/admin/queue/admission")).header("x-admin-key", key);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(admin("dev-admin-key").await, reqwest::StatusCode::OK);
    for _ in 0..booking::http::ADMIN_FAILURES_PER_MINUTE {
        assert_eq!(admin("guess").await, reqwest::StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        admin("dev-admin-key").await,
        reqwest::StatusCode::TOO_MANY_REQUESTS,
        "even the right key, until the minute passes"
    );
    assert_eq!(series_value(&app.metrics_text().await, "booking_client_limited_total", "limit=\"admin_key\""), 1.0);
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(admin("dev-admin-key").await, reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_secret_rotation_old_tokens_still_work_and_new_ones_use_the_new_secret() {
    let before = spawn_app(Backend::SqliteMemory).await;
    let old_user = before.create_user("kim").await;
    let rotated = spawn_instance(before.resources.clone(), before.clock.clone(), |s| Settings {
        token_secret: Secret::new("a-new-secret-after-the-old-one-leaked"),
        token_secret_previous: Some(s.token_secret.clone()),
        ..s
    })
    .await;
    assert_eq!(
        rotated.call("GET", "/v1/users/me/balance", &[("authorization", &bearer(&old_user))], None).await.0,
        StatusCode::OK
    );
    let new_user = rotated.create_user("lee").await;
    let (status, _) = before.call("GET", "/v1/users/me/balance", &[("authorization", &bearer(&new_user))], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "new tokens are signed with the new secret only");
    let retired = spawn_instance(before.resources.clone(), before.clock.clone(), |s| Settings {
        token_secret: Secret::new("a-new-secret-after-the-old-one-leaked"),
        ..s
    })
    .await;
    let (status, _) = retired.call("GET", "/v1/users/me/balance", &[("authorization", &bearer(&old_user))], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "once the previous secret is removed, its tokens end");
}

/// Every value on a line that names booking's admin key or token secret and
/// looks like a generated secret: long enough to pass the guard,
/// only the characters of base64, hex or a UUID, with letters and digits
/// (which leaves out identifiers such as `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn secret_candidates(line: &str) -> Vec<String> {
    let lower = line.to_ascii_lowercase();
    let names = ["admin_key", "admin-key", "token_secret"];
    if !names.iter().any(|n| lower.contains(n)) {
        return Vec::new();
    }
    line.split(|c: char| c.is_whitespace() || "\"'`=,;()[]{}<>|".contains(c))
        .map(|t| t.trim_matches(|c: char| ":.".contains(c)))
        .filter(|t| t.len() >= booking::settings::MIN_SECRET_BYTES)
        .filter(|t| t.chars().all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
        .filter(|t| t.chars().any(|c| c.is_ascii_digit()) && t.chars().any(|c| c.is_ascii_alphabetic()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_secret_written_in_the_repository_passes_the_guard() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git is installed");
    assert!(files.status.success(), "git ls-files: {}", String::from_utf8_lossy(&files.stderr));
    let mut found = Vec::new();
    for file in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let path = root.join(String::from_utf8_lossy(file).as_ref());
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (n, line) in text.lines().enumerate() {
            for candidate in secret_candidates(line) {
                if !PUBLIC_SECRETS.iter().any(|p| p.eq_ignore_ascii_case(&candidate)) {
                    found.push(format!("{}:{}: {candidate}", String::from_utf8_lossy(file), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "values that would pass as ADMIN_KEY/TOKEN_SECRET are written in the repository (list them in PUBLIC_SECRETS or remove them):\n{}",
        found.join("\n")
    );
    // The scan itself sees what it looks for.
    // (Built here, or this very line would be a finding.)
    let sample = "0123456789abcdef".repeat(2) + "01";
    assert_eq!(secret_candidates(&format!("ADMIN_KEY={sample}")), vec![sample]);
    assert!(secret_candidates("ADMIN_KEY=${ADMIN_KEY:?set ADMIN_KEY (openssl rand -base64 32)}").is_empty());
}

/// A user admitted to the lines of both concerts.
async fn admitted_to(app: &TestApp, concerts: [i64; 2]) -> [super::support::User; 2] {
    let mut first = app.create_user("kim").await;
    app.enter_queue(&mut first, concerts[0]).await;
    let mut second = first.clone();
    app.enter_queue(&mut second, concerts[1]).await;
    app.admit().await;
    [first, second]
}

pub async fn a_queue_place_of_another_concert_cannot_pay_for_a_seat(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (app.create_concert(2, 10_000).await, app.create_concert(2, 10_000).await);
    let [in_a, in_b] = admitted_to(&app, [a.id, b.id]).await;
    app.charge(&in_a, 100_000, "c1").await;
    let (status, held) = app.hold(&in_b, b.seat_ids[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let reservation = held["reservation_id"].as_str().unwrap();
    let (status, body) = app.pay(&in_a, reservation, "p1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("QUEUE_TOKEN_WRONG_CONCERT")),
        "{body}"
    );
    assert_eq!(app.balance(&in_a).await, 100_000, "nothing was charged");
    let (status, paid) = app.pay(&in_b, reservation, "p2").await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
}

pub async fn users_who_paid_or_lapsed_leave_nothing_in_the_queue(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(40, 1_000).await;
    let entries = || async { app.state.queue.entries().await.unwrap() };
    assert_eq!(entries().await, 0);
    for (i, seat) in concert.seat_ids.iter().take(20).enumerate() {
        let mut user = app.create_user(&format!("fan{i}")).await;
        app.enter_queue(&mut user, concert.id).await;
        app.admit().await;
        app.charge(&user, 1_000, "c").await;
        let (_, held) = app.hold(&user, *seat).await;
        let (status, paid) = app.pay(&user, held["reservation_id"].as_str().unwrap(), "p").await;
        assert_eq!(status, StatusCode::CREATED, "{paid}");
        assert_eq!(entries().await, 0, "after payment {i}");
    }
    // Twenty admitted users who never pay: their windows end, and so does
    // everything the queue kept for them.
    let lapsing = app.active_users(20, concert.id).await;
    assert!(entries().await >= lapsing.len());
    app.clock.advance(app.state.settings.active_window);
    app.admit().await;
    assert_eq!(entries().await, 0, "lapsed places left state behind");
}

pub async fn the_flags_of_one_seat_land_in_the_order_they_were_made(backend: Backend) {
    let app = spawn_app(backend).await;
    let queue = &app.state.queue;
    let concert = app.create_concert(1, 1).await;
    let users = app.active_users(1, concert.id).await;
    let place = app.state.keys.verify_queue(users[0].queue_token.as_deref().unwrap()).unwrap();
    let now = app.clock.now_ms();
    // A hold's flag, then its release, for many seats at once: the release
    // must win every time, or a free seat would be refused until the hold's
    // time was up.
    for seat in 1..=2_000 {
        queue.remember_seat(concert.id, seat, booking::queue::SeatFlag::HeldUntil(now + 300_000), now);
        queue.forget_seat(concert.id, seat).await;
    }
    queue.settle(PATIENCE).await;
    let mut still_flagged = Vec::new();
    for seat in 1..=2_000 {
        if queue.gate(place, Some(seat), app.clock.now_ms()).await.unwrap().seat_taken {
            still_flagged.push(seat);
        }
    }
    assert!(
        still_flagged.is_empty(),
        "{} seats still flagged after their release, e.g. {:?}",
        still_flagged.len(),
        &still_flagged[..still_flagged.len().min(5)]
    );
}

pub async fn idempotency_keys_past_their_retention_are_deleted(backend: Backend) {
    let app = spawn_app_with(backend, |s| Settings { idempotency_ttl: Duration::from_secs(3600), ..s }).await;
    let user = app.create_user("kim").await;
    assert_eq!(app.charge(&user, 1_000, "k1").await.0, StatusCode::CREATED);
    assert_eq!(booking::background::prune_once(&app.state).await, 0, "a fresh key stays");
    assert_eq!(app.charge(&user, 2_000, "k1").await.0, StatusCode::UNPROCESSABLE_ENTITY, "reused within its retention");
    app.clock.advance(app.state.settings.idempotency_ttl + Duration::from_secs(1));
    assert_eq!(booking::background::prune_once(&app.state).await, 1);
    let (status, body) = app.charge(&user, 2_000, "k1").await;
    assert_eq!(status, StatusCode::CREATED, "past its retention the key is free again: {body}");
    assert_eq!(app.balance(&user).await, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_sessions_carry_the_application_name_the_runbooks_look_for() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let name: (String,) =
        sqlx::query_as("SELECT application_name::text FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            .fetch_one(app.state.store.pool())
            .await
            .unwrap();
    assert_eq!(name.0, booking::store::APPLICATION_NAME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_to_start_off_loopback_with_a_published_secret() {
    let strong = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    for placeholder in PUBLIC_SECRETS {
        let settings = Settings {
            listen: "0.0.0.0:0".parse().unwrap(),
            database_url: Secret::new("sqlite::memory:"),
            admin_key: Secret::new(*placeholder),
            token_secret: Secret::new(strong.clone()),
            ..Settings::default()
        };
        let refused = booking::Application::build(settings).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("ADMIN_KEY") && !refused.contains(placeholder), "{placeholder}: {refused}");
    }
}
