//! The `booking` binary's own commands on real processes: what `serve` does
//! when it cannot bind, and what `audit` checks and says. Each test runs in
//! a scratch directory of its own, with its own database.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use testkit::{TempDir, postgres_base, unique};

/// Runs `booking <args>` in `dir` with `env`, and none of the caller's
/// booking settings; kills it if it has not exited within 60 s.
fn booking(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_booking"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("BOOKING_LISTEN")
        .env("OTEL_SDK_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("booking binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("booking runs").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("booking {args:?} did not exit: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("booking output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `url` with `password` in its user part (replacing any it had).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = user.split(':').next().unwrap_or(user);
    format!("{scheme}://{user}:{password}@{host}")
}

/// The password in `url`'s user part, if it has one.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.split_once('@')?.0.split_once(':').map(|(_, password)| password)
}

/// A PostgreSQL database named at random on the test server, dropped with it.
async fn postgres_database(migrated: bool) -> testkit::Database {
    let db = testkit::Database::create("booking_cli").await;
    if migrated {
        booking::store::Store::connect(&db.url, 1).await.expect("migrated").close().await;
    }
    db
}

#[test]
fn serve_that_cannot_bind_names_the_address_and_leaves_no_database() {
    let dir = TempDir::new("booking-bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().unwrap().to_string();
    let output = booking(&dir, &["serve"], &[("BOOKING_LISTEN", &addr)]);
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains(&format!("listening on {addr} (BOOKING_LISTEN): Address already in use")), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "the cause is printed once: {err}");
    let left: Vec<_> = std::fs::read_dir(&*dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "a failed start leaves nothing behind: {left:?}");
}

#[test]
fn audit_of_a_missing_sqlite_file_fails_and_creates_nothing() {
    let dir = TempDir::new("booking-audit");
    // The default DATABASE_URL, sqlite://booking.db, from a directory without one.
    let output = booking(&dir, &["audit"], &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    let file = dir.path("booking.db");
    assert!(err.contains(&format!("cannot audit DATABASE_URL=sqlite://booking.db ({})", file.display())), "{err}");
    assert!(err.contains("no file at"), "{err}");
    assert!(output.stdout.is_empty(), "no counts for a database that is not there");
    assert!(
        std::fs::read_dir(&*dir).unwrap().next().is_none(),
        "audit created {:?}",
        std::fs::read_dir(&*dir).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn audit_of_a_sqlite_file_without_schema_fails_and_leaves_it_as_it_was() {
    let dir = TempDir::new("booking-audit");
    std::fs::write(dir.path("empty.db"), b"").unwrap();
    let output = booking(&dir, &["audit"], &[("DATABASE_URL", "sqlite://empty.db")]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("no booking schema") && err.contains("booking migrate"), "{err}");
    assert_eq!(std::fs::metadata(dir.path("empty.db")).unwrap().len(), 0, "audit migrated nothing");
}

#[test]
fn audit_of_a_migrated_sqlite_file_passes_and_names_the_file() {
    let dir = TempDir::new("booking-audit");
    let url = [("DATABASE_URL", "sqlite://booking.db")];
    assert!(booking(&dir, &["migrate"], &url).status.success());
    let output = booking(&dir, &["audit"], &url);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let counts: serde_json::Value = serde_json::from_slice(&output.stdout).expect("counts as JSON on stdout");
    assert_eq!(counts["seats_sold_twice"], 0);
    let file = dir.path("booking.db");
    assert!(err.contains(&format!("audited sqlite://booking.db ({}): every invariant holds", file.display())), "{err}");
}

#[tokio::test]
async fn audit_of_a_postgres_database_that_does_not_exist_fails() {
    let dir = TempDir::new("booking-audit");
    let base = postgres_base();
    let (root, _) = base.rsplit_once('/').unwrap();
    let name = format!("booking_absent_{}", unique());
    let url = format!("{root}/{name}");
    let output = booking(&dir, &["audit"], &[("DATABASE_URL", &url)]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("database \"{name}\" does not exist")), "{err}");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await.unwrap();
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(created, 0, "audit created the database");
}

#[tokio::test]
async fn audit_of_a_postgres_database_without_schema_fails() {
    let dir = TempDir::new("booking-audit");
    let db = postgres_database(false).await;
    let output = booking(&dir, &["audit"], &[("DATABASE_URL", &db.url)]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("no booking schema"), "{err}");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, 0, "audit ran migrations");
}

#[tokio::test]
async fn audit_names_the_postgres_database_it_checked_with_the_password_masked() {
    let dir = TempDir::new("booking-audit");
    let db = postgres_database(true).await;
    // The test server trusts loopback, so any password connects; a server
    // that wants one has it in TEST_DATABASE_URL already.
    let secret = password_of(&db.url).map_or_else(|| format!("pw{}", unique()), str::to_owned);
    let url = with_password(&db.url, &secret);
    let output = booking(&dir, &["audit"], &[("DATABASE_URL", &url)]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(err.contains(&format!("audited {}: every invariant holds", with_password(&db.url, "***"))), "{err}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!err.contains(&secret) && !out.contains(&secret), "the password leaked: {err}{out}");
}
