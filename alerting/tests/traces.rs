//! The pager is traced like the booking core, into the real collector
//! (rotel): one page's whole path is one trace (the evaluation that fired
//! it, the enqueue, the delivery attempt, and the Slack call under it), the
//! fired event names that trace, and the API answers with server spans that
//! join an incoming `traceparent` and write an access line.

mod support {
    pub mod serve;
    pub mod slack_receiver;
}

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use support::{
    serve::{Gauge, Launch, wait_until},
    slack_receiver::SlackReceiver,
};
use testkit::{
    TempDir,
    rotel::{Rotel, SpanSeen, spans_in},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_is_one_trace_from_the_evaluation_to_the_slack_call_and_the_api_joins_a_traceparent() {
    let dir = TempDir::new("alerting-traces");
    let rotel = Rotel::start(&dir.path(""));
    let gauge = Gauge::start(0).await;
    let slack = SlackReceiver::start(vec![]).await;
    let mut alerting = Launch::new(Some(&gauge))
        .env("SLACK_WEBHOOK_URL", &slack.url)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://127.0.0.1:{}", rotel.http))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await;
    gauge.set(50);
    slack.wait_for(1, Duration::from_secs(20)).await;
    let id = alerting.open_incident(None).await;

    // The fired event names the evaluation's trace.
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    let fired = shown["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "fired").cloned().unwrap();
    let trace = fired["data"]["trace_id"].as_str().unwrap_or_else(|| panic!("no trace id: {fired}")).to_owned();
    assert_eq!(trace.len(), 32, "{fired}");

    // A call with a traceparent joins the caller's trace, and says so.
    let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = alerting
        .http
        .get(format!("{}/v1/incidents", alerting.url))
        .header("traceparent", format!("00-{caller}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("x-trace-id").and_then(|v| v.to_str().ok()), Some(caller));
    wait_until("the access line", Duration::from_secs(10), async || {
        alerting
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["target"] == "alerting::access" && l["route"] == "/v1/incidents" && l["trace_id"] == caller)
    })
    .await;

    // SIGTERM flushes the exporters; the collector writes its log as it stops.
    alerting.signal("TERM");
    wait_until("alerting to exit", Duration::from_secs(20), async || alerting.exited().is_some()).await;
    rotel.stop();
    let find = |spans: &[SpanSeen], name: &str, trace: &str| {
        spans.iter().find(|s| s.name == name && s.trace_id == trace).cloned()
    };
    let mut spans = Vec::new();
    wait_until("the page's spans in the collector's log", Duration::from_secs(60), async || {
        spans = spans_in(&rotel.log());
        find(&spans, "POST", &trace).is_some() && find(&spans, "GET /v1/incidents", caller).is_some()
    })
    .await;
    let names = |trace: &str| spans.iter().filter(|s| s.trace_id == trace).map(|s| s.name.clone()).collect::<Vec<_>>();
    let span = |name: &str| find(&spans, name, &trace).unwrap_or_else(|| panic!("no {name} in {:?}", names(&trace)));
    let evaluation = span("evaluate rules");
    let record = span("record transitions");
    let enqueue = span("enqueue page");
    let deliver = span("deliver slack");
    let post = span("POST");
    assert!(evaluation.parent_id.is_empty(), "the evaluation is the trace's root: {evaluation:?}");
    assert_eq!(record.parent_id, evaluation.id);
    assert_eq!(enqueue.parent_id, record.id, "{:?}", names(&trace));
    assert_eq!(deliver.parent_id, enqueue.id, "the delivery continues the enqueue's trace");
    assert_eq!(post.parent_id, deliver.id, "the Slack call is under its delivery attempt: {:?}", names(&trace));
    let server = find(&spans, "GET /v1/incidents", caller).unwrap();
    assert_eq!(server.parent_id, "00f067aa0ba902b7", "the caller's span is the parent");
}
