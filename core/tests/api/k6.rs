//! The CI smoke of the load suite: the real `booking` binary, real k6
//! scripts, and the sale's invariants checked afterwards. A correctness
//! check, not a timing gate: the thresholds are the scripts' own SLOs.

use std::process::{Command, Stdio};

use super::support::{Backend, Binary, Resources};

fn serve(resources: &Resources) -> Binary {
    // Every virtual user signs up from this one address.
    let env = [
        ("ADMISSION_BATCH", "1000".into()),
        ("OTEL_SDK_DISABLED", "true".into()),
        ("SIGNUP_RATE_PER_MINUTE", "off".into()),
    ];
    Binary::serve(resources, &env, Stdio::null())
}

fn k6(script: &str, port: u16, env: &[(&str, &str)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let summary = std::env::temp_dir().join(format!("k6-{}.json", uuid::Uuid::new_v4().simple()));
    let output = Command::new("k6")
        .current_dir(&dir)
        .args(["run", "--quiet", "--no-color", script])
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("SUMMARY", &summary)
        .envs(env.iter().copied())
        .output()
        .expect("k6 is installed (scripts/test.sh installs it)");
    let _ = std::fs::remove_file(&summary);
    assert!(
        output.status.success(),
        "k6 {script} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn audit(resources: &Resources) {
    let output = Command::new(env!("CARGO_BIN_EXE_booking"))
        .arg("audit")
        .env("DATABASE_URL", &resources.database_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "invariants broken: {}", String::from_utf8_lossy(&output.stdout));
    let audit: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(audit["payments"].as_i64().unwrap() > 0, "the run sold something: {audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k6_smoke_passes_on_the_embedded_default_and_the_sale_stays_sound() {
    let resources = Resources::new(Backend::SqliteMemory).await;
    let server = serve(&resources);
    k6("k6/smoke.js", server.port, &[]);
    drop(server);
    audit(&resources);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ticket_open_on_postgres_and_redis_passes_its_thresholds_and_sells_no_seat_twice() {
    let resources = Resources::new(Backend::PostgresRedis).await;
    let server = serve(&resources);
    k6(
        "k6/ticket-open.js",
        server.port,
        &[("USERS", "60"), ("SEATS", "40"), ("ARRIVAL_SECONDS", "2"), ("POLL_SECONDS", "0.5")],
    );
    drop(server);
    audit(&resources);
}

fn seed_and_count(resources: &Resources) -> serde_json::Value {
    let tokens = std::env::temp_dir().join(format!("tokens-{}.csv", uuid::Uuid::new_v4().simple()));
    let output = Command::new(env!("CARGO_BIN_EXE_booking"))
        .args([
            "seed",
            "--concerts",
            "3",
            "--performances",
            "2",
            "--seats",
            "50",
            "--users",
            "7",
            "--balance",
            "5000",
            "--tokens-out",
        ])
        .arg(&tokens)
        .env("DATABASE_URL", &resources.database_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines = std::fs::read_to_string(&tokens).unwrap();
    let _ = std::fs::remove_file(&tokens);
    assert_eq!(lines.lines().count(), 7);
    assert!(
        lines
            .lines()
            .all(|l| l.split_once(',').is_some_and(|(id, t)| id.parse::<i64>().is_ok() && t.starts_with("u.")))
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_loads_the_catalogue_and_funded_users_on_both_databases() {
    for backend in [Backend::SqliteMemory, Backend::PostgresRedis] {
        let resources = Resources::new(backend).await;
        let summary = seed_and_count(&resources);
        assert_eq!((summary["concerts"].as_i64(), summary["seats"].as_i64()), (Some(3), Some(300)), "{summary}");
        let store = booking::store::Store::connect(&resources.database_url, 1).await.unwrap();
        let seats: (i64,) = sqlx::query_as("SELECT count(*) FROM seats").fetch_one(store.pool()).await.unwrap();
        let vip: (i64,) =
            sqlx::query_as("SELECT count(*) FROM seats WHERE grade = 'VIP'").fetch_one(store.pool()).await.unwrap();
        assert_eq!((seats.0, vip.0), (300, 60), "{backend:?}: 20% of the seats are the hot VIP seats");
        let audit = store.audit().await.unwrap();
        assert_eq!(audit.balances_total, 35_000);
        assert!(audit.violations().is_empty(), "{audit:?}");
        store.close().await;
    }
}
