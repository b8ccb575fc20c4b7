//! The README's chaos drill, as written, on real processes: booking on its
//! embedded defaults, the alerting service with the shipped rules and roster
//! scraping it, 5 requests a second, the chaos switch failing every request
//! for 3 minutes. The README promises one incident (HighErrorRate critical)
//! paged about 2m05s after the switch, and one resolve about 3 minutes after
//! it is turned off; the burn rates fire muted. This test holds it to that.
//! (It takes about 7 minutes: the shipped rules' own `for` and `clear_for`.)

mod support {
    pub mod serve;
}

use std::time::{Duration, Instant};

use serde_json::Value;
use support::serve::{Booking, Launch, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_drill_sends_one_page_and_one_resolve_at_the_documented_times() {
    // Booking on its embedded defaults, 5 requests a second (the README's
    // `watch -n0.2 curl`); the alerting service with the shipped rules and
    // roster (no ALERTING_RULES, no ALERTING_ROSTER) scraping it.
    let booking = Booking::start(Duration::from_millis(200)).await;
    let alerting = Launch::new(None).without("ALERTING_RULES").env("ALERTING_SCRAPE", &format!("booking={}/metrics", booking.url)).start().await;
    let started = Instant::now();
    wait_until("a minute of healthy traffic", Duration::from_secs(70), async || started.elapsed() >= Duration::from_secs(60)).await;

    booking.chaos(true).await;
    let fault = Instant::now();
    let fired = |pages: &[Value]| pages.iter().any(|p| p["page"]["kind"]["type"] == "firing");
    wait_until("the page", Duration::from_secs(180), async || fired(&alerting.console_pages())).await;
    let paged = fault.elapsed();
    wait_until("3 minutes of outage", Duration::from_secs(200), async || fault.elapsed() >= Duration::from_secs(180)).await;
    booking.chaos(false).await;
    let fixed = Instant::now();
    let resolved = |pages: &[Value]| pages.iter().any(|p| p["page"]["kind"]["type"] == "resolved");
    wait_until("the resolve", Duration::from_secs(300), async || resolved(&alerting.console_pages())).await;
    let resolved_after = fixed.elapsed();
    // The slow burn fires about two minutes after the fix, muted: watch past it.
    wait_until("the slow burn's moment", Duration::from_secs(120), async || fault.elapsed() >= Duration::from_secs(330)).await;

    let pages: Vec<String> = alerting
        .console_pages()
        .iter()
        .map(|p| format!("{} {} {}", p["page"]["kind"]["type"].as_str().unwrap_or_default(), p["page"]["alert"].as_str().unwrap_or_default(), p["page"]["severity"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(pages, ["firing HighErrorRate critical", "resolved HighErrorRate critical"], "one page, one resolve");
    let (_, list) = alerting.call(reqwest::Method::GET, "/v1/incidents", None, None).await;
    assert_eq!(list["incidents"].as_array().map(Vec::len), Some(1), "one incident: {list}");
    let (_, alerts) = alerting.call(reqwest::Method::GET, "/v1/alerts", None, None).await;
    let muted: Vec<&str> = alerts["alerts"].as_array().unwrap().iter().filter(|a| a["inhibited_by"].is_string()).filter_map(|a| a["key"]["rule_id"].as_str()).collect();
    assert!(muted.contains(&"error-budget-burn-fast"), "the fast burn fires muted: {alerts}");
    assert!((115..=140).contains(&paged.as_secs()), "paged {} s after the switch (README: about 2m05s)", paged.as_secs());
    assert!((150..=210).contains(&resolved_after.as_secs()), "resolved {} s after the fix (README: about 3 minutes)", resolved_after.as_secs());
    eprintln!("drill: paged {} s after chaos on, resolved {} s after chaos off", paged.as_secs(), resolved_after.as_secs());
}
