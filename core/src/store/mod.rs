//! The database: the only source of truth for who holds or owns a seat, and
//! for every balance.
//!
//! One implementation serves both backends through `sqlx::Any`: PostgreSQL in
//! production and SQLite as the embedded default. The statements are shared,
//! and the few that must differ (row locks, the batched sweeper) choose by
//! [`Dialect`], so the two backends cannot drift apart. Each backend keeps its
//! own migrations under `core/migrations/<backend>/`.

mod catalogue;
mod holds;
mod money;
mod replica;

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use sqlx::{
    AnyPool, Row,
    error::{DatabaseError, ErrorKind},
    sqlite::SqliteConnectOptions,
};

pub use catalogue::{
    ConcertSummary, CreatedConcert, NewConcert, NewPerformance, NewSeat, PerformanceSummary, SeatStatus, SeatView,
    seat_insert_sql,
};
pub use holds::{HoldRequest, Reservation, ReservationStatus, Taken};
pub use money::{ChargeReceipt, Idempotent, PaymentReceipt, ledger_sum};
pub use replica::{Replica, ReplicaHealth};

use crate::{domain::clock::Millis, metrics::StoreMetrics, settings::redact_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The `db.system.name` of OpenTelemetry's semantic conventions.
    pub fn system_name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgresql",
            Dialect::Sqlite => "sqlite",
        }
    }
}

/// What the booking rules can refuse, and the one variant for everything else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the seat is not available")]
    SeatUnavailable,
    #[error("the per-performance hold limit is reached")]
    HoldLimitReached,
    #[error("the hold has expired")]
    HoldExpired,
    #[error("the reservation cannot be paid")]
    NotPayable,
    #[error("the reservation is not held")]
    NotHeld,
    #[error("the reservation is of another concert than the queue place")]
    OtherConcert,
    #[error("the balance does not cover the price")]
    InsufficientBalance { balance: i64, price: i64 },
    #[error("the idempotency key was used for a different request")]
    IdempotencyKeyReused,
    #[error("a constraint refused the change: {0}")]
    Constraint(String),
    /// The cause is in the text, not `source()`: logs that show only the
    /// error's text (`hold sweep failed error=...`) still say what failed.
    #[error("database: {}", sqlx_cause(.0))]
    Database(sqlx::Error),
}

/// Why [`Store::open_existing`] found nothing to work on.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No SQLite file at the path, or no PostgreSQL database of that name.
    #[error("{0}")]
    Missing(String),
    #[error("it has no booking schema (no migrations applied; `booking migrate` creates it)")]
    NoSchema,
    #[error("its schema is older than this booking: migrations {0:?} are not applied (`booking migrate` applies them)")]
    SchemaBehind(Vec<i64>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // A violated constraint is the database refusing bad input; report it
        // as such, not as an outage.
        if let sqlx::Error::Database(db) = &e
            && matches!(
                db.kind(),
                ErrorKind::UniqueViolation | ErrorKind::CheckViolation | ErrorKind::ForeignKeyViolation
            )
        {
            return StoreError::Constraint(constraint_name(db.as_ref()));
        }
        StoreError::Database(e)
    }
}

/// What the database said, without sqlx's "error returned from database:"
/// and PostgreSQL's source line number (`at line 948` of its own C code).
fn sqlx_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

fn constraint_name(db: &dyn DatabaseError) -> String {
    db.constraint().map(str::to_owned).unwrap_or_else(|| db.message().to_owned())
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Pool figures for the metrics sampler.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub max: u32,
    pub size: u32,
    pub idle: u32,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    max_connections: u32,
    metrics: Option<StoreMetrics>,
    /// Where catalogue reads go while it is healthy (`DATABASE_READ_URL`).
    replica: Option<std::sync::Arc<Replica>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

impl Store {
    /// Connects and migrates. A `sqlite:` URL creates the file when missing.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let store = Self::open(url, max_connections, Access::CreateAndMigrate).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to a database that must already exist and carry this
    /// build's schema, and changes nothing: no SQLite file is created, no
    /// migration runs, the journal mode is left as it is. For commands that
    /// only look (`booking audit`), which must fail rather than check an
    /// empty database they made themselves.
    pub async fn open_existing(url: &str, max_connections: u32) -> Result<Self, OpenError> {
        if let Some(path) = sqlite_file(url)
            && !path.exists()
        {
            return Err(OpenError::Missing(format!(
                "no file at {} (a relative sqlite:// path is read from the current directory; DATABASE_URL=sqlite:///absolute/path/booking.db names one elsewhere)",
                absolute(&path).display()
            )));
        }
        let store = match Self::open(url, max_connections, Access::Existing).await {
            // 3D000: invalid_catalog_name, PostgreSQL's "database does not exist".
            Err(StoreError::Database(sqlx::Error::Database(db))) if db.code().as_deref() == Some("3D000") => {
                return Err(OpenError::Missing(db.message().to_owned()));
            }
            other => other?,
        };
        let missing = store.unapplied_migrations().await?;
        if missing.len() == store.migrator().iter().filter(|m| !m.migration_type.is_down_migration()).count() {
            return Err(OpenError::NoSchema);
        }
        if !missing.is_empty() {
            return Err(OpenError::SchemaBehind(missing));
        }
        Ok(store)
    }

    async fn open(url: &str, max_connections: u32, access: Access) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let (dialect, url, max_connections) = if url.starts_with("sqlite:") {
            let url = match access {
                Access::CreateAndMigrate if !(url.contains("mode=") || url.contains(":memory:")) => {
                    format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
                }
                Access::CreateAndMigrate => url.to_owned(),
                // sqlx opens without create unless told `mode=rwc`.
                Access::Existing => url.replace("mode=rwc", "mode=rw"),
            };
            // One connection: SQLite has a single writer (see dbpool).
            (Dialect::Sqlite, url, 1)
        } else {
            (Dialect::Postgres, with_application_name(url), max_connections)
        };
        // One set-up for every durable store: SQLite in WAL with
        // synchronous = FULL (the ledger must survive a power loss).
        let options = dbpool::Options { max_connections, wal: access == Access::CreateAndMigrate };
        let pool = dbpool::set_up(&url, options).await?;
        Ok(Self { pool, dialect, max_connections, metrics: None, replica: None })
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
        static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
        match self.dialect {
            Dialect::Postgres => &POSTGRES,
            Dialect::Sqlite => &SQLITE,
        }
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        self.migrator().run(&self.pool).await.map_err(|e| StoreError::Database(e.into()))
    }

    /// Versions of this build's migrations the database has not applied
    /// (all of them on a database without sqlx's bookkeeping table).
    async fn unapplied_migrations(&self) -> StoreResult<Vec<i64>> {
        let has_table = match self.dialect {
            Dialect::Postgres => {
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
            Dialect::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        };
        let tables: i64 = sqlx::query(has_table).fetch_one(&self.pool).await?.try_get(0)?;
        let applied: Vec<i64> = if tables == 0 {
            Vec::new()
        } else {
            let rows =
                sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE").fetch_all(&self.pool).await?;
            rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?
        };
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect())
    }

    /// Records operation latencies and pool waits into `metrics`.
    pub fn with_metrics(mut self, metrics: StoreMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reads the catalogue from `replica` while it is healthy (see `replica.rs`).
    pub fn with_replica(mut self, replica: std::sync::Arc<Replica>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Probes the replica, if there is one, opening or closing its breaker.
    pub async fn probe_replica(&self) -> Option<ReplicaHealth> {
        Some(self.replica.as_ref()?.probe(&self.pool).await)
    }

    /// Runs a read on the replica while its breaker is closed, else (or when
    /// it fails there, which trips the breaker) on the primary.
    pub(crate) async fn read<'a, T, F>(&'a self, query: impl Fn(&'a AnyPool) -> F) -> StoreResult<T>
    where
        F: Future<Output = Result<T, sqlx::Error>> + 'a,
    {
        if let Some(replica) = &self.replica
            && let Some(pool) = replica.pool()
        {
            match query(pool).await {
                Ok(value) => return Ok(value),
                Err(e) => replica.trip(&e.into()),
            }
        }
        Ok(query(&self.pool).await?)
    }

    /// Runs one database operation inside a client span, timing it.
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let histogram = self.metrics.as_ref().map(|m| &m.operation_duration);
        telemetry::client_call(self.dialect.system_name(), operation, histogram, fut).await
    }

    /// Begins a transaction, counting the wait for a pooled connection.
    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.counting_wait(self.pool.begin()).await?)
    }

    /// A pooled connection, counting the wait for it.
    pub(crate) async fn acquire(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.counting_wait(self.pool.acquire()).await?)
    }

    /// Runs `wait` (a pool checkout) as one more waiter, timing it.
    async fn counting_wait<T>(&self, wait: impl Future<Output = T>) -> T {
        let Some(m) = &self.metrics else { return wait.await };
        m.waiting.inc();
        let started = std::time::Instant::now();
        let result = wait.await;
        m.waiting.dec();
        m.acquire.observe(started.elapsed().as_secs_f64());
        result
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn pool_stats(&self) -> PoolStats {
        PoolStats { max: self.max_connections, size: self.pool.size(), idle: self.pool.num_idle() as u32 }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(replica) = &self.replica {
            replica.close().await;
        }
        self.pool.close().await;
    }

    pub async fn create_user(&self, name: &str, now: Millis) -> StoreResult<i64> {
        let row = sqlx::query("INSERT INTO users (name, balance, created_at) VALUES ($1, 0, $2) RETURNING id")
            .bind(name)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn balance(&self, user_id: i64) -> StoreResult<i64> {
        let row =
            sqlx::query("SELECT balance FROM users WHERE id = $1").bind(user_id).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get(0)).transpose()?.ok_or(StoreError::NotFound("user"))
    }

    /// Marks lapsed holds EXPIRED and frees their seats, at most `batch` at a
    /// time. Expiry is lazy everywhere else, so this only tidies up: a
    /// lapsed hold counts as available whether or not it has been swept.
    /// Returns how many holds were expired.
    pub async fn sweep_expired(&self, now: Millis, batch: i64) -> StoreResult<u64> {
        self.timed("sweep", self.sweep_batch(now, batch)).await
    }

    async fn sweep_batch(&self, now: Millis, batch: i64) -> StoreResult<u64> {
        match self.dialect {
            Dialect::Postgres => {
                // SKIP LOCKED lets several instances sweep side by side, and
                // never waits on a payment that has the row locked.
                let row = sqlx::query(
                    "WITH lapsed AS (
                         SELECT id FROM reservations
                         WHERE status = 'HELD' AND expires_at <= $1
                         ORDER BY expires_at LIMIT $2
                         FOR UPDATE SKIP LOCKED
                     ), expired AS (
                         UPDATE reservations r SET status = 'EXPIRED'
                         FROM lapsed WHERE r.id = lapsed.id
                         RETURNING r.id, r.seat_id
                     ), freed AS (
                         UPDATE seats s SET hold_reservation_id = NULL, hold_user_id = NULL, hold_expires_at = NULL
                         FROM expired WHERE s.id = expired.seat_id AND s.hold_reservation_id = expired.id
                         RETURNING s.id
                     )
                     SELECT (SELECT count(*) FROM expired), (SELECT count(*) FROM freed)",
                )
                .bind(now)
                .bind(batch)
                .fetch_one(&self.pool)
                .await?;
                let expired: i64 = row.try_get(0)?;
                Ok(expired as u64)
            }
            Dialect::Sqlite => {
                let mut tx = self.begin().await?;
                let expired = sqlx::query(
                    "UPDATE reservations SET status = 'EXPIRED'
                     WHERE id IN (SELECT id FROM reservations WHERE status = 'HELD' AND expires_at <= $1
                                  ORDER BY expires_at LIMIT $2)",
                )
                .bind(now)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE seats SET hold_reservation_id = NULL, hold_user_id = NULL, hold_expires_at = NULL
                     WHERE hold_reservation_id IN (SELECT id FROM reservations WHERE status = 'EXPIRED')",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(expired)
            }
        }
    }

    /// Holds still HELD although they lapsed before `lapsed_before`: what the
    /// sweeper has not caught up with. Both dialects answer it from the
    /// partial index `reservations_held_by_expiry`, without touching rows.
    pub async fn count_overdue_holds(&self, lapsed_before: Millis) -> StoreResult<i64> {
        self.timed("count_overdue_holds", async {
            let row = sqlx::query(OVERDUE_HOLDS_SQL).bind(lapsed_before).fetch_one(&self.pool).await?;
            Ok(row.try_get(0)?)
        })
        .await
    }

    /// Counts that must always hold; the load tests check them after a run.
    pub async fn audit(&self) -> StoreResult<Audit> {
        let q = |sql: &'static str| async move {
            let row = sqlx::query(sql).fetch_one(&self.pool).await?;
            Ok::<i64, StoreError>(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
        };
        Ok(Audit {
            seats_sold_twice: q("SELECT count(*) FROM (SELECT seat_id FROM reservations WHERE status = 'PAID' GROUP BY seat_id HAVING count(*) > 1) t").await?,
            seats_with_two_live_holds: q("SELECT count(*) FROM (SELECT seat_id FROM reservations WHERE status = 'HELD' GROUP BY seat_id HAVING count(*) > 1) t").await?,
            sold_seats: q("SELECT count(*) FROM seats WHERE sold_reservation_id IS NOT NULL").await?,
            payments: q("SELECT count(*) FROM payments").await?,
            charges_total: q("SELECT CAST(sum(amount) AS BIGINT) FROM ledger WHERE kind = 'CHARGE'").await?,
            payments_total: q("SELECT CAST(-sum(amount) AS BIGINT) FROM ledger WHERE kind = 'PAYMENT'").await?,
            balances_total: q("SELECT CAST(sum(balance) AS BIGINT) FROM users").await?,
        })
    }
}

/// How [`Store::open`] may treat the database it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    CreateAndMigrate,
    Existing,
}

/// The file a `sqlite:` URL names; `None` for PostgreSQL and in-memory SQLite.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (!path.as_os_str().is_empty() && !url.contains(":memory:") && !url.contains("mode=memory"))
        .then(|| path.to_path_buf())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The database `url` names, as a command may print it: the password
/// masked and, for SQLite, the absolute path the relative URL resolves to
/// from here (`sqlite://booking.db (/home/me/booking.db)`), since the
/// default URL means a different file in every directory.
pub fn location(url: &str) -> String {
    let shown = redact_url(url);
    match sqlite_file(url) {
        Some(path) if path.is_relative() => format!("{shown} ({})", absolute(&path).display()),
        _ => shown,
    }
}

/// The name booking's sessions carry in `pg_stat_activity`, so operators
/// (and the runbooks' terminate step, which touches no other sessions) can
/// tell them from a backup's or a DBA's.
pub const APPLICATION_NAME: &str = "booking";

/// `url` with `application_name=booking`, unless it names one already.
fn with_application_name(url: &str) -> String {
    if url.contains("application_name=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={APPLICATION_NAME}")
}

/// The `status = 'HELD'` literal is what lets the planner use the partial
/// index on `expires_at`.
const OVERDUE_HOLDS_SQL: &str = "SELECT count(*) FROM reservations WHERE status = 'HELD' AND expires_at < $1";

/// The invariants of a whole sale, as counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    pub seats_sold_twice: i64,
    pub seats_with_two_live_holds: i64,
    pub sold_seats: i64,
    pub payments: i64,
    pub charges_total: i64,
    pub payments_total: i64,
    pub balances_total: i64,
}

impl Audit {
    /// Each broken invariant, in words; empty when the sale is sound.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.seats_sold_twice != 0 {
            v.push(format!("{} seats sold twice", self.seats_sold_twice));
        }
        if self.seats_with_two_live_holds != 0 {
            v.push(format!("{} seats with two live holds", self.seats_with_two_live_holds));
        }
        if self.payments != self.sold_seats {
            v.push(format!("{} payments but {} sold seats", self.payments, self.sold_seats));
        }
        if self.charges_total - self.payments_total != self.balances_total {
            v.push(format!(
                "charges {} - payments {} != balances {}",
                self.charges_total, self.payments_total, self.balances_total
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overdue_holds_are_counted_from_the_expiry_index_on_sqlite() {
        let store = Store::connect("sqlite::memory:", 1).await.unwrap();
        let plan = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {OVERDUE_HOLDS_SQL}")))
            .bind(0_i64)
            .fetch_all(store.pool())
            .await
            .unwrap();
        let detail: Vec<String> = plan.iter().map(|r| r.try_get::<String, _>(3).unwrap()).collect();
        assert!(detail.iter().any(|d| d.contains("reservations_held_by_expiry")), "{detail:?}");
        assert_eq!(store.count_overdue_holds(i64::MAX).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_existing_database_behind_this_builds_audit_schema_is_refused_and_left_unmigrated() {
        let file = std::env::temp_dir().join(format!("booking-behind-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", file.display());
        let store = Store::connect(&url, 1).await.unwrap();
        let last = store.migrator().iter().map(|m| m.version).max().unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1").bind(last).execute(store.pool()).await.unwrap();
        store.close().await;
        let refused = Store::open_existing(&url, 1).await.map(|_| ());
        let still_behind = Store::open_existing(&url, 1).await.map(|_| ());
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        assert!(matches!(&refused, Err(OpenError::SchemaBehind(v)) if v == &[last]), "{refused:?}");
        assert!(matches!(&still_behind, Err(OpenError::SchemaBehind(_))), "opening migrated nothing: {still_behind:?}");
    }
}
