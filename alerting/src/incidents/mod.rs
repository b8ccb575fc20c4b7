//! Incidents, their timelines, the durable page outbox and silences, in
//! SQLite (the default) or PostgreSQL through one `sqlx::Any` store.
//!
//! Times are Unix milliseconds. One open incident per alert fingerprint is
//! enforced by a partial unique index, so a retried evaluation or a second
//! process cannot open a duplicate. The outbox lives in [`outbox`], the
//! deletion of old rows in [`retention`].

mod lease;
mod outbox;
mod retention;

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

pub use lease::{Evaluator, Fence, Lease};
pub use outbox::Claim;
use outbox::paged_on;
pub use retention::{Purged, Retention};

use crate::rules::{Op, Severity};

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("incident {0} does not exist")]
    NotFound(i64),
    #[error("incident {0} is already resolved")]
    Resolved(i64),
    #[error("silence {0} does not exist")]
    SilenceNotFound(i64),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "{0} is already in use by another alerting process: a SQLite incident store serves one process. \
         Stop the other one, give this one its own ALERTING_DATABASE_URL, or run a group of them on PostgreSQL"
    )]
    InUse(String),
    #[error("cannot lock {0}: {1}")]
    Lock(String, std::io::Error),
    /// A write made for an evaluator whose lease has passed to another
    /// process (it was paused, or lost the database for longer than the
    /// lease): nothing was written.
    #[error("this process no longer holds the evaluator lease (epoch {0}); the write was refused")]
    Fenced(i64),
    /// A row this version cannot read (a hand edit, or a newer version's
    /// value): refused, never read as a default.
    #[error("unreadable {what} in the incident store: {detail}")]
    Unreadable { what: &'static str, detail: String },
    #[error("cannot encode for the incident store: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The `what` of an [`IncidentError::Unreadable`] for a value that did not parse.
fn unreadable(what: &'static str, detail: impl std::fmt::Display) -> IncidentError {
    IncidentError::Unreadable { what, detail: detail.to_string() }
}

pub type Result<T, E = IncidentError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Firing,
    Acked,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Acked => "acked",
            State::Resolved => "resolved",
        }
    }
}

impl TryFrom<&str> for State {
    type Error = IncidentError;

    fn try_from(s: &str) -> Result<State> {
        match s {
            "firing" => Ok(State::Firing),
            "acked" => Ok(State::Acked),
            "resolved" => Ok(State::Resolved),
            other => Err(unreadable("incident state", format!("{other:?} (expected firing, acked or resolved)"))),
        }
    }
}

/// What a timeline event records, declared once: stored and shown as its
/// snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Fired,
    Upgraded,
    Inhibited,
    Silenced,
    Paged,
    Escalated,
    Delivered,
    DeliveryFailed,
    Acked,
    Resolved,
    Note,
    RunbookStep,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Fired,
        EventKind::Upgraded,
        EventKind::Inhibited,
        EventKind::Silenced,
        EventKind::Paged,
        EventKind::Escalated,
        EventKind::Delivered,
        EventKind::DeliveryFailed,
        EventKind::Acked,
        EventKind::Resolved,
        EventKind::Note,
        EventKind::RunbookStep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Fired => "fired",
            EventKind::Upgraded => "upgraded",
            EventKind::Inhibited => "inhibited",
            EventKind::Silenced => "silenced",
            EventKind::Paged => "paged",
            EventKind::Escalated => "escalated",
            EventKind::Delivered => "delivered",
            EventKind::DeliveryFailed => "delivery_failed",
            EventKind::Acked => "acked",
            EventKind::Resolved => "resolved",
            EventKind::Note => "note",
            EventKind::RunbookStep => "runbook_step",
        }
    }
}

impl TryFrom<&str> for EventKind {
    type Error = IncidentError;

    fn try_from(s: &str) -> Result<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| unreadable("timeline event kind", format!("{s:?}")))
    }
}

/// So a filter can name the kind it looks for: `e.kind == "resolved"`.
impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: i64,
    pub fingerprint: String,
    pub rule_id: String,
    pub alert: String,
    pub severity: Severity,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub threshold: f64,
    pub op: Op,
    pub state: State,
    pub started_at: i64,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub resolved_at: Option<i64>,
    /// When the current escalation plan began (reset when upgraded).
    pub plan_started_at: i64,
    /// How many steps of that plan have been paged.
    pub steps_paged: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: i64,
    pub kind: EventKind,
    /// Who the client said it was (`by`), or `alerting` for the engine.
    pub actor: Option<String>,
    /// The name of the API key the change was made with; `None` for the
    /// engine's own events and on an API without keys.
    pub key: Option<String>,
    pub text: String,
    pub data: Option<serde_json::Value>,
}

/// Who makes a change: the name the client gives (`by`, which nothing
/// checks) and the name of the key it authenticated with (which the server
/// vouches for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub by: String,
    pub key: Option<String>,
}

impl From<&str> for Who {
    fn from(by: &str) -> Self {
        Who { by: by.to_owned(), key: None }
    }
}

/// What opens an incident.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub fingerprint: String,
    pub rule_id: String,
    pub alert: String,
    pub severity: Severity,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub threshold: f64,
    pub op: Op,
    /// When the condition began (the alert went pending).
    pub started_at: i64,
    /// When the incident fires and its first page goes out: the escalation
    /// clock starts here, so the rule's `for` is not taken out of the
    /// on-call's time to acknowledge.
    pub paged_at: i64,
}

/// An outbox row to write beside another change, in its transaction.
#[derive(Debug, Clone)]
pub struct NewPage {
    pub dedup_key: String,
    pub channel: String,
    pub recipients: String,
    pub page: String,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub incident_id: i64,
    pub channel: String,
    pub recipients: String,
    pub page: String,
    /// The number of the attempt this claim makes (counted when claimed,
    /// so a page that kills its sender cannot be retried forever).
    pub attempts: i64,
    pub created_at: i64,
    /// The claim's token: outcomes are written only under it.
    pub claimed_by: Option<String>,
    /// The trace context of the span that wrote the page (W3C
    /// `traceparent`): each delivery attempt's span continues it.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceKind {
    Silence,
    Maintenance,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    pub kind: SilenceKind,
    /// label → exact value; `alertname`, `rule_id`, `severity` and `owner` are
    /// matchable besides the alert's own labels.
    pub matchers: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    /// The API key it was added with (see [`Event::key`]).
    #[serde(default)]
    pub key: Option<String>,
}

/// Whether `labels` carry every matcher's exact value: how a silence matches.
pub fn labels_match(matchers: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Silence {
    pub fn matches(&self, labels: &BTreeMap<String, String>, at: i64) -> bool {
        self.starts_at <= at && at < self.ends_at && labels_match(&self.matchers, labels)
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    life: Arc<Lifecycle>,
    /// SQLite speaks a slightly different SQL (no `SKIP LOCKED`, another
    /// clock function).
    sqlite: bool,
    /// This process among a group on one database: the lease holder and the
    /// prefix of its outbox claims. Letters, digits and `-` only.
    instance: Arc<str>,
    /// Set on the evaluator's handle ([`Store::fenced`]): its writes that
    /// open, change, page or resolve incidents hold only under this lease.
    fence: Option<Fence>,
}

/// Closing is two-step so no page is sent whose outcome cannot be written:
/// `closing` stops new outbox claims and wakes the loops waiting on
/// [`Store::closed`], then `close` waits for the claims in flight (each
/// holds a read guard of `sending`) before closing the pool.
struct Lifecycle {
    closing: tokio::sync::watch::Sender<bool>,
    sending: Arc<tokio::sync::RwLock<()>>,
    /// Channels with a claim open (and how many): their pages are being
    /// sent, so [`Store::next_due`] looks past them instead of saying "now"
    /// while one hangs.
    busy: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Numbers this process's outbox claims.
    claims: std::sync::atomic::AtomicU64,
    /// The lock on a SQLite file's `.lock` twin, held while the store is
    /// open (and released by [`Store::close`]): one process per file.
    file_lock: std::sync::Mutex<Option<std::fs::File>>,
}

const INCIDENT_COLUMNS: &str = "id, fingerprint, rule_id, alert, severity, summary, labels, value, threshold, op, state, \
     started_at, acked_at, acked_by, resolved_at, plan_started_at, steps_paged";

fn incident(row: &sqlx::any::AnyRow) -> Result<Incident> {
    let severity: String = row.try_get("severity")?;
    let op: String = row.try_get("op")?;
    let labels: String = row.try_get("labels")?;
    let state: String = row.try_get("state")?;
    Ok(Incident {
        id: row.try_get("id")?,
        fingerprint: row.try_get("fingerprint")?,
        rule_id: row.try_get("rule_id")?,
        alert: row.try_get("alert")?,
        severity: severity.parse().map_err(|e| unreadable("incident severity", e))?,
        summary: row.try_get("summary")?,
        labels: serde_json::from_str(&labels).map_err(|e| unreadable("incident labels", e))?,
        value: row.try_get("value")?,
        threshold: row.try_get("threshold")?,
        op: match op.as_str() {
            "above" => Op::Above,
            "below" => Op::Below,
            other => return Err(unreadable("incident comparison", format!("{other:?} (expected above or below)"))),
        },
        state: State::try_from(state.as_str())?,
        started_at: row.try_get("started_at")?,
        acked_at: row.try_get("acked_at")?,
        acked_by: row.try_get("acked_by")?,
        resolved_at: row.try_get("resolved_at")?,
        plan_started_at: row.try_get("plan_started_at")?,
        steps_paged: row.try_get::<i64, _>("steps_paged")?,
    })
}

async fn get_on(conn: &mut AnyConnection, id: i64) -> Result<Incident> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(IncidentError::NotFound(id))?;
    incident(&row)
}

async fn insert_event_on(
    conn: &mut AnyConnection,
    id: i64,
    at: i64,
    kind: EventKind,
    actor: Actor<'_>,
    text: &str,
    data: Option<&serde_json::Value>,
) -> Result<()> {
    let done = sqlx::query("INSERT INTO timeline (incident_id, at, kind, actor, key_name, text, data) SELECT id, $2, $3, $4, $5, $6, $7 FROM incidents WHERE id = $1")
        .bind(id)
        .bind(at)
        .bind(kind.as_str())
        .bind(actor.by)
        .bind(actor.key)
        .bind(text)
        .bind(data.map(|d| d.to_string()))
        .execute(conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(IncidentError::NotFound(id));
    }
    Ok(())
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::Above => "above",
        Op::Below => "below",
    }
}

/// The file of a `sqlite:` URL (`sqlite://alerting.db?mode=rwc` →
/// `alerting.db`); `None` for an in-memory database or another backend.
fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:") && !rest.contains("mode=memory")).then(|| path.to_owned())
}

/// Takes the lock on `path.lock`, or says which process holds it. The lock
/// is an advisory `flock` the OS drops with the process, so a crash never
/// leaves it behind.
fn lock_file(path: &str) -> Result<std::fs::File> {
    let lock_path = format!("{path}.lock");
    if let Some(dir) = std::path::Path::new(&lock_path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| IncidentError::Lock(lock_path.clone(), e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| IncidentError::Lock(lock_path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IncidentError::InUse(path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(IncidentError::Lock(lock_path, e)),
    }
}

impl Store {
    /// Connects and migrates. `sqlite:` URLs create the file when missing.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        // Before anything touches the file: a second process would page
        // beside the first, each from its own in-memory alert states.
        let file_lock = match sqlite_file(url) {
            Some(path) => Some(lock_file(&path)?),
            None => None,
        };
        let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        // One set-up for every durable store (dbpool): SQLite with one
        // connection, in WAL with synchronous = FULL; PostgreSQL with 5.
        let pool = dbpool::set_up(&url, dbpool::Options { max_connections: 5, wal: true }).await?;
        if sqlite {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        let life = Lifecycle {
            closing: tokio::sync::watch::Sender::new(false),
            sending: Arc::new(tokio::sync::RwLock::new(())),
            busy: Default::default(),
            claims: Default::default(),
            file_lock: std::sync::Mutex::new(file_lock),
        };
        let instance = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Ok(Self { pool, life: Arc::new(life), sqlite, instance: instance.into(), fence: None })
    }

    /// This store, writing only while `fence`'s lease holds: the handle the
    /// evaluator opens, pages and resolves incidents through.
    pub fn fenced(&self, fence: Fence) -> Store {
        Store { fence: Some(fence), ..self.clone() }
    }

    /// After a write that changed nothing: [`IncidentError::Fenced`] when it
    /// was refused for a lost lease, else `Ok` (there was nothing to change).
    async fn check_fence(&self) -> Result<()> {
        if self.fence.is_none() {
            return Ok(());
        }
        self.check_fence_on(&mut *self.pool.acquire().await?).await
    }

    /// [`Store::check_fence`] on `conn` (inside the caller's transaction).
    async fn check_fence_on(&self, conn: &mut AnyConnection) -> Result<()> {
        let Some(fence) = &self.fence else { return Ok(()) };
        let held =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 AS held FROM evaluator WHERE {}", self.held(fence))))
                .fetch_optional(conn)
                .await?;
        if held.is_none() { Err(IncidentError::Fenced(fence.epoch)) } else { Ok(()) }
    }

    /// Whether this is an embedded (SQLite) store: one process only.
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// This process's name in the group (lease holder, claim owner).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Stops new outbox claims, waits for the sends in flight to record
    /// their outcome (each is bounded by its channel's timeout), then
    /// closes the pool.
    pub async fn close(&self) {
        self.life.closing.send_replace(true);
        let _no_sends = self.life.sending.write().await;
        self.pool.close().await;
        self.life.file_lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether [`Store::close`] has begun.
    pub fn is_closing(&self) -> bool {
        *self.life.closing.borrow()
    }

    /// Resolves once [`Store::close`] has begun: the background loops'
    /// signal to stop.
    pub async fn closed(&self) {
        let mut closing = self.life.closing.subscribe();
        let _ = closing.wait_for(|c| *c).await;
    }

    /// Opens an incident, or returns the open one with the same
    /// fingerprint (`false`: nothing new was opened).
    pub async fn open(&self, new: &NewIncident) -> Result<(Incident, bool)> {
        if let Some(open) = self.find_open(&new.fingerprint).await? {
            return Ok((open, false));
        }
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO incidents (fingerprint, rule_id, alert, severity, summary, labels, value, threshold, op, state, started_at, plan_started_at, steps_paged)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'firing', $10, $11, 0 WHERE {}
             ON CONFLICT DO NOTHING RETURNING {INCIDENT_COLUMNS}",
            self.fence_sql()
        )))
        .bind(&new.fingerprint)
        .bind(&new.rule_id)
        .bind(&new.alert)
        .bind(new.severity.as_str())
        .bind(&new.summary)
        .bind(serde_json::to_string(&new.labels)?)
        .bind(finite(new.value))
        .bind(finite(new.threshold))
        .bind(op_str(new.op))
        .bind(new.started_at)
        .bind(new.paged_at)
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(row) => Ok((incident(&row)?, true)),
            None => match self.find_open(&new.fingerprint).await? {
                Some(open) => Ok((open, false)),
                None => {
                    self.check_fence().await?;
                    Err(IncidentError::NotFound(0))
                }
            },
        }
    }

    pub async fn find_open(&self, fingerprint: &str) -> Result<Option<Incident>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = $1 AND state <> 'resolved'"
        )))
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(incident).transpose()
    }

    /// The newest incident of an alert, open or not.
    pub async fn latest(&self, fingerprint: &str) -> Result<Option<Incident>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = $1 ORDER BY id DESC LIMIT 1"
        )))
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(incident).transpose()
    }

    pub async fn get(&self, id: i64) -> Result<Incident> {
        get_on(&mut *self.pool.acquire().await?, id).await
    }

    /// Newest first; `state` filters.
    pub async fn list(&self, state: Option<State>, limit: i64) -> Result<Vec<Incident>> {
        let rows = match state {
            Some(s) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE state = $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(s.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY id DESC LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(incident).collect()
    }

    /// Not yet resolved (firing or acked), newest first.
    pub async fn list_open(&self, limit: i64) -> Result<Vec<Incident>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE state <> 'resolved' ORDER BY id DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(incident).collect()
    }

    /// How many incidents are not yet resolved.
    pub async fn count_open(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM incidents WHERE state <> 'resolved'").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// Incidents whose escalation is still running.
    pub async fn unacked(&self) -> Result<Vec<Incident>> {
        self.list(Some(State::Firing), 10_000).await
    }

    pub async fn timeline(&self, id: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT at, kind, actor, key_name, text, data FROM timeline WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let data: Option<String> = r.try_get("data")?;
                let kind: String = r.try_get("kind")?;
                Ok(Event {
                    at: r.try_get("at")?,
                    kind: EventKind::try_from(kind.as_str())?,
                    actor: r.try_get("actor")?,
                    key: r.try_get("key_name")?,
                    text: r.try_get("text")?,
                    data: data
                        .map(|d| serde_json::from_str(&d))
                        .transpose()
                        .map_err(|e| unreadable("timeline event data", e))?,
                })
            })
            .collect()
    }

    /// Adds an event that no API key is behind (the engine's, or one made
    /// through an API without keys).
    pub async fn record(
        &self,
        id: i64,
        at: i64,
        kind: EventKind,
        actor: Option<&str>,
        text: &str,
        data: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.insert_event(id, at, kind, Actor { by: actor, key: None }, text, data).await
    }

    /// Adds an event made by `who`, key name included.
    pub async fn record_change(
        &self,
        id: i64,
        at: i64,
        kind: EventKind,
        who: &Who,
        text: &str,
        data: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.insert_event(id, at, kind, Actor { by: Some(&who.by), key: who.key.as_deref() }, text, data).await
    }

    async fn insert_event(
        &self,
        id: i64,
        at: i64,
        kind: EventKind,
        actor: Actor<'_>,
        text: &str,
        data: Option<&serde_json::Value>,
    ) -> Result<()> {
        insert_event_on(&mut *self.pool.acquire().await?, id, at, kind, actor, text, data).await
    }

    /// A worse severity: the escalation plan starts over at step 0.
    pub async fn upgrade(&self, id: i64, severity: Severity, value: f64, threshold: f64, now: i64) -> Result<()> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE incidents SET severity = $2, value = $3, threshold = $4, state = 'firing', acked_at = NULL, acked_by = NULL,
                 plan_started_at = $5, steps_paged = 0
             WHERE id = $1 AND state <> 'resolved' AND {}",
            self.fence_sql()
        )))
        .bind(id)
        .bind(severity.as_str())
        .bind(finite(value))
        .bind(finite(threshold))
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.check_fence().await?;
        }
        Ok(())
    }

    /// Claims a grouped first page of `incident`, restarting its plan at
    /// `now` (when its on-call was paged, the escalation clock's start).
    pub async fn claim_grouped_page(&self, incident: &Incident, now: i64) -> Result<bool> {
        self.move_plan(incident, 1, now).await
    }

    /// Claims the escalation steps `from..to` of `incident`'s current plan:
    /// `true` for the one caller that moves `steps_paged` from `from` to
    /// `to`; `false` when another did, or the incident was acknowledged,
    /// upgraded (a new plan) or resolved meanwhile.
    pub async fn claim_steps(&self, incident: &Incident, to: i64) -> Result<bool> {
        self.move_plan(incident, to, incident.plan_started_at).await
    }

    /// Moves `incident` from the steps and plan it was read with to `to`
    /// steps of a plan begun at `plan_started_at`, if nobody else did.
    async fn move_plan(&self, incident: &Incident, to: i64, plan_started_at: i64) -> Result<bool> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE incidents SET steps_paged = $2, plan_started_at = $5
             WHERE id = $1 AND steps_paged = $3 AND plan_started_at = $4 AND state = 'firing' AND {}",
            self.fence_sql()
        )))
        .bind(incident.id)
        .bind(to)
        .bind(incident.steps_paged)
        .bind(incident.plan_started_at)
        .bind(plan_started_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.check_fence().await?;
            return Ok(false);
        }
        Ok(true)
    }

    pub async fn ack(&self, id: i64, who: impl Into<Who>, now: i64) -> Result<Incident> {
        let who = who.into();
        let by = who.by.as_str();
        let current = self.get(id).await?;
        match current.state {
            State::Resolved => return Err(IncidentError::Resolved(id)),
            State::Acked => return Ok(current),
            State::Firing => {}
        }
        sqlx::query(
            "UPDATE incidents SET state = 'acked', acked_at = $2, acked_by = $3 WHERE id = $1 AND state = 'firing'",
        )
        .bind(id)
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?;
        self.record_change(id, now, EventKind::Acked, &who, &format!("acknowledged by {by}"), None).await?;
        self.get(id).await
    }

    /// Resolves; `Ok(None)` when it already was.
    pub async fn resolve(&self, id: i64, who: impl Into<Who>, now: i64) -> Result<Option<Incident>> {
        self.resolve_notifying(id, who, now, |_, _| Ok(Vec::new())).await
    }

    /// Resolves and writes the pages that say so, in one transaction:
    /// `pages` is given the resolved incident and everyone paged about it
    /// (per channel, see [`Store::paged`]) and returns the rows to write.
    /// Either all of it lands or none: a write refused halfway (the
    /// database gone, the lease lost) leaves the incident open, so the
    /// evaluator's retry resolves it again and nobody misses the news.
    /// `Ok(None)` when it already was resolved.
    pub async fn resolve_notifying(
        &self,
        id: i64,
        who: impl Into<Who>,
        now: i64,
        pages: impl FnOnce(&Incident, &[(String, String)]) -> Result<Vec<NewPage>>,
    ) -> Result<Option<Incident>> {
        let who = who.into();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE incidents SET state = 'resolved', resolved_at = $2 WHERE id = $1 AND state <> 'resolved' AND {}",
            self.fence_sql()
        )))
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            get_on(&mut tx, id).await?;
            self.check_fence_on(&mut tx).await?;
            return Ok(None);
        }
        let actor = Actor { by: Some(&who.by), key: who.key.as_deref() };
        insert_event_on(&mut tx, id, now, EventKind::Resolved, actor, &format!("resolved by {}", who.by), None).await?;
        let resolved = get_on(&mut tx, id).await?;
        let paged = paged_on(&mut tx, id).await?;
        for page in pages(&resolved, &paged)? {
            self.enqueue_on(&mut tx, &[id], &page, now).await?;
        }
        tx.commit().await?;
        Ok(Some(resolved))
    }

    pub async fn add_silence(&self, s: &Silence) -> Result<Silence> {
        let row = sqlx::query(
            "INSERT INTO silences (kind, matchers, starts_at, ends_at, created_by, comment, key_name) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(match s.kind {
            SilenceKind::Silence => "silence",
            SilenceKind::Maintenance => "maintenance",
        })
        .bind(serde_json::to_string(&s.matchers)?)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(&s.created_by)
        .bind(&s.comment)
        .bind(s.key.as_deref())
        .fetch_one(&self.pool)
        .await?;
        Ok(Silence { id: row.try_get("id")?, ..s.clone() })
    }

    /// Silences not yet ended at `now` (including future maintenance).
    pub async fn silences(&self, now: i64) -> Result<Vec<Silence>> {
        let rows = sqlx::query("SELECT id, kind, matchers, starts_at, ends_at, created_by, comment, key_name FROM silences WHERE ends_at > $1 ORDER BY id")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let matchers: String = r.try_get("matchers")?;
                Ok(Silence {
                    id: r.try_get("id")?,
                    kind: match kind.as_str() {
                        "silence" => SilenceKind::Silence,
                        "maintenance" => SilenceKind::Maintenance,
                        other => {
                            return Err(unreadable(
                                "silence kind",
                                format!("{other:?} (expected silence or maintenance)"),
                            ));
                        }
                    },
                    matchers: serde_json::from_str(&matchers).map_err(|e| unreadable("silence matchers", e))?,
                    starts_at: r.try_get("starts_at")?,
                    ends_at: r.try_get("ends_at")?,
                    created_by: r.try_get("created_by")?,
                    comment: r.try_get("comment")?,
                    key: r.try_get("key_name")?,
                })
            })
            .collect()
    }

    /// Ends a silence now.
    pub async fn expire_silence(&self, id: i64, now: i64) -> Result<()> {
        let done = sqlx::query("UPDATE silences SET ends_at = $2 WHERE id = $1 AND ends_at > $2")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(IncidentError::SilenceNotFound(id));
        }
        Ok(())
    }
}

/// The two columns of a timeline event that say who made it.
struct Actor<'a> {
    by: Option<&'a str>,
    key: Option<&'a str>,
}

/// NaN and infinities cannot be stored portably; they read back as 0.
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    /// The API document lists the timeline's kinds: every one, no other.
    #[test]
    fn the_api_document_names_every_timeline_kind() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let text = doc["components"]["schemas"]["Event"]["properties"]["kind"]["description"].as_str().unwrap();
        let named: Vec<&str> =
            text.trim_end_matches('.').split(", ").map(|k| k.split_whitespace().next().unwrap_or_default()).collect();
        let mut named = named;
        named.sort_unstable();
        let mut kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        assert_eq!(named, kinds);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::try_from(kind.as_str()).unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
