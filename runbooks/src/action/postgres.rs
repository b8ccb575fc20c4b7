//! PostgreSQL: who holds connections, what runs long, who waits on whom,
//! and terminating runaway queries — the `SHOW PROCESSLIST` / `KILL` of the
//! DB-pool incident, with guards.
//!
//! Every query reads `pg_stat_activity` for client backends only
//! (`backend_type = 'client backend'`): walsenders, autovacuum workers and
//! other background processes are never listed or terminated, nor is the
//! runbook's own session. By default only the database of `DATABASE_URL`
//! is looked at; `database: "*"` means all of them.
//!
//! Two rules keep the runbook to the booking service's own sessions
//! (`application_name = booking`, set on booking's pool):
//! - termination only ever touches those: a pg_dump, a migration tool or a
//!   DBA's psql is somebody else's to stop, whatever a runbook says;
//! - only their query text is read. Other sessions' SQL may quote data or
//!   credentials, so the server blanks it (`query` is null) before it
//!   reaches the runbook, and they are shown by pid, application, state,
//!   wait event and age only. Booking's SQL is our own, parameterised.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::{Finding, num};
use crate::target::{Ctx, TargetError};

// SQL is assembled at compile time from these pieces (sqlx only takes
// static strings), so no runtime text ever reaches a query.

/// Which database: unset is the connected one, `*` every one.
macro_rules! db_filter {
    ($p:literal) => {
        concat!("(", $p, "::text = '*' OR datname = coalesce(", $p, "::text, current_database()))")
    };
}

/// The `application_name` booking's pool connects with: the one name
/// whose sessions this module terminates or shows the SQL of. A literal,
/// so it is part of the static SQL rather than a bind a caller could vary.
macro_rules! booking_application {
    () => {
        "booking"
    };
}

/// [`booking_application!`] as a value, for messages and outputs.
pub const BOOKING_APPLICATION: &str = booking_application!();

/// `query` is null unless the session is booking's (see the module doc).
macro_rules! session_columns {
    () => {
        concat!(
            "pid, datname, usename, application_name, state, wait_event_type, wait_event, \
             extract(epoch FROM clock_timestamp() - query_start)::float8 AS seconds, \
             CASE WHEN application_name = '",
            booking_application!(),
            "' THEN left(query, 300) END AS query"
        )
    };
}

/// Client queries active longer than $1 seconds, in database $2; never this
/// session, never a non-client backend.
macro_rules! long_filter {
    () => {
        concat!(
            "backend_type = 'client backend' AND pid <> pg_backend_pid() AND state = 'active' \
             AND query_start < clock_timestamp() - make_interval(secs => $1) AND ",
            db_filter!("$2")
        )
    };
}

const CONNECTIONS: &str = concat!(
    "SELECT coalesce(state, 'unknown') AS state, application_name, count(*) AS n \
     FROM pg_stat_activity WHERE backend_type = 'client backend' AND ",
    db_filter!("$1"),
    " GROUP BY 1, 2"
);

/// With application name $3 if set.
const LONG_QUERIES: &str = concat!(
    "SELECT ",
    session_columns!(),
    ", count(*) OVER () AS total FROM pg_stat_activity WHERE ",
    long_filter!(),
    " AND ($3::text IS NULL OR application_name = $3) ORDER BY query_start LIMIT $4"
);

const LOCK_WAITS: &str = concat!(
    "SELECT ",
    session_columns!(),
    ", pg_blocking_pids(pid) AS blocked_by, count(*) OVER () AS total \
     FROM pg_stat_activity WHERE backend_type = 'client backend' AND cardinality(pg_blocking_pids(pid)) > 0 AND ",
    db_filter!("$1"),
    " ORDER BY query_start LIMIT $2"
);

const BLOCKERS: &str =
    concat!("SELECT ", session_columns!(), " FROM pg_stat_activity WHERE pid = ANY($1) ORDER BY query_start");

// Chosen first (MATERIALIZED, with the limit $3), terminated second: the
// limit bounds what one run can terminate. The application is fixed in the
// SQL text, not bound, so no argument can widen it. The 5 s wait
// (PostgreSQL 14+) lets the verify step see the sessions gone.
const TERMINATE: &str = concat!(
    "WITH victims AS MATERIALIZED (SELECT ",
    session_columns!(),
    " FROM pg_stat_activity WHERE ",
    long_filter!(),
    " AND application_name = '",
    booking_application!(),
    "' ORDER BY query_start LIMIT $3) SELECT v.*, pg_terminate_backend(v.pid, 5000) AS terminated FROM victims v"
);

/// The long queries [`TERMINATE`] leaves alone because they are not
/// booking's: counted, so the step can say so.
const SPARED: &str = concat!(
    "SELECT count(*) FROM pg_stat_activity WHERE ",
    long_filter!(),
    " AND application_name IS DISTINCT FROM '",
    booking_application!(),
    "'"
);

fn scope_text(database: &Option<String>) -> String {
    match database.as_deref() {
        None => "the current database".into(),
        Some("*") => "all databases".into(),
        Some(db) => format!("database {db}"),
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub database: Option<String>,
}

/// Arguments of `long_queries`, and as written for `terminate_long_queries`
/// (which [`Terminate`] checks).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongQueries {
    #[serde(default)]
    pub min_seconds: Option<f64>,
    #[serde(default)]
    pub database: Option<String>,
    /// Only sessions with this `application_name`.
    #[serde(default)]
    pub application_name: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

fn checked_limit(limit: Option<u32>, default: u32) -> Result<u32, String> {
    let limit = limit.unwrap_or(default);
    if !(1..=1000).contains(&limit) {
        return Err(format!("limit must be 1 to 1000, not {limit}"));
    }
    Ok(limit)
}

impl LongQueries {
    pub fn checked(mut self) -> Result<Self, String> {
        match self.min_seconds {
            None => self.min_seconds = Some(30.0),
            Some(s) if s.is_nan() || s < 0.0 => return Err(format!("min_seconds must be 0 or more, not {s}")),
            Some(_) => {}
        }
        self.limit = Some(checked_limit(self.limit, 20)?);
        Ok(self)
    }

    fn min_seconds(&self) -> f64 {
        self.min_seconds.unwrap_or(30.0)
    }

    fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(20))
    }
}

/// Arguments of `terminate_long_queries`. There is no application to
/// choose: only booking's sessions are ever terminated. That is a fixed
/// rule rather than a default a runbook could narrow, because below one
/// application there is nothing left to narrow, and any other value would
/// be the widening the rule exists to forbid.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminate {
    pub min_seconds: f64,
    pub database: Option<String>,
    pub limit: u32,
}

impl TryFrom<LongQueries> for Terminate {
    type Error = String;

    /// Terminating needs an explicit threshold of at least a second: a
    /// default or a zero would terminate every busy session.
    fn try_from(args: LongQueries) -> Result<Self, String> {
        if args.application_name.is_some() {
            return Err(format!(
                "application_name cannot be set: terminate_long_queries only ever terminates booking's own sessions (application_name = {BOOKING_APPLICATION})"
            ));
        }
        let min_seconds = match args.min_seconds {
            None => return Err("min_seconds is required (terminate queries active longer than this)".into()),
            Some(s) if s.is_nan() || s < 1.0 => return Err(format!("min_seconds must be at least 1, not {s}")),
            Some(s) => s,
        };
        Ok(Terminate { min_seconds, database: args.database, limit: checked_limit(args.limit, 50)? })
    }
}

impl Terminate {
    /// What applying the step would do, for the dry run and the prompt.
    pub fn plan(&self) -> String {
        format!(
            "terminate queries of application {BOOKING_APPLICATION} active longer than {}s in {} (at most {})",
            self.min_seconds,
            scope_text(&self.database),
            self.limit
        )
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockWaits {
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default = "twenty")]
    pub limit: u32,
}

fn twenty() -> u32 {
    20
}

fn failed(e: sqlx::Error) -> TargetError {
    TargetError::failed(format!("postgres: {e}"))
}

/// `idle in transaction (aborted)` → `idle_in_transaction_aborted`.
fn snake(state: &str) -> String {
    let mut out = String::new();
    for c in state.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

pub async fn connections(ctx: &mut Ctx, scope: &Scope) -> Result<Finding, TargetError> {
    let conn = ctx.pg().await?;
    let rows = sqlx::query(CONNECTIONS).bind(scope.database.as_deref()).fetch_all(&mut *conn).await.map_err(failed)?;
    let (server_total, max_connections): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
         current_setting('max_connections')::int8",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(failed)?;

    let mut by_state: Map<String, Value> =
        ["active", "idle", "idle_in_transaction"].iter().map(|s| (s.to_string(), json!(0))).collect();
    let mut by_application: Vec<(String, i64)> = Vec::new();
    let mut total = 0i64;
    for row in &rows {
        let state: String = row.try_get("state").map_err(failed)?;
        let app: String = row.try_get("application_name").map_err(failed)?;
        let n: i64 = row.try_get("n").map_err(failed)?;
        total += n;
        let key = snake(&state);
        let before = by_state.get(&key).and_then(Value::as_i64).unwrap_or(0);
        by_state.insert(key, json!(before + n));
        match by_application.iter_mut().find(|(a, _)| *a == app) {
            Some((_, count)) => *count += n,
            None => by_application.push((app, n)),
        }
    }
    by_application.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    by_application.truncate(10);
    let ratio = if max_connections > 0 { server_total as f64 / max_connections as f64 } else { f64::NAN };
    let states: Vec<String> = by_state.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let summary = format!(
        "{total} client connections in {} ({}); server-wide {server_total} of max_connections {max_connections} ({:.0} %)",
        scope_text(&scope.database),
        states.join(", "),
        ratio * 100.0
    );
    let by_application: Map<String, Value> = by_application
        .into_iter()
        .map(|(app, n)| (if app.is_empty() { "(none)".to_string() } else { app }, json!(n)))
        .collect();
    Ok(Finding {
        summary,
        output: json!({
            "total": total,
            "server_total": server_total,
            "max_connections": max_connections,
            "ratio": num(ratio),
            "by_state": by_state,
            "by_application": by_application,
        }),
    })
}

fn session(row: &sqlx::postgres::PgRow) -> Result<Value, TargetError> {
    let get_s = |c: &str| row.try_get::<Option<String>, _>(c).map_err(failed);
    Ok(json!({
        "pid": row.try_get::<i32, _>("pid").map_err(failed)?,
        "database": get_s("datname")?,
        "user": get_s("usename")?,
        "application_name": get_s("application_name")?,
        "state": get_s("state")?,
        "wait_event": match (get_s("wait_event_type")?, get_s("wait_event")?) {
            (Some(t), Some(e)) => Some(format!("{t}:{e}")),
            _ => None,
        },
        "seconds": row.try_get::<Option<f64>, _>("seconds").map_err(failed)?.map(super::round),
        "query": get_s("query")?,
    }))
}

/// `pid 4242 booking active 95s: UPDATE seats …`; a session of another
/// application has no query text to show (see [`session_columns!`]).
fn one_line(session: &Value) -> String {
    let app = match session["application_name"].as_str() {
        Some("") | None => "(no application_name)",
        Some(app) => app,
    };
    let mut out = format!("pid {} {app} {}", session["pid"], session["state"].as_str().unwrap_or("?"));
    if let Some(wait) = session["wait_event"].as_str() {
        out.push_str(&format!(" ({wait})"));
    }
    out.push_str(&format!(" {}s", session["seconds"].as_f64().map_or("?".into(), |s| format!("{s:.0}"))));
    if let Some(query) = session["query"].as_str() {
        let q = query.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(": ");
        out.extend(q.chars().take(80));
    }
    out
}

pub async fn long_queries(ctx: &mut Ctx, args: &LongQueries) -> Result<Finding, TargetError> {
    let conn = ctx.pg().await?;
    let rows = sqlx::query(LONG_QUERIES)
        .bind(args.min_seconds())
        .bind(args.database.as_deref())
        .bind(args.application_name.as_deref())
        .bind(args.limit())
        .fetch_all(&mut *conn)
        .await
        .map_err(failed)?;
    let count = match rows.first() {
        Some(row) => row.try_get::<i64, _>("total").map_err(failed)?,
        None => 0,
    };
    let queries = rows.iter().map(session).collect::<Result<Vec<_>, _>>()?;
    let of = args.application_name.as_deref().map_or(String::new(), |app| format!(" of application {app}"));
    let summary = if count == 0 {
        format!("no query{of} active longer than {}s in {}", args.min_seconds(), scope_text(&args.database))
    } else {
        let shown: Vec<String> = queries.iter().take(3).map(one_line).collect();
        format!(
            "{count} quer{}{of} active longer than {}s: {}",
            if count == 1 { "y" } else { "ies" },
            args.min_seconds(),
            shown.join("; ")
        )
    };
    Ok(Finding { summary, output: json!({ "count": count, "min_seconds": args.min_seconds(), "queries": queries }) })
}

pub async fn lock_waits(ctx: &mut Ctx, args: &LockWaits) -> Result<Finding, TargetError> {
    let conn = ctx.pg().await?;
    let rows = sqlx::query(LOCK_WAITS)
        .bind(args.database.as_deref())
        .bind(i64::from(args.limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(failed)?;
    let count = match rows.first() {
        Some(row) => row.try_get::<i64, _>("total").map_err(failed)?,
        None => 0,
    };
    let mut waits = Vec::new();
    let mut blocker_pids: Vec<i32> = Vec::new();
    for row in &rows {
        let mut wait = session(row)?;
        let blocked_by: Vec<i32> = row.try_get("blocked_by").map_err(failed)?;
        for pid in &blocked_by {
            if !blocker_pids.contains(pid) {
                blocker_pids.push(*pid);
            }
        }
        wait["blocked_by"] = json!(blocked_by);
        waits.push(wait);
    }
    let blockers = if blocker_pids.is_empty() {
        Vec::new()
    } else {
        let rows = sqlx::query(BLOCKERS).bind(&blocker_pids[..]).fetch_all(&mut *conn).await.map_err(failed)?;
        rows.iter().map(session).collect::<Result<Vec<_>, _>>()?
    };
    let summary = if count == 0 {
        format!("no session waiting on a lock in {}", scope_text(&args.database))
    } else {
        let shown: Vec<String> = blockers.iter().take(3).map(one_line).collect();
        format!("{count} session(s) waiting on locks held by {} session(s): {}", blockers.len(), shown.join("; "))
    };
    Ok(Finding { summary, output: json!({ "count": count, "waits": waits, "blockers": blockers }) })
}

pub async fn terminate(ctx: &mut Ctx, args: &Terminate) -> Result<Finding, TargetError> {
    let conn = ctx.pg().await?;
    let rows = sqlx::query(TERMINATE)
        .bind(args.min_seconds)
        .bind(args.database.as_deref())
        .bind(i64::from(args.limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(failed)?;
    let spared: i64 = sqlx::query_scalar(SPARED)
        .bind(args.min_seconds)
        .bind(args.database.as_deref())
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    let mut terminated = Vec::new();
    for row in &rows {
        let mut victim = session(row)?;
        victim["terminated"] = json!(row.try_get::<bool, _>("terminated").map_err(failed)?);
        terminated.push(victim);
    }
    let done = terminated.iter().filter(|v| v["terminated"] == true).count();
    let what = format!(
        "quer{} of application {BOOKING_APPLICATION} active longer than {}s",
        if terminated.len() == 1 { "y" } else { "ies" },
        args.min_seconds
    );
    let mut summary = if terminated.is_empty() {
        format!(
            "nothing to terminate: no query of application {BOOKING_APPLICATION} active longer than {}s in {}",
            args.min_seconds,
            scope_text(&args.database)
        )
    } else {
        let shown: Vec<String> = terminated.iter().take(3).map(one_line).collect();
        format!("terminated {done} of {} {what}: {}", terminated.len(), shown.join("; "))
    };
    if spared > 0 {
        summary.push_str(&format!(
            "; left alone {spared} long quer{} of other applications",
            if spared == 1 { "y" } else { "ies" }
        ));
    }
    Ok(Finding {
        summary,
        output: json!({
            "count": done,
            "min_seconds": args.min_seconds,
            "application_name": BOOKING_APPLICATION,
            "terminated": terminated,
            "other_applications": spared,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_become_field_names() {
        assert_eq!(snake("idle in transaction (aborted)"), "idle_in_transaction_aborted");
        assert_eq!(snake("fastpath function call"), "fastpath_function_call");
        assert_eq!(snake("active"), "active");
    }

    fn args(min_seconds: Option<f64>) -> LongQueries {
        LongQueries { min_seconds, database: None, application_name: None, limit: None }
    }

    #[test]
    fn terminating_needs_an_explicit_threshold_of_at_least_a_second() {
        let terminate = |min| Terminate::try_from(args(min));
        assert!(terminate(None).unwrap_err().contains("required"));
        assert!(terminate(Some(0.5)).is_err());
        assert!(terminate(Some(f64::NAN)).is_err());
        assert_eq!(terminate(Some(60.0)).unwrap().limit, 50);
        assert_eq!(args(None).checked().unwrap().min_seconds, Some(30.0));
        assert!(args(Some(-1.0)).checked().is_err());
    }

    #[test]
    fn termination_is_never_widened_beyond_bookings_sessions() {
        for app in ["booking", "pg_dump", "psql", ""] {
            let err = Terminate::try_from(LongQueries { application_name: Some(app.into()), ..args(Some(60.0)) })
                .unwrap_err();
            assert!(err.contains("only ever terminates booking's own sessions"), "{app}: {err}");
        }
        let plan = Terminate::try_from(args(Some(60.0))).unwrap().plan();
        assert_eq!(
            plan,
            "terminate queries of application booking active longer than 60s in the current database (at most 50)"
        );
        assert!(TERMINATE.contains("application_name = 'booking'"), "{TERMINATE}");
    }

    #[test]
    fn other_applications_are_shown_by_ids_without_query_text() {
        let other = json!({"pid": 7, "application_name": "pg_dump", "state": "active", "wait_event": "Client:ClientRead", "seconds": 612.4, "query": null});
        assert_eq!(one_line(&other), "pid 7 pg_dump active (Client:ClientRead) 612s");
        let ours = json!({"pid": 8, "application_name": "booking", "state": "active", "wait_event": null, "seconds": 31.0, "query": "UPDATE seats\n  SET x = $1"});
        assert_eq!(one_line(&ours), "pid 8 booking active 31s: UPDATE seats SET x = $1");
        for sql in [LONG_QUERIES, LOCK_WAITS, BLOCKERS, TERMINATE] {
            assert!(sql.contains("CASE WHEN application_name = 'booking' THEN left(query, 300) END AS query"), "{sql}");
        }
    }
}
