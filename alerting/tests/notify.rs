//! Notifiers against real wire formats: Slack payloads through a receiver
//! that validates Block Kit like Slack does, email through a real SMTP
//! server (aiosmtpd), and the console file.

// A test crate root resolves these as tests/support/*.rs.
mod support {
    pub mod slack_receiver;
    pub mod smtp;
}

use std::{collections::BTreeMap, time::Duration};

use alerting::{
    notify::{
        Notifier, Page, PageKind, Recipient, SendError,
        console::{Console, Format},
        email::{Email, EmailConfig, Tls},
        slack::{self, Slack},
    },
    rules::{Op, Severity, Unit},
};
use chrono::TimeZone;
use serde_json::Value;
use support::{
    slack_receiver::{Reply, SlackReceiver},
    smtp::{self, SmtpServer},
};

const WAIT: Duration = Duration::from_secs(10);

fn page(kind: PageKind) -> Page {
    Page {
        kind,
        incident_id: 42,
        alert: "HighErrorRate".into(),
        rule_id: "high-error-rate".into(),
        severity: Severity::Critical,
        summary: "5xx ratio on the booking API is above 1 %".into(),
        value: 0.0152,
        threshold: 0.01,
        op: Op::Above,
        unit: Unit::Ratio,
        since: chrono::Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
        labels: BTreeMap::from([("route".into(), "/v1/holds".into()), ("service".into(), "booking".into())]),
        runbook_url: "https://runbooks.example.test/high-error-rate".into(),
        runbook_command: "runbook run high-error-rate --incident 42".into(),
        dashboard_url: Some("https://grafana.example.test/d/booking".into()),
        ack_command: "alerting ack 42".into(),
        resolved_value: None,
        lasted_secs: None,
        also: Vec::new(),
    }
}

fn on_call() -> Vec<Recipient> {
    vec![
        Recipient { name: "Ada".into(), slack: Some("U0ADA".into()), email: Some("ada@example.test".into()) },
        Recipient { name: "Grace".into(), slack: Some("U0GRACE".into()), email: Some("grace@example.test".into()) },
    ]
}

fn slack_to(url: &str) -> Notifier {
    Notifier::Slack(Slack::try_new(url, Duration::from_secs(5)).expect("slack notifier"))
}

fn header_text(payload: &Value) -> &str {
    payload["blocks"][0]["text"]["text"].as_str().expect("header text")
}

#[tokio::test]
async fn slack_payloads_of_every_kind_pass_block_kit_validation() {
    let receiver = SlackReceiver::start(vec![]).await;
    let notifier = slack_to(&receiver.url);
    let kinds = [PageKind::Firing, PageKind::Escalated { level: 2 }, PageKind::Resolved, PageKind::DeliveryFailed];
    for kind in kinds {
        notifier.send(&page(kind), &on_call()).await.expect("delivered");
    }

    let delivered = receiver.wait_for(4, WAIT).await;
    assert_eq!(receiver.violations(), Vec::<String>::new());
    assert_eq!(header_text(&delivered[0]), "[CRITICAL] HighErrorRate firing");
    assert_eq!(header_text(&delivered[1]), "[CRITICAL] HighErrorRate escalated (level 2)");
    assert_eq!(header_text(&delivered[2]), "[RESOLVED] HighErrorRate");
    assert!(header_text(&delivered[3]).contains("not delivered"));

    let firing = delivered[0].to_string();
    for expected in [
        "<@U0ADA> <@U0GRACE>",
        "1.52 % (&gt; 1.00 %)",
        "<!date^1795341600^{date_short_pretty} {time}|2026-11-22T10:00:00Z>",
        "`alerting ack 42`",
        "`runbook run high-error-rate --incident 42`",
        "https://runbooks.example.test/high-error-rate",
        "https://grafana.example.test/d/booking",
        "/v1/holds",
    ] {
        assert!(firing.contains(expected), "firing payload lacks {expected:?}: {firing}");
    }
    assert!(delivered[0]["text"].as_str().unwrap().starts_with("<@U0ADA> <@U0GRACE> "));
    assert!(!delivered[2].to_string().contains("alerting ack 42"), "a resolved page asks for no ack");
}

#[tokio::test]
async fn oversized_pages_are_truncated_to_block_kit_limits() {
    let receiver = SlackReceiver::start(vec![]).await;
    let mut big = page(PageKind::Firing);
    big.alert = "A".repeat(400);
    big.summary = "<b>&".repeat(5_000);
    big.labels = (0..40).map(|i| (format!("label{i}"), "v".repeat(5_000))).collect();
    big.runbook_url = format!("https://runbooks.example.test/{}", "x".repeat(4_000));
    big.dashboard_url = Some("grafana/d/booking".into()); // not absolute: Slack rejects it as a button url
    let recipients: Vec<Recipient> = (0..400)
        .map(|i| Recipient { name: format!("person {i}"), slack: Some(format!("U{i:08}")), email: None })
        .collect();

    slack_to(&receiver.url).send(&big, &recipients).await.expect("delivered");

    let delivered = receiver.wait_for(1, WAIT).await;
    assert_eq!(receiver.violations(), Vec::<String>::new());
    let header = header_text(&delivered[0]);
    assert_eq!(header.chars().count(), 150);
    assert!(header.ends_with('…'));
    let blocks = delivered[0]["blocks"].as_array().unwrap();
    assert!(blocks.iter().all(|b| b["type"] != "actions"), "no valid URL, so no buttons");
    assert!(delivered[0].to_string().contains("and 31 more labels"));
}

#[tokio::test]
async fn the_receiver_rejects_what_slack_would_reject() {
    let receiver = SlackReceiver::start(vec![]).await;
    let invalid = serde_json::json!({
        "text": "x",
        "blocks": [
            { "type": "header", "text": { "type": "mrkdwn", "text": "H".repeat(151) } },
            { "type": "actions", "elements": [
                { "type": "button", "text": { "type": "plain_text", "text": "a" }, "action_id": "same", "url": "/relative" },
                { "type": "button", "text": { "type": "plain_text", "text": "b" }, "action_id": "same" }
            ] },
            { "type": "carousel" }
        ]
    });
    let response = reqwest::Client::new().post(&receiver.url).json(&invalid).send().await.unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), "invalid_blocks");
    let violations = receiver.violations().join("\n");
    for expected in
        ["must be plain_text", "151 chars, limit 150", "not an absolute", "duplicate action_id", "unknown block type"]
    {
        assert!(violations.contains(expected), "missing {expected:?} in {violations}");
    }
    assert!(receiver.delivered().is_empty());
}

#[tokio::test]
async fn slack_rate_limit_is_retryable_after_retry_after() {
    let receiver = SlackReceiver::start(vec![Reply::TooMany { retry_after_secs: 7 }]).await;
    let notifier = slack_to(&receiver.url);

    let first = notifier.send(&page(PageKind::Firing), &on_call()).await;
    assert!(
        matches!(first, Err(SendError::Retryable { after: Some(d), .. }) if d == Duration::from_secs(7)),
        "{first:?}"
    );
    assert!(receiver.delivered().is_empty());

    notifier.send(&page(PageKind::Firing), &on_call()).await.expect("second attempt delivered");
    assert_eq!(receiver.attempts(), 2);
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn slack_server_error_is_retryable() {
    let receiver = SlackReceiver::start(vec![Reply::ServerError]).await;
    let result = slack_to(&receiver.url).send(&page(PageKind::Firing), &on_call()).await;
    assert!(matches!(result, Err(SendError::Retryable { after: None, .. })), "{result:?}");
}

#[tokio::test]
async fn slack_client_errors_are_permanent() {
    let receiver = SlackReceiver::start(vec![Reply::Status(400), Reply::Status(404)]).await;
    let notifier = slack_to(&receiver.url);
    for _ in 0..2 {
        let result = notifier.send(&page(PageKind::Firing), &on_call()).await;
        assert!(matches!(result, Err(SendError::Permanent(_))), "{result:?}");
    }
}

#[tokio::test]
async fn slack_unreachable_is_retryable_and_hides_the_webhook_token() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/services/T0/B0/secret-token", closed.local_addr().unwrap());
    drop(closed);

    let result = slack_to(&url).send(&page(PageKind::Firing), &on_call()).await;
    let Err(SendError::Retryable { reason, after: None }) = result else { panic!("{result:?}") };
    assert!(!reason.contains("secret-token"), "{reason}");
}

#[tokio::test]
async fn slack_timeout_is_retryable() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });

    let notifier = Slack::new(&url, Duration::from_millis(200));
    let result = notifier.send(&page(PageKind::Firing), &on_call()).await;
    assert!(matches!(result, Err(SendError::Retryable { .. })), "{result:?}");
    hold.abort();
}

#[tokio::test]
async fn slack_with_an_unusable_webhook_fails_permanently() {
    assert!(Slack::try_new("hooks.slack.com/services/x", Duration::from_secs(1)).is_err());
    let slack = Slack::new("ftp://hooks.example.test/x", Duration::from_secs(1));
    let result = slack.send(&page(PageKind::Firing), &on_call()).await;
    assert!(matches!(result, Err(SendError::Permanent(_))), "{result:?}");
}

#[test]
fn slack_payload_is_exposed_for_inspection() {
    let payload = slack::payload(&page(PageKind::Resolved), &[]);
    assert_eq!(header_text(&payload), "[RESOLVED] HighErrorRate");
    assert!(payload.to_string().contains("*On call*\\nnobody"));
}

fn email_to(server: &SmtpServer) -> Notifier {
    Notifier::Email(
        Email::new(EmailConfig {
            host: server.host.clone(),
            port: server.port,
            tls: Tls::None,
            from: "Alerting <alerting@example.test>".into(),
            username: None,
            password: None,
        })
        .expect("email notifier"),
    )
}

#[tokio::test]
async fn email_arrives_with_text_and_html_parts_and_escapes_html() {
    let server = SmtpServer::start();
    let mut p = page(PageKind::Firing);
    p.summary = "errors <script>alert(1)</script> on holds".into();

    email_to(&server).send(&p, &on_call()).await.expect("sent");

    let raw = &server.wait_for(1, WAIT).await[0];
    assert_eq!(smtp::header_value(raw, "subject").as_deref(), Some("[CRITICAL] HighErrorRate firing"));
    let to = smtp::header_value(raw, "to").unwrap();
    assert!(to.contains("ada@example.test") && to.contains("grace@example.test"), "{to}");
    let rcpt = smtp::header_value(raw, "x-rcptto").unwrap();
    assert!(rcpt.contains("ada@example.test") && rcpt.contains("grace@example.test"), "{rcpt}");
    assert!(smtp::header_value(raw, "content-type").unwrap().starts_with("multipart/alternative"));

    let parts = smtp::parts(raw);
    let text = &parts.iter().find(|p| p.content_type == "text/plain").expect("text part").body;
    let html = &parts.iter().find(|p| p.content_type == "text/html").expect("html part").body;
    for body in [text, html] {
        for expected in [
            "https://runbooks.example.test/high-error-rate",
            "https://grafana.example.test/d/booking",
            "alerting ack 42",
            "runbook run high-error-rate --incident 42",
            "2026-11-22T10:00:00Z",
        ] {
            assert!(body.contains(expected), "missing {expected:?} in {body}");
        }
    }
    assert!(text.contains("1.52 % (> 1.00 %)"));
    assert!(html.contains("1.52 % (&gt; 1.00 %)"));
    assert!(html.contains("<a href=\"https://runbooks.example.test/high-error-rate\">Runbook</a>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"), "{html}");
}

#[tokio::test]
async fn email_to_an_unreachable_server_is_retryable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let email = Email::new(EmailConfig {
        host: "127.0.0.1".into(),
        port,
        tls: Tls::None,
        from: "alerting@example.test".into(),
        username: None,
        password: None,
    })
    .unwrap();

    let result = email.send(&page(PageKind::Firing), &on_call()).await;
    assert!(matches!(result, Err(SendError::Retryable { .. })), "{result:?}");
}

#[tokio::test]
async fn email_without_any_address_is_permanent() {
    let email = Email::new(EmailConfig {
        host: "127.0.0.1".into(),
        port: 25,
        tls: Tls::None,
        from: "alerting@example.test".into(),
        username: None,
        password: Some("hunter2".into()),
    });
    assert!(email.is_err(), "a password without a username is refused");

    let email = Email::new(EmailConfig {
        host: "127.0.0.1".into(),
        port: 25,
        tls: Tls::None,
        from: "alerting@example.test".into(),
        username: None,
        password: None,
    })
    .unwrap();
    let nobody = [Recipient { name: "Ada".into(), slack: Some("U0ADA".into()), email: None }];
    let result = email.send(&page(PageKind::Firing), &nobody).await;
    assert!(matches!(result, Err(SendError::Permanent(_))), "{result:?}");
}

#[test]
fn email_config_never_prints_the_password() {
    let config = EmailConfig {
        host: "smtp.example.test".into(),
        port: 587,
        tls: Tls::StartTls,
        from: "alerting@example.test".into(),
        username: Some("alerting".into()),
        password: Some("hunter2".into()),
    };
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[tokio::test]
async fn console_file_appends_one_json_line_per_page() {
    let dir = std::env::temp_dir().join(format!("alerting-console-{}", uuid_like()));
    let path = dir.join("nested").join("pages.jsonl");
    let console = Notifier::Console(Console::file(&path));
    let firing = page(PageKind::Firing);
    let resolved = page(PageKind::Resolved);

    console.send(&firing, &on_call()).await.expect("first");
    console.send(&resolved, &on_call()[..1]).await.expect("second");

    let content = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = content.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(serde_json::from_value::<Page>(lines[0]["page"].clone()).unwrap(), firing);
    assert_eq!(serde_json::from_value::<Page>(lines[1]["page"].clone()).unwrap(), resolved);
    assert_eq!(lines[0]["to"].as_array().unwrap().len(), 2);
    assert_eq!(lines[1]["to"][0]["name"], "Ada");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `scripts/run.sh` hands the alerting service its terminal as a file, so
/// pages stand apart from the logs: the same block as on stdout, whole.
#[tokio::test]
async fn console_file_in_text_format_appends_the_readable_block() {
    let dir = std::env::temp_dir().join(format!("alerting-console-text-{}", uuid_like()));
    let path = dir.join("pages.txt");
    let console = Notifier::Console(Console::file(&path).with_format(Format::Text));
    let firing = page(PageKind::Firing);
    console.send(&firing, &on_call()).await.expect("first");
    console.send(&page(PageKind::Resolved), &on_call()).await.expect("second");

    let content = std::fs::read_to_string(&path).unwrap();
    let rule = "=".repeat(72);
    assert_eq!(content.matches(&rule).count(), 4, "two blocks between rules:\n{content}");
    assert!(content.starts_with(&format!("{rule}\n{}\nTo: Ada, ", firing.title())), "{content}");
    assert!(content.contains("[RESOLVED] HighErrorRate"), "{content}");
    assert!(content.contains(&format!("Acknowledge:  {}", firing.ack_command)), "{content}");
    assert!(!content.contains('\x1b'), "no colour codes in a plain file: {content:?}");
    assert!(serde_json::from_str::<Value>(content.lines().next().unwrap()).is_err(), "not JSON");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn console_stdout_delivers() {
    let console = Notifier::Console(Console::stdout());
    assert_eq!(console.channel().as_str(), "console");
    console.send(&page(PageKind::Firing), &on_call()).await.expect("printed");
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:x}", h.finish())
}

/// Real Slack is `https://hooks.slack.com`: the notifier must open a TLS
/// session, not refuse the scheme. A local listener that is no TLS server
/// sees the client's first bytes: a TLS handshake record (0x16 0x03).
#[tokio::test]
async fn an_https_webhook_is_spoken_to_over_tls() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 3];
        socket.read_exact(&mut head).await.unwrap();
        head
    });
    let slack =
        Slack::try_new(&format!("https://127.0.0.1:{port}/services/T0/B0/secret"), Duration::from_secs(5)).unwrap();
    let result = slack.send(&page(PageKind::Firing), &[]).await;
    let head = tokio::time::timeout(Duration::from_secs(5), first_bytes).await.expect("the client connected").unwrap();
    assert_eq!(&head[..2], &[0x16, 0x03], "a TLS handshake record, got {head:?}");
    match result {
        Err(SendError::Retryable { reason, .. }) => {
            assert!(!reason.contains("secret"), "the token stays out of reasons: {reason}")
        }
        other => panic!("a failed handshake is worth retrying, got {other:?}"),
    }
}
