//! Evaluation cost: one evaluation of 200 rules over 10,000 scraped series
//! (the goal: under 50 ms). Run with
//! `cargo run --release -p alerting --example eval_bench`.
//!
//! The series are a realistic mix: request counters and latency histograms
//! per route and status, pool and Redis gauges. The 200 rules are error
//! ratios, P95s and gauge ratios over them, each with warning and critical
//! levels, evaluated through the embedded PromQL evaluator and the engine.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use alerting::{
    engine::Engine,
    promql,
    rules::{Condition, Level, Op, Rule, Severity, Unit},
    source::{
        Results,
        scrape::{Store, Target},
    },
};

const BUCKETS: [&str; 12] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];

fn exposition(routes: usize, tick: u64) -> String {
    let mut out = String::new();
    for r in 0..routes {
        for status in ["200", "201", "409", "500"] {
            let n = tick * (r as u64 % 7 + 1) * if status == "500" { 1 } else { 10 };
            let _ =
                writeln!(out, "http_server_requests_total{{method=\"GET\",route=\"/r{r}\",status=\"{status}\"}} {n}");
        }
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "http_server_request_duration_seconds_bucket{{method=\"GET\",route=\"/r{r}\",le=\"{le}\"}} {}",
                tick * (i as u64 + 1)
            );
        }
    }
    for p in 0..40 {
        let _ = writeln!(out, "db_pool_connections_in_use{{pool=\"p{p}\"}} {}", (tick + p) % 20);
        let _ = writeln!(out, "db_pool_connections_max{{pool=\"p{p}\"}} 20");
    }
    out
}

fn level(severity: Severity, expr: &str, threshold: f64) -> Level {
    Level {
        severity,
        fire: vec![Condition { expr: expr.into(), op: Op::Above, threshold }],
        for_: Duration::from_secs(60),
        clear: vec![Condition { expr: expr.into(), op: Op::Below, threshold: threshold * 0.8 }],
        clear_for: Duration::from_secs(120),
    }
}

fn rule(i: usize, expr: String, warn: f64, crit: f64) -> Rule {
    Rule {
        id: format!("rule-{i}"),
        name: format!("Rule{i}"),
        summary: String::new(),
        owner: "backend".into(),
        runbook: "high-error-rate".into(),
        dashboard: None,
        unit: Unit::Ratio,
        levels: vec![level(Severity::Warning, &expr, warn), level(Severity::Critical, &expr, crit)],
        no_data_for: Duration::from_secs(120),
        no_data_severity: Severity::Warning,
        labels: Default::default(),
        line: i,
    }
}

fn main() {
    // 625 routes × (4 statuses + 12 buckets) = 10,000 series, plus 80 gauges;
    // every one of them is selected by some rule.
    let routes = 625;
    let mut rules = Vec::new();
    for i in 0..200 {
        let r = i % routes;
        let expr = match i % 5 {
            0 => format!(
                "sum(rate(http_server_requests_total{{route=\"/r{r}\",status=~\"5..\"}}[5m])) / sum(rate(http_server_requests_total{{route=\"/r{r}\"}}[5m]))"
            ),
            1 => format!(
                "histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{{route=\"/r{r}\"}}[5m])))"
            ),
            2 => format!(
                "max(db_pool_connections_in_use{{pool=\"p{}\"}} / db_pool_connections_max{{pool=\"p{}\"}})",
                i % 40,
                i % 40
            ),
            // Rules over every series, so all 10,000 are kept and read.
            3 => "sum by (route) (rate(http_server_requests_total[5m]))".to_owned(),
            _ => "histogram_quantile(0.99, sum by (le, route) (rate(http_server_request_duration_seconds_bucket[5m])))"
                .to_owned(),
        };
        // Most series healthy, as in a real deployment; the route rules
        // (every 5th) fire or pend on a few series.
        let (warn, crit) = if i % 5 >= 3 { (1e6, 1e7) } else { (0.5, 0.9) };
        rules.push(rule(i, expr, warn, crit));
    }
    let mut engine = Engine::new(rules);
    let exprs: Vec<String> = engine.expressions().into_iter().map(str::to_owned).collect();
    let parsed: Vec<promql::Expr> = exprs.iter().map(|e| promql::parse(e).expect("valid")).collect();
    let interest = parsed.iter().flat_map(|e| e.selectors().into_iter().map(|(s, d)| (s.clone(), d))).collect();
    let mut store = Store::new(vec![Target { job: "booking".into(), url: "http://x/metrics".into() }], interest);
    // An hour of 5 s scrapes, so windows hold real history.
    for tick in 0..720u64 {
        store.ingest(0, tick as i64 * 5_000, Some(&exposition(routes, tick)));
    }
    println!("series kept: {}", store.series_count());
    let mut timings = Vec::new();
    let rounds: i64 = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    for round in 0..rounds {
        let started = Instant::now();
        let mut results = Results::new();
        for (text, expr) in exprs.iter().zip(&parsed) {
            results.insert(
                text.clone(),
                promql::eval(expr, &store).map(promql::Value::into_samples).map_err(|e| e.to_string()),
            );
        }
        let transitions = engine.evaluate(&results, 3_600_000 + round * 5_000);
        timings.push(started.elapsed());
        std::hint::black_box(transitions);
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    let worst = timings[timings.len() - 1];
    let active = engine.statuses().len();
    println!("rules: 200, distinct expressions: {}, alerts pending or firing: {active}", exprs.len());
    println!(
        "one evaluation: median {:.2} ms, worst {:.2} ms (goal < 50 ms)",
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
}
