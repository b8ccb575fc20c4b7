//! The noise model of the shipped rules, on virtual time: booking's real
//! metric names, scraped every 5 s into the embedded store from a fresh
//! start (the README drill's case: no history before the fault), steady
//! traffic of 5 requests a second, and the chaos switch failing all of it for
//! a while. The shipped rules, the embedded evaluator, the engine and the
//! service with a real incident store run as in production, only the clock
//! is simulated, so an hour after a fault takes a second.

use std::fmt::Write as _;

use alerting::{
    engine::Engine,
    incidents::{self, State},
    metrics::Metrics,
    notify::{Notifier, console::Console},
    oncall::Roster,
    promql,
    rules::file::shipped,
    service::{Channels, Config, Service},
    source::{
        Results,
        scrape::{Store, Target},
    },
};
use serde_json::Value;

const STEP_MS: i64 = 5_000;
/// Requests a second, as the drill's `watch -n0.2 curl` makes.
const RPS: f64 = 5.0;
const T0: i64 = 1_800_000_000_000;

const BUCKETS: [&str; 6] = ["0.005", "0.025", "0.1", "0.5", "1", "+Inf"];

/// The booking service's counters and gauges as it would expose them.
#[derive(Default)]
struct Booking {
    ok: f64,
    failed: f64,
    scrapes: f64,
    cpu_seconds: f64,
}

impl Booking {
    /// Advances `secs` of traffic; `failing`: the chaos switch answers 503.
    fn run(&mut self, secs: f64, failing: bool) {
        if failing {
            self.failed += RPS * secs;
        } else {
            self.ok += RPS * secs;
        }
        self.cpu_seconds += 0.05 * secs;
    }

    fn exposition(&mut self) -> String {
        self.scrapes += 1.0;
        let mut out = String::new();
        let requests = "http_server_requests_total";
        let _ = writeln!(out, "{requests}{{method=\"GET\",route=\"/v1/concerts\",status=\"200\"}} {}", self.ok);
        if self.failed > 0.0 {
            let _ = writeln!(out, "{requests}{{method=\"GET\",route=\"/v1/concerts\",status=\"503\"}} {}", self.failed);
        }
        let _ = writeln!(out, "{requests}{{method=\"GET\",route=\"/metrics\",status=\"200\"}} {}", self.scrapes);
        for le in BUCKETS {
            let bucket = "http_server_request_duration_seconds_bucket";
            let _ = writeln!(
                out,
                "{bucket}{{method=\"GET\",route=\"/v1/concerts\",le=\"{le}\"}} {}",
                self.ok + self.failed
            );
            let _ = writeln!(out, "{bucket}{{method=\"GET\",route=\"/metrics\",le=\"{le}\"}} {}", self.scrapes);
        }
        let gauges = [
            ("db_pool_connections_in_use", 1.0),
            ("db_pool_connections_max", 10.0),
            ("redis_memory_used_bytes", 1e6),
            ("redis_memory_max_bytes", 1e8),
            ("process_cpu_seconds_total", self.cpu_seconds),
            ("booking_cpu_limit_cores", 2.0),
            ("process_resident_memory_bytes", 5e7),
            ("booking_memory_limit_bytes", 5e8),
            ("booking_queue_waiting", 0.0),
            ("booking_queue_admitted_total", 0.0),
            ("booking_holds_overdue", 0.0),
            // Exported always, 0 without a read replica.
            ("db_replica_lag_seconds", 0.0),
            ("telemetry_dropped_total", 0.0),
        ];
        for (name, value) in gauges {
            let _ = writeln!(out, "{name} {value}");
        }
        // Booking creates every outcome's series at start.
        for outcome in ["paid", "replayed", "insufficient_balance", "hold_expired", "refused", "error"] {
            let _ = writeln!(out, "booking_payments_total{{outcome=\"{outcome}\"}} 0");
        }
        out
    }
}

/// The shipped rules over a simulated booking service.
struct Drill {
    booking: Booking,
    store: Store,
    exprs: Vec<(String, promql::Expr)>,
    engine: Engine,
    service: Service,
    now: i64,
    console: std::path::PathBuf,
    _dir: testkit::TempDir,
}

impl Drill {
    async fn new() -> Self {
        let set = shipped();
        let engine = Engine::new(set.rules.clone()).with_inhibitions(set.inhibit_rules.clone());
        let exprs: Vec<(String, promql::Expr)> =
            engine.expressions().into_iter().map(|e| (e.to_owned(), promql::parse(e).unwrap())).collect();
        let interest = exprs.iter().flat_map(|(_, e)| e.selectors().into_iter().map(|(s, d)| (s.clone(), d))).collect();
        let store = Store::new(vec![Target { job: "booking".into(), url: "http://booking/metrics".into() }], interest);
        let dir = testkit::TempDir::new("alerting-noise");
        let console = dir.path("pages.jsonl");
        let incidents =
            incidents::Store::connect(&format!("sqlite://{}", dir.path("incidents.db").display())).await.unwrap();
        let channels = Channels { slack: None, email: None, console: Notifier::Console(Console::file(&console)) };
        let service =
            Service::new(incidents, Roster::example(), set.rules.clone(), channels, Config::default(), Metrics::new());
        Self { booking: Booking::default(), store, exprs, engine, service, now: T0, console, _dir: dir }
    }

    /// `secs` of traffic (failing or not), scraped and evaluated every 5 s.
    async fn run(&mut self, secs: i64, failing: bool) {
        for _ in 0..secs * 1000 / STEP_MS {
            self.now += STEP_MS;
            self.booking.run(STEP_MS as f64 / 1000.0, failing);
            let body = self.booking.exposition();
            self.store.ingest(0, self.now, Some(&body));
            let mut results = Results::new();
            for (text, expr) in &self.exprs {
                results.insert(
                    text.clone(),
                    promql::eval(expr, &self.store).map(promql::Value::into_samples).map_err(|e| e.to_string()),
                );
            }
            let transitions = self.engine.evaluate(&results, self.now);
            self.service.apply(transitions, self.now).await.unwrap();
            self.service.deliver(self.now).await.unwrap();
        }
    }

    /// Every page the console received: kind, alert and severity.
    fn pages(&self) -> Vec<String> {
        std::fs::read_to_string(&self.console)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|p| {
                format!(
                    "{} {} {}",
                    p["page"]["kind"]["type"].as_str().unwrap_or_default(),
                    p["page"]["alert"].as_str().unwrap_or_default(),
                    p["page"]["severity"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn a_ten_second_fault_that_is_fixed_pages_nothing() {
    let mut drill = Drill::new().await;
    drill.run(600, false).await;
    drill.run(10, true).await;
    drill.run(3600, false).await;
    let incidents = drill.service.store.list(None, 100).await.unwrap();
    let opened: Vec<(&str, &str)> = incidents.iter().map(|i| (i.alert.as_str(), i.severity.as_str())).collect();
    assert!(opened.is_empty(), "a fixed 10 s fault opened {opened:?}; pages: {:?}", drill.pages());
}

#[tokio::test]
async fn a_three_minute_fault_pages_once_and_resolves_within_minutes_of_the_fix() {
    let mut drill = Drill::new().await;
    drill.run(600, false).await;
    let fault = drill.now;
    drill.run(180, true).await;
    let fixed = drill.now;
    // Two hours after: past the slow burn's 30m window and its ticket's wait.
    drill.run(7200, false).await;
    let incidents = drill.service.store.list(None, 100).await.unwrap();
    let opened: Vec<(&str, &str)> = incidents.iter().map(|i| (i.alert.as_str(), i.severity.as_str())).collect();
    assert_eq!(opened, [("HighErrorRate", "critical")], "one incident; pages: {:?}", drill.pages());
    let incident = &incidents[0];
    assert_eq!(incident.state, State::Resolved);
    let seen = (incident.started_at - fault) / 1000;
    let paged = (incident.plan_started_at - fault) / 1000;
    let resolved = (incident.resolved_at.unwrap() - fixed) / 1000;
    assert!(seen <= 10, "the fault was seen {seen} s in");
    assert!((120..=135).contains(&paged), "paged {paged} s after the fault (for: 2m)");
    assert!(resolved <= 200, "resolved {resolved} s after the fix");
    // One page and one resolve per channel; the rest was inhibited, and says so on the incident.
    assert_eq!(drill.pages(), ["firing HighErrorRate critical", "resolved HighErrorRate critical"]);
    let timeline = drill.service.store.timeline(incident.id).await.unwrap();
    let muted: Vec<&str> = timeline.iter().filter(|e| e.kind == "inhibited").map(|e| e.text.as_str()).collect();
    assert!(muted.iter().any(|t| t.starts_with("ErrorBudgetBurnFast (critical)")), "{muted:?}");
    assert!(muted.iter().any(|t| t.starts_with("ErrorBudgetBurnSlow")), "{muted:?}");
    eprintln!(
        "drill on virtual time: seen {seen} s after the fault, paged at {paged} s, resolved {resolved} s after the fix"
    );
}
