//! Paging through `alerting serve` with real channels: a Slack stand-in and
//! a real SMTP server (aiosmtpd). One channel's trouble never holds up
//! another, a rate limit asking for an absurd wait goes to the fallback at
//! once, and email is encrypted unless it stays on this machine.

mod support {
    pub mod serve;
    pub mod slack_receiver;
    pub mod smtp;
}

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use support::{
    serve::{Alerting, Gauge, Launch, RESPONDER_KEY, wait_until},
    slack_receiver::{Reply, SlackReceiver},
    smtp::SmtpServer,
};

async fn timeline(alerting: &Alerting, id: i64) -> Vec<Value> {
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), Some(RESPONDER_KEY), None).await;
    shown["timeline"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_slack_does_not_delay_the_email() {
    let gauge = Gauge::start(50).await;
    let slack = SlackReceiver::start(vec![Reply::Hang]).await;
    let smtp = SmtpServer::start();
    let alerting = Launch::new(Some(&gauge))
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .env("SLACK_WEBHOOK_URL", &slack.url)
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", &smtp.port.to_string())
        .env("SMTP_TLS", "none")
        .start()
        .await;
    let id = alerting.open_incident(Some(RESPONDER_KEY)).await;
    wait_until("Slack to be asked", Duration::from_secs(10), async || slack.hanging() == 1).await;
    let asked = Instant::now();
    // Slack's attempt may take its whole 10 s timeout; the email must not wait for it.
    let mail = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1);
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!((slack.hanging(), slack.delivered().len()), (1, 0), "Slack is still stuck when the email is in");
    let kinds: Vec<Value> = timeline(&alerting, id)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "delivered")
        .map(|e| e["text"].clone())
        .collect();
    assert!(kinds.iter().any(|t| t.as_str().unwrap_or_default().contains("email")), "{kinds:?}");
    assert!(!alerting.logs().contains("B0000/secret"), "the webhook URL is a secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_retry_after_beyond_the_cap_sends_the_page_to_the_fallback_at_once() {
    let gauge = Gauge::start(50).await;
    let slack = SlackReceiver::start(vec![Reply::TooMany { retry_after_secs: 1_000_000_000_000 }]).await;
    let alerting = Launch::new(Some(&gauge))
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .env("SLACK_WEBHOOK_URL", &slack.url)
        .start()
        .await;
    let id = alerting.open_incident(Some(RESPONDER_KEY)).await;
    wait_until("the fallback page on the console", Duration::from_secs(10), async || {
        alerting.console_pages().iter().any(|p| p["page"]["kind"]["type"] == "delivery_failed")
    })
    .await;
    let failed = timeline(&alerting, id).await.into_iter().find(|e| e["kind"] == "delivery_failed").unwrap_or_default();
    let text = failed["text"].as_str().unwrap_or_default();
    assert!(text.contains("slack") && text.contains("Retry-After"), "{failed}");
    assert_eq!(slack.attempts(), 1, "no second try after being told to wait for years");
    assert!(!alerting.logs().contains("B0000/secret"), "the webhook URL is a secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_within_the_cap_is_waited_for() {
    let gauge = Gauge::start(50).await;
    let slack = SlackReceiver::start(vec![Reply::TooMany { retry_after_secs: 1 }]).await;
    let alerting = Launch::new(Some(&gauge))
        .env("SLACK_WEBHOOK_URL", &slack.url)
        .env("ALERTING_RETRY_AFTER_MAX", "5s")
        .start()
        .await;
    alerting.open_incident(None).await;
    let delivered = slack.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!((delivered.len(), slack.attempts()), (1, 2));
    assert!(!alerting.console_pages().iter().any(|p| p["page"]["kind"]["type"] == "delivery_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_uses_starttls_unless_told_otherwise() {
    let gauge = Gauge::start(50).await;
    // aiosmtpd here offers no STARTTLS: a client that insists on it sends nothing.
    let smtp = SmtpServer::start();
    let alerting = Launch::new(Some(&gauge))
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", &smtp.port.to_string())
        .env("ALERTING_MAX_ATTEMPTS", "1")
        .start()
        .await;
    let id = alerting.open_incident(Some(RESPONDER_KEY)).await;
    let mut failed = Value::Null;
    wait_until("the email delivery to fail", Duration::from_secs(15), async || {
        failed = timeline(&alerting, id).await.into_iter().find(|e| e["kind"] == "delivery_failed").unwrap_or_default();
        !failed.is_null()
    })
    .await;
    assert!(failed["text"].as_str().unwrap_or_default().contains("email"), "{failed}");
    assert!(smtp.messages().is_empty(), "nothing went out in plain text");
}

#[tokio::test]
async fn smtp_credentials_in_plain_text_are_refused_unless_the_server_is_on_this_machine() {
    let with = |host: &str| {
        Launch::new(None)
            .env("SMTP_HOST", host)
            .env("SMTP_USERNAME", "alerting")
            .env("SMTP_PASSWORD", "hunter2-smtp-secret")
            .env("SMTP_TLS", "none")
    };
    let (status, logs) = with("smtp.example.com").refused().await;
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("SMTP_TLS") && logs.contains("smtp.example.com"), "{logs}");
    assert!(!logs.contains("hunter2-smtp-secret"), "{logs}");
    let (status, logs) = with("10.0.0.1").refused().await;
    assert!(!status.success(), "{logs}");
    for host in ["127.0.0.1", "localhost", "::1"] {
        let alerting = with(host).start().await;
        assert!(!alerting.logs().contains("hunter2-smtp-secret"));
    }
    // Without credentials, plain text to a relay stays allowed.
    let alerting = Launch::new(None).env("SMTP_HOST", "smtp.example.com").env("SMTP_TLS", "none").start().await;
    drop(alerting);
}
