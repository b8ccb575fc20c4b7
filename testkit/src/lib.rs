//! Test support shared by the workspace's crates, so each crate's tests
//! talk to the real servers the same way: a port nothing listens on, a
//! scratch directory, a PostgreSQL database of the test's own, a child
//! process that dies with the test, the workspace's built binaries.
//!
//! Dev-only (`publish = false`); no product code depends on it.

use std::{path::PathBuf, process::Child};

use sqlx::Connection;

mod pg;
mod redis_cluster;
pub mod rotel;
pub use pg::PgCluster;
pub use redis_cluster::{Paused, RedisCluster, info_field, redis_cli};

/// The PostgreSQL tests create their databases on
/// (`TEST_DATABASE_URL`, default the local server's `postgres` database).
pub fn postgres_base() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use (`TEST_REDIS_URL`, default the local server), each
/// under a key prefix of its own.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh random id, for names that must not collide between tests.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A port nothing listens on. Picked at random from a wide range rather than
/// by binding port 0: the kernel hands a just-released port 0 to the next
/// process that asks, and tests run as parallel processes.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 40_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A directory removed with everything in it on drop; kept (and named on
/// stderr) when the test is failing, for a look.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{tag}-{}", unique()));
        std::fs::create_dir_all(&path).expect("temp dir created");
        Self(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Reads from `stream` until the peer closes it (or an error ends it), for
/// at most 30 s; the bytes read. Panics if the peer keeps it open longer:
/// tests of server limits wait for the server to hang up.
pub async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    out
}

/// Sends `bytes` to `addr` on a fresh connection and returns, as text, all
/// the server answered before it closed the connection.
pub async fn exchange(addr: impl tokio::net::ToSocketAddrs, bytes: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the server listens");
    stream.write_all(bytes).await.expect("the request was sent");
    String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned()
}

/// A child process killed (and reaped) on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A workspace binary next to the test executable (`target/debug/<name>`);
/// the workspace's test run builds every binary before any test runs.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug/<name>
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target/debug").join(name);
    assert!(path.exists(), "{} is missing: build the workspace first (cargo build --workspace)", path.display());
    path
}

/// A database of the test's own on the shared PostgreSQL, dropped (with its
/// sessions) on drop.
pub struct Database {
    pub name: String,
    pub url: String,
}

impl Database {
    pub async fn create(tag: &str) -> Self {
        let name = format!("{tag}_{}", unique());
        let base = postgres_base();
        let mut admin =
            sqlx::PgConnection::connect(&base).await.expect("PostgreSQL reachable (scripts/test.sh starts it)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("test database created");
        let (root, _) = base.rsplit_once('/').expect("database URL has a path");
        Self { url: format!("{root}/{name}"), name }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await; a thread with a runtime of its own can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_base()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Every flag, argument and command of `cmd` (its subcommands included)
/// that `--help` would show without a word on what it does, as
/// `command path: --flag`. The CLIs' tests want this empty.
pub fn undocumented(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = arg.get_long().map_or_else(|| format!("<{id}>"), |l| format!("--{l}"));
                out.push(format!("{path}: {name}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(format!("{path}: (the command)"));
            }
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, cmd.get_name(), &mut out);
    out
}

/// `booking serve` on its embedded defaults (SQLite at `db`, the in-process
/// queue, the dev admin key, no telemetry export) on `port`, whatever the
/// test's own environment says: a `REDIS_URL` or `ADMIN_KEY` set for CI
/// must not leak into a test that means the laptop default.
pub fn embedded_booking(db: &std::path::Path, port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(workspace_binary("booking"));
    command
        .arg("serve")
        .env("BOOKING_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(std::process::Stdio::null());
    for var in
        ["REDIS_URL", "ADMIN_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "LOKI_URL"]
    {
        command.env_remove(var);
    }
    command
}
