//! Paging, escalation, acknowledgement, resolution and delivery, driven on
//! virtual time: every call takes `now`, so a 35-minute escalation runs in
//! milliseconds and nothing sleeps.

mod support {
    pub mod slack_receiver;
}

use std::{path::PathBuf, time::Duration};

use alerting::{
    engine::{AlertKey, Transition},
    incidents::{self, Silence, SilenceKind, State},
    metrics::Metrics,
    notify::{Channel, Notifier, console::Console, slack::Slack},
    oncall::Roster,
    rules::{Condition, Level, Op, Rule, Severity, Unit},
    service::{Channels, Config, Failpoint, Service, ServiceError},
};
use serde_json::Value;
use support::slack_receiver::{Reply, SlackReceiver};

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

fn rule(owner: &str) -> Rule {
    let c = |op, threshold| Condition { expr: "x".into(), op, threshold };
    Rule {
        id: "high-error-rate".into(),
        name: "HighErrorRate".into(),
        summary: "More than 1% of requests fail".into(),
        owner: owner.into(),
        runbook: "high-error-rate".into(),
        dashboard: Some("/d/booking-overview".into()),
        unit: Unit::Ratio,
        levels: vec![Level {
            severity: Severity::Critical,
            fire: vec![c(Op::Above, 0.01)],
            for_: Duration::from_secs(60),
            clear: vec![c(Op::Below, 0.005)],
            clear_for: Duration::from_secs(60),
        }],
        no_data_for: Duration::from_secs(120),
        no_data_severity: Severity::Warning,
        labels: Default::default(),
        line: 1,
    }
}

fn fired(severity: Severity) -> Transition {
    Transition::Fired {
        key: AlertKey { rule_id: "high-error-rate".into(), labels: Default::default() },
        severity,
        value: 0.2,
        threshold: 0.01,
        op: Op::Above,
        since_ms: T0 - MIN,
        detail: "More than 1% of requests fail".into(),
    }
}

struct Harness {
    service: Service,
    console: PathBuf,
    dir: testkit::TempDir,
}

async fn harness(slack: Option<&str>, config: Config) -> Harness {
    let dir = testkit::TempDir::new("alerting-service");
    let console = dir.path("pages.jsonl");
    let store = incidents::Store::connect(&format!("sqlite://{}", dir.path("incidents.db").display())).await.unwrap();
    let channels = Channels {
        slack: slack.map(|url| Notifier::Slack(Slack::new(url, Duration::from_secs(5)))),
        email: None,
        console: Notifier::Console(Console::file(&console)),
    };
    let service =
        Service::new(store, Roster::example(), vec![rule("backend"), warning_rule()], channels, config, Metrics::new());
    Harness { service, console, dir }
}

impl Harness {
    /// A second connection to the harness's SQLite file, for changing rows
    /// behind the service's back.
    async fn raw_db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&format!("sqlite://{}", self.dir.path("incidents.db").display())).await.unwrap()
    }
}

fn warning_rule() -> Rule {
    let mut r = rule("backend");
    r.id = "slow".into();
    r.name = "HighP95Latency".into();
    r.levels[0].severity = Severity::Warning;
    r
}

fn console_pages(h: &Harness) -> Vec<Value> {
    std::fs::read_to_string(&h.console).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn names(page: &Value) -> Vec<String> {
    page["to"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_warning_pages_the_owner_then_escalates_on_time_until_acknowledged() {
    let h = harness(None, Config::default()).await;
    h.service.apply(vec![slow_on("/", T0)], T0).await.unwrap();
    h.service.deliver(T0).await.unwrap();
    let pages = console_pages(&h);
    assert_eq!(pages.len(), 1, "step 0 only: {pages:?}");
    let owner = names(&pages[0]);
    assert_eq!(owner.len(), 1);
    assert!(owner[0].contains("(backend)"), "the owner role's on-call: {owner:?}");

    // The backend role's response target is 10 minutes: nothing before.
    h.service.escalate(T0 + 10 * MIN - 1).await.unwrap();
    h.service.deliver(T0 + 10 * MIN - 1).await.unwrap();
    assert_eq!(console_pages(&h).len(), 1);
    h.service.escalate(T0 + 10 * MIN).await.unwrap();
    h.service.deliver(T0 + 10 * MIN).await.unwrap();
    let pages = console_pages(&h);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1]["page"]["kind"]["type"], "escalated");
    assert!(names(&pages[1]).iter().all(|n| n.contains("(incident-lead)")), "{:?}", names(&pages[1]));

    // Acknowledged: no further level, however long it stays open.
    let incident = h.service.store.list(None, 10).await.unwrap().remove(0);
    h.service.ack(incident.id, "lee", T0 + 11 * MIN).await.unwrap();
    for minute in [15, 35, 60, 600] {
        h.service.escalate(T0 + minute * MIN).await.unwrap();
        h.service.deliver(T0 + minute * MIN).await.unwrap();
    }
    assert_eq!(console_pages(&h).len(), 2, "ack stops escalation");
    let kinds: Vec<String> =
        h.service.store.timeline(incident.id).await.unwrap().into_iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds, ["fired", "paged", "delivered", "escalated", "delivered", "acked"]);
}

#[tokio::test]
async fn without_an_ack_escalation_continues_to_its_limit_and_stops() {
    let h = harness(None, Config::default()).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    for minute in 0..=300 {
        h.service.escalate(T0 + minute * MIN).await.unwrap();
    }
    h.service.deliver(T0 + 300 * MIN).await.unwrap();
    let pages = console_pages(&h);
    let incident = h.service.store.list(None, 1).await.unwrap().remove(0);
    let roster = Roster::example();
    let plan = alerting::oncall::plan(&roster, Severity::Critical, "backend");
    assert_eq!(pages.len(), plan.len(), "one page per plan step, then no more");
    assert_eq!(incident.steps_paged as usize, plan.len());
}

#[tokio::test]
async fn a_critical_alert_pages_every_role_at_once_and_the_resolution_reaches_them_all() {
    let h = harness(None, Config::default()).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    h.service.deliver(T0).await.unwrap();
    let pages = console_pages(&h);
    assert_eq!(pages.len(), 1);
    let paged = names(&pages[0]);
    for role in ["incident-lead", "backend", "infra", "dba"] {
        assert!(paged.iter().any(|n| n.contains(&format!("({role})"))), "{role} missing from {paged:?}");
    }
    let page = &pages[0]["page"];
    assert!(page["runbook_url"].as_str().unwrap().ends_with("/high-error-rate.md"));
    assert_eq!(page["runbook_command"], format!("runbook run high-error-rate --incident {}", page["incident_id"]));

    // The same transition again (a retried evaluation) opens nothing new.
    h.service.apply(vec![fired(Severity::Critical)], T0 + 1000).await.unwrap();
    assert_eq!(h.service.store.list(None, 10).await.unwrap().len(), 1);

    let resolved = Transition::Resolved {
        key: AlertKey { rule_id: "high-error-rate".into(), labels: Default::default() },
        value: 0.0,
    };
    h.service.apply(vec![resolved], T0 + 5 * MIN).await.unwrap();
    h.service.deliver(T0 + 5 * MIN).await.unwrap();
    let pages = console_pages(&h);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1]["page"]["kind"]["type"], "resolved");
    let mut told = names(&pages[1]);
    told.sort();
    paged.clone().sort();
    let mut want = paged;
    want.sort();
    assert_eq!(told, want, "whoever was paged hears it resolved");
    assert_eq!(h.service.store.list(None, 1).await.unwrap()[0].state, State::Resolved);
}

#[tokio::test]
async fn slack_answering_429_then_500_then_200_gets_exactly_one_message() {
    let rx = SlackReceiver::start(vec![Reply::TooMany { retry_after_secs: 7 }, Reply::ServerError, Reply::Ok]).await;
    let h = harness(Some(&rx.url), Config::default()).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    assert_eq!(h.service.deliver(T0).await.unwrap(), 1, "the console copy");
    assert_eq!(rx.attempts(), 1);
    // Retry-After: 7 is honoured to the millisecond.
    assert_eq!(h.service.deliver(T0 + 6_999).await.unwrap(), 0);
    assert_eq!(rx.attempts(), 1);
    h.service.deliver(T0 + 7_000).await.unwrap();
    assert_eq!(rx.attempts(), 2, "retried after 7 s, got a 500");
    // Then backoff; keep the clock moving until it is through.
    let mut now = T0 + 7_000;
    while rx.delivered().is_empty() && now < T0 + 10 * MIN {
        now += 500;
        h.service.deliver(now).await.unwrap();
    }
    for later in 1..20 {
        h.service.deliver(now + later * MIN).await.unwrap();
    }
    assert_eq!(rx.delivered().len(), 1, "exactly one message");
    assert_eq!(rx.attempts(), 3);
    assert!(rx.violations().is_empty(), "{:?}", rx.violations());
    let text = rx.delivered()[0].to_string();
    assert!(text.contains("high-error-rate.md") && text.contains("alerting ack"), "{text}");
}

/// A failpoint is an error the library returns (the binary turns it into
/// its exit): the page is written, nothing is sent, and `crashed` says so.
/// Were it `process::exit`, this test's own process would end here.
#[tokio::test]
async fn a_failpoint_is_an_error_and_leaves_its_page_written_and_unsent() {
    let config = Config { failpoint: Some(Failpoint::AfterOutboxWrite), ..Config::default() };
    let h = harness(None, config).await;
    let err = h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap_err();
    assert!(matches!(err, ServiceError::Failpoint(Failpoint::AfterOutboxWrite)), "{err}");
    let point = tokio::time::timeout(Duration::from_secs(5), h.service.crashed()).await.expect("crashed resolves");
    assert_eq!(point.exit_code(), 86);
    assert!(console_pages(&h).is_empty(), "nothing sent");
    assert_eq!(h.service.store.pending_pages().await.unwrap(), 1, "the page is in the outbox");
    assert_eq!(Failpoint::try_from("after-claim"), Ok(Failpoint::AfterClaim));
    assert!(Failpoint::try_from("after-lunch").unwrap_err().contains("after-outbox-write, after-claim"));
}

/// A row whose recipients cannot be read fails at once and falls back,
/// rather than going out to nobody.
#[tokio::test]
async fn unreadable_recipients_in_the_outbox_fail_the_row_and_fall_back() {
    let rx = SlackReceiver::start(vec![]).await;
    let h = harness(Some(&rx.url), Config { fallback: Channel::Console, ..Config::default() }).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    let db = h.raw_db().await;
    let changed = sqlx::query("UPDATE outbox SET recipients = 'backend-oncall' WHERE channel = 'slack'")
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    h.service.deliver(T0).await.unwrap();
    h.service.deliver(T0 + 1000).await.unwrap();
    assert_eq!(rx.attempts(), 0, "nothing was sent to Slack for nobody");
    let kinds: Vec<Value> = console_pages(&h).iter().map(|p| p["page"]["kind"]["type"].clone()).collect();
    assert_eq!(kinds, ["firing", "delivery_failed"], "the console copy and the fallback");
    let incident = h.service.store.list(None, 1).await.unwrap().remove(0);
    let timeline = h.service.store.timeline(incident.id).await.unwrap();
    let failed = timeline.iter().find(|e| e.kind == "delivery_failed").expect("a delivery_failed event");
    assert!(failed.text.contains("unreadable recipients"), "{}", failed.text);
}

#[tokio::test]
async fn a_channel_that_keeps_failing_falls_back_and_the_failure_is_an_incident_event() {
    let rx = SlackReceiver::start(vec![Reply::ServerError; 10]).await;
    let config = Config {
        max_attempts: 3,
        retry_base: Duration::from_millis(100),
        fallback: Channel::Console,
        ..Config::default()
    };
    let h = harness(Some(&rx.url), config).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    for step in 0..100 {
        h.service.deliver(T0 + step * 1000).await.unwrap();
    }
    assert_eq!(rx.attempts(), 3);
    assert!(rx.delivered().is_empty());
    let pages = console_pages(&h);
    assert_eq!(pages.len(), 2, "the console copy and the fallback: {pages:?}");
    assert_eq!(pages[1]["page"]["kind"]["type"], "delivery_failed");
    let incident = h.service.store.list(None, 1).await.unwrap().remove(0);
    let timeline = h.service.store.timeline(incident.id).await.unwrap();
    assert!(timeline.iter().any(|e| e.kind == "delivery_failed" && e.text.contains("slack")), "{timeline:?}");
}

#[tokio::test]
async fn a_silence_suppresses_pages_but_keeps_the_incident() {
    let h = harness(None, Config::default()).await;
    h.service
        .store
        .add_silence(&Silence {
            id: 0,
            kind: SilenceKind::Maintenance,
            matchers: [("rule_id".to_string(), "high-error-rate".to_string())].into(),
            starts_at: T0 - MIN,
            ends_at: T0 + 30 * MIN,
            created_by: "test".into(),
            comment: "database upgrade".into(),
            key: None,
        })
        .await
        .unwrap();
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    h.service.deliver(T0).await.unwrap();
    assert!(console_pages(&h).is_empty());
    let incident = h.service.store.list(None, 1).await.unwrap().remove(0);
    let timeline = h.service.store.timeline(incident.id).await.unwrap();
    assert!(timeline.iter().any(|e| e.kind == "silenced" && e.text.contains("database upgrade")), "{timeline:?}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_over_at_once_and_one_within_it_is_waited_for() {
    // u64::MAX seconds: far beyond the cap, and it must not wrap into "now".
    let rx = SlackReceiver::start(vec![
        Reply::TooMany { retry_after_secs: u64::MAX },
        Reply::TooMany { retry_after_secs: 30 },
    ])
    .await;
    let config = Config { retry_after_max: Duration::from_secs(60), ..Config::default() };
    let h = harness(Some(&rx.url), config).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    h.service.deliver(T0).await.unwrap();
    h.service.deliver(T0).await.unwrap();
    let pages = console_pages(&h);
    assert_eq!(pages.iter().filter(|p| p["page"]["kind"]["type"] == "delivery_failed").count(), 1, "{pages:?}");
    let incident = h.service.store.list(None, 1).await.unwrap().remove(0);
    let timeline = h.service.store.timeline(incident.id).await.unwrap();
    assert!(timeline.iter().any(|e| e.kind == "delivery_failed" && e.text.contains("Retry-After")), "{timeline:?}");
    assert_eq!(rx.attempts(), 1);

    // The resolution notice is told to wait 30 s: it is retried at 30 s, not before.
    let resolved = Transition::Resolved {
        key: AlertKey { rule_id: "high-error-rate".into(), labels: Default::default() },
        value: 0.0,
    };
    h.service.apply(vec![resolved], T0 + MIN).await.unwrap();
    h.service.deliver(T0 + MIN).await.unwrap();
    assert_eq!(rx.attempts(), 2);
    h.service.deliver(T0 + MIN + 29_999).await.unwrap();
    assert_eq!(rx.attempts(), 2);
    h.service.deliver(T0 + MIN + 30_000).await.unwrap();
    assert_eq!((rx.attempts(), rx.delivered().len()), (3, 1));
}

#[tokio::test]
async fn escalation_counts_from_the_first_page_on_the_clock_oncall_who_prints() {
    let h = harness(None, Config::default()).await;
    // The alert went pending five minutes (its `for`) before it fired at T0.
    let warning = Transition::Fired {
        key: AlertKey { rule_id: "slow".into(), labels: Default::default() },
        severity: Severity::Warning,
        value: 0.7,
        threshold: 0.5,
        op: Op::Above,
        since_ms: T0 - 5 * MIN,
        detail: "P95 above 500 ms".into(),
    };
    h.service.apply(vec![warning], T0).await.unwrap();
    let at = chrono::DateTime::from_timestamp_millis(T0).unwrap();
    let who = alerting::http::who(&Roster::example(), Severity::Warning, "backend", at);
    let after: Vec<i64> =
        who["steps"].as_array().unwrap().iter().map(|s| s["after_minutes"].as_i64().unwrap()).collect();
    assert!(after.len() >= 2 && after[0] == 0, "{who}");
    // Each level goes out when `oncall who` says, counted from the first
    // page: the rule's `for` is not taken out of the on-call's time to ack.
    for (level, minutes) in after.iter().enumerate().skip(1) {
        let due = T0 + minutes * MIN;
        h.service.escalate(due - 1).await.unwrap();
        let paged = h.service.store.list(None, 1).await.unwrap().remove(0).steps_paged;
        assert_eq!(paged as usize, level, "level {level} went out before +{minutes} min");
        h.service.escalate(due).await.unwrap();
        let paged = h.service.store.list(None, 1).await.unwrap().remove(0).steps_paged;
        assert_eq!(paged as usize, level + 1, "level {level} is due at +{minutes} min");
    }
}

#[tokio::test]
async fn a_resolved_page_carries_the_value_at_resolution_and_how_long_it_lasted() {
    let h = harness(None, Config::default()).await;
    // Fired at 20 % (the condition began a minute before T0).
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    let key = AlertKey { rule_id: "high-error-rate".into(), labels: Default::default() };
    h.service.apply(vec![Transition::Resolved { key, value: 0.001 }], T0 + 12 * MIN).await.unwrap();
    h.service.deliver(T0 + 12 * MIN).await.unwrap();
    let pages = console_pages(&h);
    let resolved = pages.iter().find(|p| p["page"]["kind"]["type"] == "resolved").expect("a resolved page");
    assert_eq!(resolved["page"]["resolved_value"], 0.001);
    assert_eq!(resolved["page"]["lasted_secs"], 13 * 60, "from the condition's start to the resolution");
    let page: alerting::notify::Page = serde_json::from_value(resolved["page"].clone()).unwrap();
    let text = page.text();
    assert!(
        text.contains("0.10 %") && !text.contains("Value:     20.00 % (>"),
        "the value at resolution, not the old firing value:\n{text}"
    );
    assert!(text.contains("13 min"), "{text}");
}

/// A resolution whose pages cannot be written (the database went away
/// halfway, or the evaluator's lease lapsed) changes nothing: the incident
/// stays open, so the evaluator's retry of the same transition resolves it
/// and pages. Resolved first and paged after, the retry would find nothing
/// open and the resolved page would never go out.
#[tokio::test]
async fn a_resolution_that_fails_halfway_is_redone_in_full_by_the_retry() {
    let h = harness(None, Config::default()).await;
    h.service.apply(vec![fired(Severity::Critical)], T0).await.unwrap();
    h.service.deliver(T0).await.unwrap();
    // While `failpoint` holds a row, writing a resolved page fails.
    let db = h.raw_db().await;
    sqlx::raw_sql(
        "CREATE TABLE failpoint (armed INTEGER);
         CREATE TRIGGER fail_resolved_pages BEFORE INSERT ON outbox
         WHEN NEW.dedup_key LIKE '%:resolved:%' AND EXISTS (SELECT 1 FROM failpoint)
         BEGIN SELECT RAISE(ABORT, 'injected: the database went away'); END;
         INSERT INTO failpoint VALUES (1);",
    )
    .execute(&db)
    .await
    .unwrap();
    let key = AlertKey { rule_id: "high-error-rate".into(), labels: Default::default() };
    let resolved = || vec![Transition::Resolved { key: key.clone(), value: 0.0 }];
    let failed = h.service.apply(resolved(), T0 + 5 * MIN).await;
    assert!(failed.is_err(), "the injected failure reaches the evaluator");
    let incident = &h.service.store.list(None, 1).await.unwrap()[0];
    assert_eq!(incident.state, State::Firing, "nothing of the failed resolution landed");

    sqlx::raw_sql("DELETE FROM failpoint").execute(&db).await.unwrap();
    h.service.apply(resolved(), T0 + 5 * MIN + 1000).await.unwrap();
    h.service.deliver(T0 + 5 * MIN + 1000).await.unwrap();
    let kinds: Vec<Value> = console_pages(&h).iter().map(|p| p["page"]["kind"]["type"].clone()).collect();
    assert_eq!(kinds, ["firing", "resolved"]);
    let timeline = h.service.store.timeline(incident.id).await.unwrap();
    assert_eq!(timeline.iter().filter(|e| e.kind == "resolved").count(), 1, "one resolution on the timeline");
    assert_eq!(h.service.store.list(None, 1).await.unwrap()[0].state, State::Resolved);
}

/// A warning of the `slow` rule on its own series (`route`).
fn slow_on(route: &str, at: i64) -> Transition {
    Transition::Fired {
        key: AlertKey { rule_id: "slow".into(), labels: [("route".to_string(), route.to_string())].into() },
        severity: Severity::Warning,
        value: 0.7,
        threshold: 0.5,
        op: Op::Above,
        since_ms: at,
        detail: "P95 above 500 ms".into(),
    }
}

/// What the console received: (kind, title-ish) per page, and how many others each lists.
fn grouped(h: &Harness) -> Vec<(String, String, usize)> {
    console_pages(h)
        .iter()
        .map(|p| {
            let page = &p["page"];
            let id = page["incident_id"].as_i64().unwrap_or_default();
            (
                page["kind"]["type"].as_str().unwrap_or_default().to_owned(),
                format!("#{id} {}", page["alert"].as_str().unwrap_or_default()),
                page["also"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

#[tokio::test]
async fn warnings_that_arrive_together_are_one_page_and_critical_never_waits() {
    let config = Config {
        grouping: Some(alerting::rules::Grouping {
            group_by: vec!["owner".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
        }),
        ..Config::default()
    };
    let h = harness(None, config).await;
    let step = async |t: Vec<Transition>, at: i64| {
        h.service.apply(t, at).await.unwrap();
        h.service.deliver(at).await.unwrap();
    };
    let s = 1_000;
    // Two warnings and a critical at once: the critical pages now.
    step(vec![slow_on("/a", T0), slow_on("/b", T0), fired(Severity::Critical)], T0).await;
    assert_eq!(grouped(&h).len(), 1);
    assert_eq!(grouped(&h)[0].0, "firing");
    assert!(grouped(&h)[0].1.ends_with("HighErrorRate"), "{:?}", grouped(&h));
    // A third warning within group_wait joins them; nothing yet.
    step(vec![slow_on("/c", T0 + 20 * s)], T0 + 20 * s).await;
    step(vec![], T0 + 29 * s).await;
    assert_eq!(grouped(&h).len(), 1, "the group waits 30 s");
    step(vec![], T0 + 30 * s).await;
    let pages = grouped(&h);
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!((pages[1].0.as_str(), pages[1].2), ("firing", 2), "one page for the three warnings: {pages:?}");
    let text = console_pages(&h)[1]["page"].to_string();
    assert!(text.contains("alerting ack") && text.contains("/c"), "each listed with its own ack: {text}");
    // A newcomer waits for the group's next page, group_interval after the last.
    step(vec![slow_on("/d", T0 + 60 * s)], T0 + 60 * s).await;
    step(vec![], T0 + 329 * s).await;
    assert_eq!(grouped(&h).len(), 2);
    step(vec![], T0 + 330 * s).await;
    let pages = grouped(&h);
    assert_eq!((pages.len(), pages[2].2), (3, 0), "{pages:?}");
    // Each stays its own incident: a member resolves alone, to whoever its group page reached.
    let b = h.service.store.find_open("slow{route=\"/b\"}").await.unwrap().unwrap();
    assert_eq!(b.steps_paged, 1);
    assert_eq!(b.plan_started_at, T0 + 30 * s, "its escalation clock starts when it was paged");
    step(
        vec![Transition::Resolved {
            key: AlertKey { rule_id: "slow".into(), labels: [("route".to_string(), "/b".to_string())].into() },
            value: 0.1,
        }],
        T0 + 400 * s,
    )
    .await;
    let last = console_pages(&h).pop().unwrap();
    assert_eq!(
        (last["page"]["kind"]["type"].as_str(), last["page"]["incident_id"].as_i64()),
        (Some("resolved"), Some(b.id))
    );
    assert_eq!(names(&last).len(), 1, "the owner's on-call, paged by the group page");
}

#[tokio::test]
async fn a_large_group_is_split_into_pages_slack_accepts() {
    let rx = SlackReceiver::start(vec![]).await;
    let config = Config {
        grouping: Some(alerting::rules::Grouping {
            group_by: vec!["owner".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
        }),
        ..Config::default()
    };
    let h = harness(Some(&rx.url), config).await;
    let many: Vec<Transition> = (0..25).map(|i| slow_on(&format!("/route/{i}/{}", "x".repeat(150)), T0)).collect();
    h.service.apply(many, T0).await.unwrap();
    h.service.apply(vec![], T0 + 30_000).await.unwrap();
    h.service.deliver(T0 + 30_000).await.unwrap();
    let pages = grouped(&h);
    assert_eq!(pages.iter().map(|p| p.2 + 1).collect::<Vec<_>>(), [10, 10, 5], "{pages:?}");
    let delivered = rx.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 3);
    assert!(rx.violations().is_empty(), "within Slack's limits: {:?}", rx.violations());
}

/// A pass can outlast its claim: here each Slack send hangs to its 3 s
/// timeout, longer than the 2 s claim. The renewal before the second row's
/// send must count from when it happens, not from the pass's start, or it
/// sets a deadline already past and a second sender takes the row while the
/// first is still sending it. Two senders on one PostgreSQL; the second
/// looks 4 s in, during the first's second send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_renewed_late_in_a_long_pass_is_not_taken_by_another_sender_mid_send() {
    let db = testkit::Database::create("alerting_service").await;
    let rx = SlackReceiver::start(vec![Reply::Hang, Reply::Hang, Reply::Hang, Reply::Hang]).await;
    let config =
        || Config { claim_timeout: Duration::from_secs(2), retry_base: Duration::from_secs(600), ..Config::default() };
    let sender = |config: Config| {
        let (url, rx_url) = (db.url.clone(), rx.url.clone());
        async move {
            let store = incidents::Store::connect(&url).await.unwrap();
            let channels = Channels {
                slack: Some(Notifier::Slack(Slack::new(&rx_url, Duration::from_secs(3)))),
                email: None,
                console: Notifier::Console(Console::stdout()),
            };
            Service::new(store, Roster::example(), vec![rule("backend")], channels, config, Metrics::new())
        }
    };
    let (first, second) = (sender(config()).await, sender(config()).await);
    let on = |route: &str| match fired(Severity::Critical) {
        Transition::Fired { severity, value, threshold, op, since_ms, detail, .. } => Transition::Fired {
            key: AlertKey {
                rule_id: "high-error-rate".into(),
                labels: [("route".to_string(), route.to_string())].into(),
            },
            severity,
            value,
            threshold,
            op,
            since_ms,
            detail,
        },
        _ => unreachable!(),
    };
    first.apply(vec![on("/a"), on("/b")], T0).await.unwrap();

    let started = std::time::Instant::now();
    let (pass, _) = tokio::join!(first.deliver_channel(Channel::Slack, T0), async {
        // Once the first sender is in its second send (past its 2 s claim),
        // the second looks, on the same clock.
        while rx.attempts() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = T0 + i64::try_from(started.elapsed().as_millis()).unwrap();
        second.deliver_channel(Channel::Slack, now).await.unwrap()
    });
    pass.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(6), "both sends hung to their timeout");
    assert_eq!(rx.attempts(), 2, "each row sent by one sender only (a third attempt is the second sender's copy)");
}
