//! A group of `alerting serve` processes on one PostgreSQL, with real
//! faults: a crash between writing a page and sending it, a SIGSTOP of the
//! evaluator across an escalation's due time, a sender killed mid-send, a
//! PostgreSQL restart under the group, and an evaluator that dies unsaved
//! while the outage ends. Each page must arrive exactly once per channel,
//! and each escalation step once, on time.
//!
//! The failover times measured here are printed (`failover ...`) and put in
//! BENCHMARKS.md.

mod support {
    pub mod serve;
    pub mod slack_receiver;
    pub mod smtp;
}

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use support::{
    serve::{Alerting, Booking, CHAOS_RULES, GAUGE_RULES, Gauge, Launch, wait_until},
    slack_receiver::SlackReceiver,
    smtp::{SmtpServer, header_value},
};
use testkit::{Database, PgCluster, TempDir};

/// The lease a dead evaluator is replaced after (at least 2 intervals of 1 s).
const LEASE_TTL: &str = "3s";
/// The claim a dead sender's page is taken over after (above the 10 s send timeout).
const CLAIM_TIMEOUT: &str = "11s";

/// The shipped roster with a one-minute backend target and a critical plan
/// of two steps: the owner (backend), then the incident lead.
fn roster(dir: &TempDir) -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/roster.yaml")).unwrap();
    let (head, _) = shipped.split_once("escalation:").unwrap();
    let text = head.replace(
        "    name: Backend engineer\n    response_minutes: 10",
        "    name: Backend engineer\n    response_minutes: 1",
    ) + "escalation:\n  critical:\n    steps:\n      - [owner]\n      - [incident-lead]\n    repeat: 1\n";
    assert!(text.contains("response_minutes: 1\n"), "the backend target was shortened");
    let path = dir.path("roster.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

struct Group {
    gauge: Gauge,
    slack: SlackReceiver,
    smtp: SmtpServer,
    database_url: String,
    roster: String,
}

impl Group {
    async fn new(database_url: String, dir: &TempDir) -> Self {
        Self {
            gauge: Gauge::start(0).await,
            slack: SlackReceiver::start(vec![]).await,
            smtp: SmtpServer::start(),
            database_url,
            roster: roster(dir),
        }
    }

    fn member(&self) -> Launch {
        Launch::new(Some(&self.gauge))
            .env("ALERTING_DATABASE_URL", &self.database_url)
            .env("ALERTING_ROSTER", &self.roster)
            .env("ALERTING_LEASE_TTL", LEASE_TTL)
            .env("ALERTING_CLAIM_TIMEOUT", CLAIM_TIMEOUT)
            .env("SLACK_WEBHOOK_URL", &self.slack.url)
            .env("SMTP_HOST", "127.0.0.1")
            .env("SMTP_PORT", &self.smtp.port.to_string())
            // aiosmtpd on loopback speaks no TLS; no credentials go over it.
            .env("SMTP_TLS", "none")
    }

    /// The titles Slack received, in order.
    fn slack_titles(&self) -> Vec<String> {
        self.slack.delivered().iter().map(|p| title_in(&p.to_string())).collect()
    }

    /// The subjects of the mail received, in order, with their recipients.
    fn mail(&self) -> Vec<(String, String)> {
        self.smtp
            .messages()
            .iter()
            .map(|m| (header_value(m, "Subject").unwrap_or_default(), header_value(m, "X-RcptTo").unwrap_or_default()))
            .collect()
    }
}

/// The page title inside a Slack payload.
fn title_in(payload: &str) -> String {
    for t in ["[CRITICAL] QueueDepth firing", "[CRITICAL] QueueDepth escalated (level 1)", "[RESOLVED] QueueDepth"] {
        if payload.contains(t) {
            return t.into();
        }
    }
    format!("unknown: {payload}")
}

async fn evaluations(member: &Alerting) -> f64 {
    member.metric("alerting_evaluations_total{outcome=\"ok\"}").await.unwrap_or(0.0)
}

/// Waits until one of `members` holds the lease; returns its index.
async fn new_leader(members: &[&Alerting], timeout: Duration) -> usize {
    let mut found = None;
    wait_until("a new evaluator", timeout, async || {
        for (i, m) in members.iter().enumerate() {
            if m.is_leader().await {
                found = Some(i);
                return true;
            }
        }
        false
    })
    .await;
    found.unwrap_or_default()
}

fn kinds(timeline: &Value) -> Vec<String> {
    timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .filter(|k| k != "delivered")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_pages_once_through_a_crash_and_a_pause_of_its_evaluator_and_escalates_on_time() {
    let db = Database::create("alerting_group").await;
    let dir = TempDir::new("alerting-group");
    let group = Group::new(db.url.clone(), &dir).await;

    // A starts alone and evaluates; it will die right after writing the
    // first page, before sending it.
    let mut a = group.member().env("ALERTING_FAILPOINT", "after-outbox-write").start().await;
    wait_until("A to evaluate", Duration::from_secs(10), async || a.is_leader().await).await;
    let b = group.member().start().await;
    let c = group.member().start().await;

    // Only the evaluator scrapes: three processes, one scrape per interval.
    let (scrapes, evaluated) = (group.gauge.scrapes(), evaluations(&a).await);
    wait_until("five evaluations", Duration::from_secs(20), async || evaluations(&a).await >= evaluated + 5.0).await;
    let (scraped, done) = (group.gauge.scrapes() - scrapes, evaluations(&a).await - evaluated);
    assert!(scraped as f64 <= done + 1.0, "{scraped} scrapes for {done} evaluations");
    assert_eq!((evaluations(&b).await, evaluations(&c).await), (0.0, 0.0), "followers do not evaluate");
    assert!(!b.is_leader().await && !c.is_leader().await);

    // The outage: A fires, writes the page and dies before sending it.
    group.gauge.set(50);
    wait_until("A to crash after writing the page", Duration::from_secs(20), async || a.exited().is_some()).await;
    let crashed = Instant::now();
    assert_eq!(a.exited().and_then(|s| s.code()), Some(86), "the failpoint's exit: {}", a.logs());
    let members = [&b, &c];
    let first = new_leader(&members, Duration::from_secs(15)).await;
    let crash_failover = crashed.elapsed();
    group.slack.wait_for(1, Duration::from_secs(20)).await;
    group.smtp.wait_for(1, Duration::from_secs(20)).await;

    // The escalation falls due a minute after the first page. Stop the
    // evaluator shortly before, past its lease, and wake it 30 s later.
    let (leader, other) = (members[first], members[1 - first]);
    let id = leader.open_incident(None).await;
    let (_, shown) = leader.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    let plan_started = shown["incident"]["plan_started_at"].as_i64().unwrap();
    let due_at = plan_started + 60_000;
    wait_until("the escalation to be 3 s away", Duration::from_secs(70), async || {
        chrono::Utc::now().timestamp_millis() >= due_at - 3_000
    })
    .await;
    leader.signal("STOP");
    let stopped = Instant::now();
    assert_eq!(new_leader(&[other], Duration::from_secs(15)).await, 0);
    let pause_failover = stopped.elapsed();
    group.slack.wait_for(2, Duration::from_secs(20)).await;
    // (The page may be sent before its step is recorded as claimed.)
    let mut escalated = Value::Null;
    wait_until("the escalation on the timeline", Duration::from_secs(10), async || {
        let (_, shown) = other.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
        escalated = shown["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "escalated")
            .cloned()
            .unwrap_or_default();
        !escalated.is_null()
    })
    .await;
    let late = escalated["at"].as_i64().unwrap() - due_at;
    assert!((0..=10_000).contains(&late), "escalated {late} ms after it fell due: {escalated}");

    // The outage ends while the old evaluator is still stopped.
    group.gauge.set(0);
    group.slack.wait_for(3, Duration::from_secs(20)).await;
    wait_until("30 s of pause", Duration::from_secs(40), async || stopped.elapsed() >= Duration::from_secs(30)).await;
    leader.signal("CONT");
    // Woken with its stale memory, it finds the lease gone and writes nothing.
    wait_until("the woken process to step down", Duration::from_secs(15), async || {
        let logs = leader.logs();
        logs.contains("passed to another process") || logs.contains("no longer holds the evaluator lease")
    })
    .await;
    let evaluated = evaluations(other).await;
    wait_until("three more evaluations", Duration::from_secs(15), async || evaluations(other).await >= evaluated + 3.0)
        .await;
    assert!(other.is_leader().await && !leader.is_leader().await, "one evaluator");

    assert_eq!(
        group.slack_titles(),
        ["[CRITICAL] QueueDepth firing", "[CRITICAL] QueueDepth escalated (level 1)", "[RESOLVED] QueueDepth"],
        "one Slack message per step and one resolve"
    );
    let mail = group.mail();
    let subjects: Vec<&str> = mail.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        ["[CRITICAL] QueueDepth firing", "[CRITICAL] QueueDepth escalated (level 1)", "[RESOLVED] QueueDepth"],
        "{mail:?}"
    );
    // The week's backend engineer, then incident lead (the rotation moves
    // weekly); the resolve tells both.
    assert!(["lee.backend@", "kang.server@"].iter().any(|a| mail[0].1.contains(a)), "the owner first: {mail:?}");
    assert!(["kim.dev@", "jung.lead@"].iter().any(|a| mail[1].1.contains(a)), "then the incident lead: {mail:?}");
    assert!(mail[2].1.contains(&mail[0].1) && mail[2].1.contains(&mail[1].1), "{mail:?}");
    let (_, shown) = other.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    assert_eq!(kinds(&shown["timeline"]), ["fired", "paged", "escalated", "resolved"], "{}", shown["timeline"]);
    let (_, list) = other.call(Method::GET, "/v1/incidents", None, None).await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1, "one incident");
    eprintln!(
        "failover after a crash: {} ms; after a SIGSTOP: {} ms (lease {LEASE_TTL}, interval 1s)",
        crash_failover.as_millis(),
        pause_failover.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_send_leaves_its_page_to_another_after_the_claim_timeout() {
    let db = Database::create("alerting_group").await;
    let dir = TempDir::new("alerting-group");
    let group = Group::new(db.url.clone(), &dir).await;
    // This one watches booking itself, broken by its chaos switch.
    let booking = Booking::start(Duration::from_millis(50)).await;
    std::fs::write(dir.path("chaos.yaml"), CHAOS_RULES).unwrap();
    let rules = dir.path("chaos.yaml").display().to_string();
    let scrape = format!("booking={}/metrics", booking.url);
    let member = || group.member().env("ALERTING_RULES", &rules).env("ALERTING_SCRAPE", &scrape);
    booking.chaos(true).await;
    // A claims the first page of some channel and dies before sending it.
    let mut a = member().env("ALERTING_FAILPOINT", "after-claim").start().await;
    wait_until("A to die holding a claim", Duration::from_secs(20), async || a.exited().is_some()).await;
    let died = Instant::now();
    assert_eq!(a.exited().and_then(|s| s.code()), Some(87), "{}", a.logs());
    let b = member().start().await;
    group.slack.wait_for(1, Duration::from_secs(30)).await;
    group.smtp.wait_for(1, Duration::from_secs(30)).await;
    let console = || b.console_pages().iter().filter(|p| p["page"]["kind"]["type"] == "firing").count();
    wait_until("the console page", Duration::from_secs(30), async || console() == 1).await;
    let all_in = died.elapsed();
    // The claimed page waited for its claim to lapse; the others did not.
    assert!(all_in >= Duration::from_secs(9), "the claimed page was sent after {all_in:?}, before its claim lapsed");
    let evaluated = evaluations(&b).await;
    wait_until("three more evaluations", Duration::from_secs(15), async || evaluations(&b).await >= evaluated + 3.0)
        .await;
    assert_eq!(group.slack.delivered().len(), 1);
    assert!(group.slack.delivered()[0].to_string().contains("[CRITICAL] HighErrorRate firing"));
    assert_eq!(group.mail().len(), 1);
    assert_eq!(console(), 1);
    let (_, list) = b.call(Method::GET, "/v1/incidents", None, None).await;
    let id = list["incidents"][0]["id"].as_i64().unwrap();
    let (_, shown) = b.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    let delivered: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "delivered")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(delivered.len(), 3, "one delivery per channel: {delivered:?}");
    assert!(
        delivered.iter().any(|t| t.contains("attempt 2")),
        "the page whose sender died counts that as an attempt: {delivered:?}"
    );
}

/// The saved state and the incidents are written apart: an evaluator that
/// dies after opening and paging an incident, before it saves its state,
/// hands on a memory from before the fire. If the outage ends meanwhile, its
/// successor never sees the alert fire; it must still resolve the incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_opened_by_an_evaluator_that_died_unsaved_resolves_when_the_outage_ends_meanwhile() {
    let db = Database::create("alerting_group").await;
    let dir = TempDir::new("alerting-group");
    let group = Group::new(db.url.clone(), &dir).await;
    let mut a = group.member().env("ALERTING_FAILPOINT", "after-outbox-write").start().await;
    wait_until("A to evaluate", Duration::from_secs(10), async || a.is_leader().await).await;
    group.gauge.set(50);
    wait_until("A to crash after writing the page", Duration::from_secs(20), async || a.exited().is_some()).await;
    assert_eq!(a.exited().and_then(|s| s.code()), Some(86), "the failpoint's exit: {}", a.logs());
    group.gauge.set(0);

    let b = group.member().start().await;
    if let Err(e) = group.slack.try_wait_for(2, Duration::from_secs(30)).await {
        panic!("{e}\n--- A ---\n{}\n--- B ---\n{}", a.logs(), b.logs());
    }
    let evaluated = evaluations(&b).await;
    wait_until("three more evaluations", Duration::from_secs(15), async || evaluations(&b).await >= evaluated + 3.0)
        .await;
    assert_eq!(group.slack_titles(), ["[CRITICAL] QueueDepth firing", "[RESOLVED] QueueDepth"]);
    let (_, list) = b.call(Method::GET, "/v1/incidents", None, None).await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(list["incidents"][0]["state"], "resolved");
    assert!(b.logs().contains("taken up as firing"), "{}", b.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_the_group_loses_and_repeats_no_page() {
    let cluster = PgCluster::start();
    let dir = TempDir::new("alerting-group");
    let group = Group::new(cluster.url("postgres"), &dir).await;
    let b = group.member().start().await;
    let c = group.member().start().await;
    let members = [&b, &c];
    new_leader(&members, Duration::from_secs(10)).await;
    group.gauge.set(50);
    group.slack.wait_for(1, Duration::from_secs(20)).await;

    // The database goes away mid-outage; the outage ends while it is down.
    cluster.stop();
    group.gauge.set(0);
    wait_until("the evaluator to give its lease up", Duration::from_secs(20), async || {
        !b.is_leader().await && !c.is_leader().await
    })
    .await;
    cluster.start_again();

    // Evaluation resumes and the incident resolves, once.
    if let Err(e) = group.slack.try_wait_for(2, Duration::from_secs(40)).await {
        panic!("{e}\n--- B ---\n{}\n--- C ---\n{}\n--- PostgreSQL ---\n{}", b.logs(), c.logs(), cluster.log());
    }
    let leader = members[new_leader(&members, Duration::from_secs(20)).await];
    let evaluated = evaluations(leader).await;
    wait_until("three more evaluations", Duration::from_secs(15), async || {
        evaluations(leader).await >= evaluated + 3.0
    })
    .await;
    assert_eq!(group.slack_titles(), ["[CRITICAL] QueueDepth firing", "[RESOLVED] QueueDepth"]);
    let subjects: Vec<String> = group.mail().into_iter().map(|(s, _)| s).collect();
    assert_eq!(subjects, ["[CRITICAL] QueueDepth firing", "[RESOLVED] QueueDepth"]);
    let (_, list) = leader.call(Method::GET, "/v1/incidents", None, None).await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(list["incidents"][0]["state"], "resolved");
}

/// The gauge rule with a `for` long enough to kill the evaluator inside it.
fn slow_rules() -> String {
    let rules = GAUGE_RULES.replace("for: 0s", "for: 8s");
    assert_ne!(rules, GAUGE_RULES);
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_neither_restarts_nor_skips_a_pending_timer() {
    let db = Database::create("alerting_group").await;
    let dir = TempDir::new("alerting-group");
    std::fs::write(dir.path("slow.yaml"), slow_rules()).unwrap();
    let group = Group::new(db.url.clone(), &dir).await;
    let rules = dir.path("slow.yaml").display().to_string();
    let mut a = group.member().env("ALERTING_RULES", &rules).start().await;
    wait_until("A to evaluate", Duration::from_secs(10), async || a.is_leader().await).await;
    let b = group.member().env("ALERTING_RULES", &rules).start().await;
    group.gauge.set(50);
    // Pending on A; B mirrors it.
    let mut pending_since = 0;
    wait_until("the alert pending on every instance", Duration::from_secs(10), async || {
        let (_, alerts) = b.call(Method::GET, "/v1/alerts", None, None).await;
        pending_since = alerts["alerts"][0]["since_ms"].as_i64().unwrap_or_default();
        alerts["alerts"][0]["phase"] == "pending"
    })
    .await;
    wait_until("3 s into the 8 s `for`", Duration::from_secs(10), async || {
        chrono::Utc::now().timestamp_millis() >= pending_since + 3_000
    })
    .await;
    a.signal("KILL");
    wait_until("A dead", Duration::from_secs(5), async || a.exited().is_some()).await;
    let id = b.open_incident(None).await;
    let (_, shown) = b.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    let incident = &shown["incident"];
    let fired_after = incident["plan_started_at"].as_i64().unwrap() - pending_since;
    assert_eq!(incident["started_at"].as_i64(), Some(pending_since), "the condition began when A saw it");
    // Restarted, it would fire 8 s after B took over (3 s + the 3 s lease + 8 s).
    assert!((8_000..=11_000).contains(&fired_after), "fired {fired_after} ms after it went pending (for: 8s)");
    group.slack.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(group.slack_titles(), ["[CRITICAL] QueueDepth firing"]);
}
