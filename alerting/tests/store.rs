//! The incident store, one suite for both backends: SQLite (the default)
//! and PostgreSQL (a database of this test's own on the local server).

use std::time::Duration;

use alerting::{
    incidents::{EventKind, IncidentError, NewIncident, Retention, Silence, SilenceKind, State, Store},
    rules::{Op, Severity},
};
/// A store on `backend`, and what removes it when dropped.
async fn store(backend: &str) -> (Store, Box<dyn std::any::Any>) {
    let (store, _, cleanup) = store_at(backend).await;
    (store, cleanup)
}

/// [`store`], with its database URL (for changing rows behind its back).
async fn store_at(backend: &str) -> (Store, String, Box<dyn std::any::Any>) {
    match backend {
        "sqlite" => {
            let dir = testkit::TempDir::new("alerting-store");
            let url = format!("sqlite://{}", dir.path("incidents.db").display());
            let store = Store::connect(&url).await.unwrap();
            (store, url, Box::new(dir))
        }
        _ => {
            let db = testkit::Database::create("alerting_store").await;
            let store = Store::connect(&db.url).await.unwrap();
            (store, db.url.clone(), Box::new(db))
        }
    }
}

/// A row this version cannot read is refused with what is wrong in it,
/// never read as a default (bad labels as none, an unknown severity as a
/// warning). States and silence kinds have CHECK constraints besides.
async fn unreadable_rows(backend: &str) {
    let (store, url, _cleanup) = store_at(backend).await;
    let (incident, _) = store.open(&new_incident("a{}", 1_000)).await.unwrap();
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    let tamper = async |sql: &str| {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(incident.id).execute(&db).await.unwrap();
    };
    tamper("UPDATE incidents SET labels = 'route=/' WHERE id = $1").await;
    let err = store.get(incident.id).await.unwrap_err();
    assert!(matches!(err, IncidentError::Unreadable { what: "incident labels", .. }), "{err}");
    tamper("UPDATE incidents SET labels = '{}', severity = 'page' WHERE id = $1").await;
    let err = store.get(incident.id).await.unwrap_err();
    assert!(matches!(err, IncidentError::Unreadable { what: "incident severity", .. }), "{err}");
    assert!(err.to_string().contains("page"), "{err}");
    tamper("UPDATE incidents SET severity = 'critical', op = 'sideways' WHERE id = $1").await;
    assert!(matches!(store.get(incident.id).await, Err(IncidentError::Unreadable { what: "incident comparison", .. })));
    tamper("UPDATE incidents SET op = 'above' WHERE id = $1").await;
    store.record(incident.id, 2_000, EventKind::Note, Some("kim"), "looking", None).await.unwrap();
    tamper("UPDATE timeline SET kind = 'hug' WHERE incident_id = $1").await;
    let err = store.timeline(incident.id).await.unwrap_err();
    assert!(matches!(err, IncidentError::Unreadable { what: "timeline event kind", .. }), "{err}");
    tamper("UPDATE timeline SET kind = 'note', data = '{' WHERE incident_id = $1").await;
    assert!(matches!(
        store.timeline(incident.id).await,
        Err(IncidentError::Unreadable { what: "timeline event data", .. })
    ));
    tamper("UPDATE timeline SET data = NULL WHERE incident_id = $1").await;
    assert_eq!(store.timeline(incident.id).await.unwrap()[0].kind, EventKind::Note);
    tamper("UPDATE incidents SET severity = 'critical' WHERE id = $1").await;
    assert_eq!(store.get(incident.id).await.unwrap().severity, Severity::Critical);
}

#[tokio::test]
async fn unreadable_rows_are_refused_not_defaulted_on_sqlite() {
    unreadable_rows("sqlite").await;
}

#[tokio::test]
async fn unreadable_rows_are_refused_not_defaulted_on_postgres() {
    unreadable_rows("postgres").await;
}

fn new_incident(fingerprint: &str, at: i64) -> NewIncident {
    NewIncident {
        fingerprint: fingerprint.into(),
        rule_id: "high-error-rate".into(),
        alert: "HighErrorRate".into(),
        severity: Severity::Warning,
        summary: "errors".into(),
        labels: [("route".to_string(), "/v1/reservations".to_string())].into(),
        value: f64::NAN,
        threshold: 0.01,
        op: Op::Above,
        started_at: at,
        paged_at: at,
    }
}

async fn lifecycle(backend: &str) {
    let (store, cleanup) = store(backend).await;
    let (first, created) = store.open(&new_incident("a{}", 1_000)).await.unwrap();
    assert!(created);
    assert_eq!(first.value, 0.0, "NaN is stored as 0");
    // One open incident per fingerprint, however often it is opened.
    let (again, created) = store.open(&new_incident("a{}", 2_000)).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    let (other, _) = store.open(&new_incident("b{}", 2_000)).await.unwrap();
    assert_ne!(other.id, first.id);

    // The outbox: a dedup key writes once; due rows come back in order.
    assert!(store.enqueue(first.id, "k1", "slack", "[]", "{}", 5_000).await.unwrap());
    assert!(!store.enqueue(first.id, "k1", "slack", "[]", "{}", 6_000).await.unwrap());
    assert!(store.enqueue(first.id, "k2", "email", "[]", "{}", 7_000).await.unwrap());
    assert_eq!(store.due(6_000, 10).await.unwrap().len(), 1);
    let due = store.due(7_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>(), ["slack", "email"]);
    store.retry_later(&due[0], 9_000, "429").await.unwrap();
    store.delivered(&due[1], 7_500).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(9_000));
    assert!(store.due(8_999, 10).await.unwrap().is_empty());

    // Upgrade, ack, resolve; the timeline keeps each.
    store.upgrade(first.id, Severity::Critical, 0.2, 0.01, 10_000).await.unwrap();
    let acked = store.ack(first.id, "kim", 11_000).await.unwrap();
    assert_eq!(
        (acked.state, acked.severity, acked.acked_by.as_deref()),
        (State::Acked, Severity::Critical, Some("kim"))
    );
    assert_eq!(acked.steps_paged, 0, "the upgrade restarted the plan");
    assert!(store.resolve(first.id, "alerting", 12_000).await.unwrap().is_some());
    assert!(store.resolve(first.id, "alerting", 13_000).await.unwrap().is_none(), "resolving twice is a no-op");
    assert!(matches!(store.ack(first.id, "kim", 14_000).await, Err(IncidentError::Resolved(_))));
    assert!(matches!(store.get(999_999).await, Err(IncidentError::NotFound(999_999))));
    let kinds: Vec<String> = store.timeline(first.id).await.unwrap().into_iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds, ["acked", "resolved"]);
    // A resolved fingerprint can open a new incident.
    let (reopened, created) = store.open(&new_incident("a{}", 20_000)).await.unwrap();
    assert!(created && reopened.id != first.id);
    assert_eq!(store.list(Some(State::Firing), 10).await.unwrap().len(), 2);
    // "Open" is asked of the database, not filtered from the newest page of
    // everything: with the newest incident resolved, the open ones still list.
    store.resolve(reopened.id, "alerting", 21_000).await.unwrap();
    let open = store.list_open(1).await.unwrap();
    assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [other.id]);
    assert_eq!(store.count_open().await.unwrap(), 1);
    assert_eq!(store.pending_pages().await.unwrap(), 1, "the slack row waits for its retry");

    // Silences: active window, matchers, expiry.
    let silence = store
        .add_silence(&Silence {
            id: 0,
            kind: SilenceKind::Maintenance,
            matchers: [("rule_id".to_string(), "high-error-rate".to_string())].into(),
            starts_at: 30_000,
            ends_at: 40_000,
            created_by: "kim".into(),
            comment: "upgrade".into(),
            key: None,
        })
        .await
        .unwrap();
    let labels = [("rule_id".to_string(), "high-error-rate".to_string())].into();
    let active = store.silences(35_000).await.unwrap();
    assert!(active[0].matches(&labels, 35_000) && !active[0].matches(&labels, 29_999));
    store.expire_silence(silence.id, 36_000).await.unwrap();
    assert!(store.silences(36_000).await.unwrap().is_empty());
    assert!(matches!(store.expire_silence(silence.id, 37_000).await, Err(IncidentError::SilenceNotFound(_))));
    store.close().await;
    drop(cleanup);
}

const DAY: i64 = 86_400_000;

fn silence(ends_at: i64) -> Silence {
    Silence {
        id: 0,
        kind: SilenceKind::Silence,
        matchers: [("rule_id".to_string(), "x".to_string())].into(),
        starts_at: ends_at - DAY,
        ends_at,
        created_by: "kim".into(),
        comment: "c".into(),
        key: None,
    }
}

/// Retention at an injected `now`: what is older than the policy goes, the
/// rest (and every open incident, and every page still to send) stays.
async fn retention(backend: &str) {
    let (store, cleanup) = store(backend).await;
    let now = 1_900_000_000_000;
    let resolved = async |fingerprint: &str, resolved_at: i64| {
        let (i, _) = store.open(&new_incident(fingerprint, resolved_at - DAY)).await.unwrap();
        store.record(i.id, resolved_at - DAY, EventKind::Note, Some("kim"), "runbook output", None).await.unwrap();
        assert!(
            store
                .enqueue(i.id, &format!("{fingerprint}:page"), "console", "[]", "{}", resolved_at - DAY)
                .await
                .unwrap()
        );
        store.resolve(i.id, "alerting", resolved_at).await.unwrap();
        i.id
    };
    let old = resolved("old{}", now - 91 * DAY).await;
    let recent = resolved("recent{}", now - 30 * DAY).await;
    let fresh = resolved("fresh{}", now - DAY).await;
    // A page still pending keeps its incident, however old.
    let (stuck, _) = store.open(&new_incident("stuck{}", now - 200 * DAY)).await.unwrap();
    store.enqueue(stuck.id, "stuck:page", "slack", "[]", "{}", now - 200 * DAY).await.unwrap();
    store.resolve(stuck.id, "alerting", now - 199 * DAY).await.unwrap();
    let (open, _) = store.open(&new_incident("open{}", now - 300 * DAY)).await.unwrap();
    store.enqueue(open.id, "open:page", "console", "[]", "{}", now - 300 * DAY).await.unwrap();
    // Every console page was delivered as soon as it was written.
    for row in store.due(now, 100).await.unwrap().into_iter().filter(|r| r.channel == "console") {
        store.delivered(&row, row.created_at).await.unwrap();
    }
    store.add_silence(&silence(now - 100 * DAY)).await.unwrap();
    store.add_silence(&silence(now + DAY)).await.unwrap();

    let policy =
        Retention { incidents: Some(Duration::from_secs(90 * 86_400)), outbox: Some(Duration::from_secs(7 * 86_400)) };
    let purged = store.purge(&policy, now).await.unwrap();
    assert_eq!((purged.incidents, purged.timeline, purged.silences), (1, 2, 1), "{purged:?}");
    assert!(matches!(store.get(old).await, Err(IncidentError::NotFound(_))));
    assert!(store.timeline(old).await.unwrap().is_empty());
    for kept in [recent, fresh, stuck.id, open.id] {
        assert!(store.get(kept).await.is_ok(), "incident {kept} is kept");
    }
    // Pages: the old incident's went with it; the 30-day-old resolved one's
    // delivered page is past the outbox retention; the fresh one's is not;
    // the open incident's pages say who hears of its resolution, so stay.
    assert_eq!(purged.outbox, 2, "{purged:?}");
    assert!(store.paged(recent).await.unwrap().is_empty());
    assert_eq!(store.paged(fresh).await.unwrap().len(), 1);
    assert_eq!(store.paged(open.id).await.unwrap().len(), 1);
    assert_eq!(store.paged(stuck.id).await.unwrap().len(), 1, "pending pages are never deleted");
    assert_eq!(store.timeline(recent).await.unwrap().len(), 2, "timelines stay until the incident goes");
    assert_eq!(store.silences(now - 200 * DAY).await.unwrap().len(), 1, "only the silence that ended long ago went");
    assert_eq!(store.purge(&policy, now).await.unwrap(), Default::default(), "a second run finds nothing");
    // No policy, nothing deleted.
    let keep = Retention { incidents: None, outbox: None };
    assert_eq!(store.purge(&keep, now + 1000 * DAY).await.unwrap(), Default::default());
    store.close().await;
    drop(cleanup);
}

#[tokio::test]
async fn retention_deletes_only_what_is_older_than_the_policy_on_sqlite() {
    retention("sqlite").await;
}

#[tokio::test]
async fn retention_deletes_only_what_is_older_than_the_policy_on_postgres() {
    retention("postgres").await;
}

#[tokio::test]
async fn the_incident_lifecycle_on_sqlite() {
    lifecycle("sqlite").await;
}

#[tokio::test]
async fn the_incident_lifecycle_on_postgres() {
    lifecycle("postgres").await;
}

/// Two processes on one database: the lease goes to one at a time, a
/// holder whose lease passed on can write nothing, and two senders claim
/// disjoint pages.
#[tokio::test]
async fn the_lease_fences_a_stale_evaluator_and_claims_split_the_outbox_on_postgres() {
    let db = testkit::Database::create("alerting_store").await;
    let (one, two) = (Store::connect(&db.url).await.unwrap(), Store::connect(&db.url).await.unwrap());
    let ttl = Duration::from_millis(300);
    let first = one.acquire(ttl, false).await.unwrap().expect("a free lease is taken");
    assert!(two.acquire(ttl, false).await.unwrap().is_none(), "a held lease is not");
    let stale = one.fenced(first.fence.clone());
    let (held, created) = stale.open(&new_incident("a{}", 1_000)).await.unwrap();
    assert!(created, "a write under a live lease is made");
    assert!(one.renew(&first.fence, ttl, "{}").await.unwrap());

    // The holder stalls past its lease; the other takes over.
    let mut second = None;
    while second.is_none() {
        second = two.acquire(ttl, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = second.unwrap();
    assert_eq!(
        (second.fence.epoch, second.state.as_deref()),
        (first.fence.epoch + 1, Some("{}")),
        "the saved state is handed over"
    );
    // (A long lease from here on, so the new holder's writes cannot lapse mid-test.)
    assert!(two.renew(&second.fence, Duration::from_secs(30), "{}").await.unwrap());
    let fenced = |r: Result<_, IncidentError>| matches!(r, Err(IncidentError::Fenced(e)) if e == first.fence.epoch);
    assert!(fenced(stale.open(&new_incident("b{}", 2_000)).await.map(|_| ())));
    assert!(fenced(stale.enqueue(held.id, "k", "slack", "[]", "{}", 2_000).await.map(|_| ())));
    assert!(fenced(stale.claim_steps(&held, 1).await.map(|_| ())));
    assert!(fenced(stale.upgrade(held.id, Severity::Critical, 1.0, 0.5, 2_000).await));
    assert!(fenced(stale.resolve(held.id, "alerting", 2_000).await.map(|_| ())));
    assert!(fenced(stale.set_group_flushed("backend", 2_000).await), "nor may it go on paging its groups");
    assert_eq!(one.group_flushed("backend").await.unwrap(), None);
    assert!(!one.renew(&first.fence, ttl, "stale").await.unwrap(), "nor can it renew");
    let now = one.get(held.id).await.unwrap();
    assert_eq!(
        (now.state, now.severity, now.steps_paged),
        (State::Firing, Severity::Warning, 0),
        "nothing was written"
    );
    assert!(one.due(i64::MAX, 10).await.unwrap().is_empty());
    assert!(one.find_open("b{}").await.unwrap().is_none());
    // The new holder writes; a clean stop hands the lease straight back.
    assert!(two.fenced(second.fence.clone()).claim_steps(&held, 1).await.unwrap());
    assert!(!two.fenced(second.fence.clone()).claim_steps(&held, 1).await.unwrap(), "a step is claimed once");
    two.release(&second.fence).await.unwrap();
    assert_eq!(
        one.acquire(Duration::from_secs(30), false).await.unwrap().map(|l| l.fence.epoch),
        Some(second.fence.epoch + 1)
    );

    // Two senders claim disjoint rows; a claim that lapsed passes on, and
    // its first holder may then neither send nor record.
    for i in 0..10 {
        one.enqueue(held.id, &format!("page{i}"), "slack", "[]", "{}", 10_000).await.unwrap();
    }
    let (a, b) = tokio::join!(one.claim("slack", 10_000, 6, 1_000), two.claim("slack", 10_000, 10, 1_000));
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    let mut ids: Vec<i64> = a.rows.iter().chain(&b.rows).map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), a.rows.len() + b.rows.len()), (10, 10), "every row claimed once");
    let row = a.rows.first().or(b.rows.first()).unwrap().clone();
    let (owner, thief) = if a.rows.iter().any(|r| r.id == row.id) { (&one, &two) } else { (&two, &one) };
    assert!(
        thief.claim("slack", 10_500, 10, 1_000).await.unwrap().unwrap().rows.is_empty(),
        "claimed rows are not due"
    );
    let taken = thief.claim("slack", 11_000, 10, 1_000).await.unwrap().unwrap();
    assert_eq!(taken.rows.len(), 10, "lapsed claims are due again");
    assert!(taken.rows.iter().all(|r| r.attempts == 2), "each claim counts an attempt");
    assert!(!owner.still_mine(&row, 11_000, 1_000).await.unwrap());
    assert!(!owner.delivered(&row, 11_000).await.unwrap());
    let mine = taken.rows.iter().find(|r| r.id == row.id).unwrap();
    assert!(thief.still_mine(mine, 11_000, 1_000).await.unwrap());
    assert!(thief.delivered(mine, 11_100).await.unwrap());
}

#[tokio::test]
async fn a_single_sqlite_process_takes_its_lease_at_once_and_fences_its_old_epochs() {
    let (store, _cleanup) = store("sqlite").await;
    let ttl = Duration::from_secs(30);
    let first = store.acquire(ttl, true).await.unwrap().unwrap();
    // After a crash the file lock, not the lease, says who may evaluate.
    let second = store.acquire(ttl, true).await.unwrap().unwrap();
    assert_eq!(second.fence.epoch, first.fence.epoch + 1);
    assert!(store.fenced(second.fence.clone()).open(&new_incident("a{}", 1_000)).await.unwrap().1);
    assert!(matches!(
        store.fenced(first.fence.clone()).open(&new_incident("b{}", 1_000)).await,
        Err(IncidentError::Fenced(_))
    ));
    assert!(store.renew(&second.fence, ttl, "{\"alerts\":[]}").await.unwrap());
    assert_eq!(store.evaluator().await.unwrap().and_then(|e| e.state).as_deref(), Some("{\"alerts\":[]}"));
}
