//! The one pool set-up of the workspace's durable stores: booking's ledger
//! (holds, payments, balances) and alerting's incidents and page outbox,
//! on SQLite (the embedded default) or PostgreSQL, through `sqlx::Any`.
//!
//! **SQLite durability: `journal_mode = WAL`, `synchronous = FULL`.** Both
//! stores hold data that must not be lost: a payment, or a page written to
//! the outbox before it is sent. With WAL, `synchronous = NORMAL` (SQLite's
//! usual advice for speed) keeps the file consistent but may roll back the
//! last commits on a power loss or an OS crash; `FULL` syncs the WAL at
//! every commit, so a commit that returned survives. It costs one fsync per
//! commit, which the single writer pays in turn. PostgreSQL's own default
//! (`synchronous_commit = on`) is the same promise.
//!
//! SQLite gets one connection: it has one writer, and one connection keeps
//! every transaction serial instead of failing with `SQLITE_BUSY` (and an
//! in-memory database alive, since that connection is never closed).

use std::time::Duration;

use sqlx::{AnyPool, any::AnyPoolOptions};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of(url: &str) -> Dialect {
        if url.starts_with("sqlite:") { Dialect::Sqlite } else { Dialect::Postgres }
    }
}

/// How long a caller waits for a connection before the store reports an
/// error (a database that is down fails requests in seconds, not hangs).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite settings of every connection (see the crate's docs).
pub const SQLITE_PRAGMAS: &str = "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

/// How a pool is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// PostgreSQL's pool size (SQLite always gets one connection).
    pub max_connections: u32,
    /// Switch a SQLite file to WAL. A process that only reads a database
    /// another one owns leaves its journal alone.
    pub wal: bool,
}

/// The pool for `url` with the workspace's settings. `url` is used as
/// given: a caller that wants a SQLite file created adds `mode=rwc`.
pub async fn set_up(url: &str, options: Options) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let sqlite = Dialect::of(url) == Dialect::Sqlite;
    AnyPoolOptions::new()
        .max_connections(if sqlite { 1 } else { options.max_connections.max(1) })
        .min_connections(if sqlite { 1 } else { 0 })
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(if sqlite { None } else { Some(Duration::from_secs(300)) })
        .max_lifetime(if sqlite { None } else { Some(Duration::from_secs(1800)) })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    let journal = if options.wal { "PRAGMA journal_mode = WAL; " } else { "" };
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{journal}{SQLITE_PRAGMAS}"))).execute(conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;

    #[tokio::test]
    async fn a_sqlite_file_is_one_connection_in_wal_with_full_sync() {
        let dir = testkit::TempDir::new("dbpool");
        let url = format!("sqlite://{}?mode=rwc", dir.path("store.db").display());
        let pool = set_up(&url, Options { max_connections: 8, wal: true }).await.unwrap();
        let pragma = async |name: &str| -> String {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}"))).fetch_one(&pool).await.unwrap();
            row.try_get::<i64, _>(0).map(|n| n.to_string()).or_else(|_| row.try_get::<String, _>(0)).unwrap()
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        assert_eq!(pragma("synchronous").await, "2", "2 is FULL");
        assert_eq!(pragma("foreign_keys").await, "1");
        assert_eq!(pool.options().get_max_connections(), 1);
        pool.close().await;
    }
}
