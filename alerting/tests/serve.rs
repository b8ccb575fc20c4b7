//! `alerting serve` as a process, over HTTP: what it refuses at start-up,
//! who may read and change what, what its logs never contain, when a
//! person may resolve an incident, how far a silence may reach, what every
//! framework-level rejection looks like, and the retention job.

mod support {
    pub mod serve;
}

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use reqwest::Method;
use serde_json::{Value, json};
use support::serve::{Alerting, Gauge, Launch, READ_KEY, RESPONDER_KEY, wait_until};
use testkit::{exchange, free_port, workspace_binary};

#[tokio::test]
async fn off_loopback_without_a_key_the_service_refuses_to_start_and_names_the_setting() {
    let port = free_port();
    let (status, logs) = Launch::new(None).env("ALERTING_LISTEN", &format!("0.0.0.0:{port}")).refused().await;
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("ALERTING_API_KEY") && logs.contains("loopback"), "the message names the setting: {logs}");
}

#[tokio::test]
async fn keys_shorter_than_32_bytes_are_refused_at_start() {
    let (status, logs) = Launch::new(None).env("ALERTING_API_KEY", "s3cret").refused().await;
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("ALERTING_API_KEY") && logs.contains("32"), "{logs}");
    let (status, logs) = Launch::new(None).env("ALERTING_READ_KEY", &"x".repeat(31)).refused().await;
    assert!(!status.success() && logs.contains("ALERTING_READ_KEY"), "{logs}");
}

#[tokio::test]
async fn on_loopback_without_any_key_the_api_stays_open() {
    let gauge = Gauge::start(50).await;
    let alerting = Launch::new(Some(&gauge)).start().await;
    let id = alerting.open_incident(None).await;
    let (status, body) =
        alerting.call(Method::POST, &format!("/v1/incidents/{id}/ack"), None, Some(json!({ "by": "kim" }))).await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    let acked =
        shown["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "acked").cloned().unwrap_or_default();
    assert_eq!(
        (acked["actor"].as_str(), &acked["key"]),
        (Some("kim"), &Value::Null),
        "no key, so none is named: {acked}"
    );
}

/// Every GET route of the API, with a path that exists in a fresh service.
const READS: &[&str] = &["/v1/alerts", "/v1/incidents", "/v1/incidents/1", "/v1/silences", "/v1/oncall"];

#[tokio::test]
async fn with_keys_every_route_but_health_metrics_and_the_document_needs_one_reads_included() {
    let gauge = Gauge::start(50).await;
    let alerting = Launch::new(Some(&gauge))
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .env("ALERTING_READ_KEY", READ_KEY)
        .start()
        .await;
    alerting.open_incident(Some(READ_KEY)).await;
    for path in READS {
        for key in
            [None, Some("wrong-key-that-is-long-enough-to-be-a-key"), Some(&RESPONDER_KEY[..RESPONDER_KEY.len() - 1])]
        {
            let (status, body) = alerting.call(Method::GET, path, key, None).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("UNAUTHORIZED")),
                "GET {path} with {key:?}: {body}"
            );
            assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("Bearer")), "{body}");
        }
        for key in [READ_KEY, RESPONDER_KEY] {
            let (status, body) = alerting.call(Method::GET, path, Some(key), None).await;
            assert_eq!(status, 200, "GET {path}: {body}");
        }
    }
    for open in ["/healthz", "/metrics", "/openapi.json"] {
        let r = alerting.http.get(format!("{}{open}", alerting.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open} needs no key");
    }
    // A key in any other scheme, or a bare token, is no key.
    let r = alerting
        .http
        .get(format!("{}/v1/alerts", alerting.url))
        .header("authorization", format!("Basic {RESPONDER_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_read_key_can_read_but_every_change_is_forbidden() {
    let gauge = Gauge::start(50).await;
    let alerting = Launch::new(Some(&gauge))
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .env("ALERTING_READ_KEY", READ_KEY)
        .start()
        .await;
    let id = alerting.open_incident(Some(READ_KEY)).await;
    let silence = json!({ "matchers": { "rule_id": "queue-admission-stall" }, "duration": "1h", "comment": "deploy" });
    let changes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, format!("/v1/incidents/{id}/ack"), Some(json!({ "by": "kim" }))),
        (Method::POST, format!("/v1/incidents/{id}/resolve"), None),
        (Method::POST, format!("/v1/incidents/{id}/notes"), Some(json!({ "text": "looking" }))),
        (Method::POST, format!("/v1/incidents/{id}/events"), Some(json!({ "kind": "runbook_step", "text": "step" }))),
        (Method::POST, "/v1/silences".into(), Some(silence.clone())),
        (Method::DELETE, "/v1/silences/1".into(), None),
    ];
    for (method, path, body) in &changes {
        let (status, answer) = alerting.call(method.clone(), path, Some(READ_KEY), body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{method} {path}: {answer}");
        let (status, answer) = alerting.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
    }
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), Some(READ_KEY), None).await;
    assert_eq!(shown["incident"]["state"], "firing", "nothing changed: {shown}");
    let (status, body) = alerting
        .call(Method::POST, &format!("/v1/incidents/{id}/ack"), Some(RESPONDER_KEY), Some(json!({ "by": "kim" })))
        .await;
    assert_eq!((status, body["incident"]["state"].as_str()), (200, Some("acked")), "{body}");
    let (status, body) = alerting.call(Method::POST, "/v1/silences", Some(RESPONDER_KEY), Some(silence)).await;
    assert_eq!(status, 201, "{body}");
}

/// `alerting keys new`: the entry on stdout (so `>> keys.yaml` appends only
/// the digest), the key itself on stderr.
fn new_key(name: &str, role: &str) -> (String, String) {
    let out = Command::new(workspace_binary("alerting"))
        .args(["keys", "new", "--name", name, "--role", role])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entry = String::from_utf8(out.stdout).unwrap();
    let key = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned();
    (entry, key)
}

#[tokio::test]
async fn a_keys_file_holds_only_digests_and_the_key_name_is_on_the_timeline() {
    let (kim_entry, kim_key) = new_key("kim", "responder");
    let (ro_entry, ro_key) = new_key("dashboards", "read");
    assert!(kim_key.len() >= 32, "{kim_key}");
    assert!(!kim_entry.contains(&kim_key), "the entry holds no secret: {kim_entry}");
    assert!(
        kim_entry.contains("name: kim") && kim_entry.contains("role: responder") && kim_entry.contains("sha256: "),
        "{kim_entry}"
    );

    let gauge = Gauge::start(50).await;
    let launch = Launch::new(Some(&gauge));
    let keys = launch.dir.path("keys.yaml");
    std::fs::write(&keys, format!("{kim_entry}{ro_entry}")).unwrap();
    let alerting = launch
        .env("ALERTING_KEYS_FILE", &keys.display().to_string())
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .start()
        .await;
    let id = alerting.open_incident(Some(&ro_key)).await;
    let (status, _) = alerting
        .call(Method::POST, &format!("/v1/incidents/{id}/notes"), Some(&ro_key), Some(json!({ "text": "x" })))
        .await;
    assert_eq!(status, 403, "a read entry cannot change anything");
    let (status, body) = alerting
        .call(Method::POST, &format!("/v1/incidents/{id}/ack"), Some(&kim_key), Some(json!({ "by": "on-call phone" })))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = alerting
        .call(
            Method::POST,
            &format!("/v1/incidents/{id}/notes"),
            Some(RESPONDER_KEY),
            Some(json!({ "text": "rolled back", "by": "lee" })),
        )
        .await;
    assert_eq!(status, 201);
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), Some(&kim_key), None).await;
    let timeline = shown["timeline"].as_array().unwrap();
    let acked = timeline.iter().find(|e| e["kind"] == "acked").unwrap();
    assert_eq!((acked["actor"].as_str(), acked["key"].as_str()), (Some("on-call phone"), Some("kim")), "{acked}");
    let note = timeline.iter().find(|e| e["kind"] == "note").unwrap();
    assert_eq!((note["actor"].as_str(), note["key"].as_str()), (Some("lee"), Some("api-key")), "{note}");
    let fired = timeline.iter().find(|e| e["kind"] == "fired").unwrap();
    assert!(fired["key"].is_null(), "the engine's own events name no key: {fired}");
}

#[tokio::test]
async fn a_bad_keys_file_is_refused_with_its_line() {
    let launch = Launch::new(None);
    let keys = launch.dir.path("keys.yaml");
    std::fs::write(
        &keys,
        format!(
            "- name: kim\n  role: responder\n  sha256: {}\n- name: ops\n  role: admin\n  sha256: {}\n",
            "a".repeat(64),
            "b".repeat(64)
        ),
    )
    .unwrap();
    let (status, logs) = launch.env("ALERTING_KEYS_FILE", &keys.display().to_string()).refused().await;
    assert!(!status.success());
    assert!(logs.contains("keys.yaml:5") && logs.contains("admin"), "{logs}");
}

#[tokio::test]
async fn resolving_an_incident_whose_alert_still_fires_is_refused_until_it_clears() {
    let gauge = Gauge::start(50).await;
    let alerting = Launch::new(Some(&gauge)).env("ALERTING_API_KEY", RESPONDER_KEY).start().await;
    let id = alerting.open_incident(Some(RESPONDER_KEY)).await;
    let (status, body) = alerting
        .call(Method::POST, &format!("/v1/incidents/{id}/resolve"), Some(RESPONDER_KEY), Some(json!({ "by": "kim" })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("ALERT_STILL_FIRING")), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("silence") && message.contains("resolves"), "says what to do: {message}");
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), Some(RESPONDER_KEY), None).await;
    assert_eq!(shown["incident"]["state"], "firing");

    // Once the cause is gone, the engine resolves it itself.
    gauge.set(0);
    wait_until("the engine to resolve the incident", Duration::from_secs(20), async || {
        let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), Some(RESPONDER_KEY), None).await;
        shown["incident"]["state"] == "resolved"
    })
    .await;
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), Some(RESPONDER_KEY), None).await;
    let resolved =
        shown["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "resolved").cloned().unwrap_or_default();
    assert_eq!(resolved["actor"], "alerting", "{resolved}");
}

#[tokio::test]
async fn silences_are_bounded_in_length_and_broad_ones_need_force() {
    let alerting = Launch::new(None).env("ALERTING_API_KEY", RESPONDER_KEY).start().await;
    let add = |body: Value| alerting.call(Method::POST, "/v1/silences", Some(RESPONDER_KEY), Some(body));
    let rule = json!({ "rule_id": "queue-admission-stall" });
    for (matchers, extra, why) in [
        (rule.clone(), json!({ "duration": "8d" }), "7d"),
        (rule.clone(), json!({ "duration": "106751991167d" }), "duration"),
        (rule.clone(), json!({ "duration": "99999999999999999999d" }), "duration"),
        (rule.clone(), json!({ "ends_at": "9999-12-31T23:59:59Z" }), "7d"),
        (rule.clone(), json!({ "duration": "1h", "starts_at": "9999-12-31T23:00:00Z" }), ""),
        (json!({ "severity": "critical" }), json!({ "duration": "1h" }), "force"),
        (json!({ "service": "booking" }), json!({ "duration": "1h", "force": false }), "force"),
    ] {
        let mut body = json!({ "matchers": matchers, "comment": "deploy" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, answer) = add(body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("BAD_REQUEST")), "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or_default().contains(why), "{body} → {answer}");
    }
    let (status, answer) =
        add(json!({ "matchers": { "severity": "critical" }, "duration": "1h", "comment": "game day", "force": true }))
            .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = add(json!({ "matchers": rule, "duration": "7d", "comment": "long freeze" })).await;
    assert_eq!(status, 201, "exactly the limit is allowed: {answer}");
    let (status, answer) =
        add(json!({ "matchers": { "alertname": "QueueDepth" }, "duration": "2h", "comment": "deploy" })).await;
    assert_eq!(status, 201, "an alertname is narrow enough: {answer}");

    // The CLI says so too, and takes --force.
    let cli = |force: bool| {
        let mut cmd = Command::new(workspace_binary("alerting"));
        cmd.args([
            "silence",
            "add",
            "--match",
            "severity=warning",
            "--for",
            "1h",
            "--comment",
            "drill",
            "--url",
            &alerting.url,
        ])
        .env_clear()
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let refused = cli(false);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("force"), "{refused:?}");
    let forced = cli(true);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
}

/// Typos silence nothing, so they are refused with a hint: a label no alert
/// carries (`rule` for `rule_id`), a rule that does not exist. The answer,
/// and the CLI, name the alerts a new silence mutes right now.
#[tokio::test]
async fn a_silence_that_could_never_match_is_refused_and_a_new_one_shows_what_it_mutes() {
    let gauge = Gauge::start(50).await;
    let alerting = Launch::new(Some(&gauge)).env("ALERTING_API_KEY", RESPONDER_KEY).start().await;
    alerting.open_incident(Some(RESPONDER_KEY)).await;
    let add = |matchers: Value, force: bool| {
        alerting.call(
            Method::POST,
            "/v1/silences",
            Some(RESPONDER_KEY),
            Some(json!({ "matchers": matchers, "duration": "1h", "comment": "c", "force": force })),
        )
    };
    for (matchers, why) in [
        (json!({ "rule": "queue-admission-stall" }), "did you mean `rule_id`?"),
        (json!({ "rule_id": "no-such-rule" }), "no rule has rule_id `no-such-rule`"),
        (json!({ "rule_id": "queue-admission-stal" }), "did you mean `queue-admission-stall`?"),
        (json!({ "alertname": "QueueDepth", "severity": "warning" }), "together"),
    ] {
        let (status, answer) = add(matchers.clone(), false).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("BAD_REQUEST")), "{matchers} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why) && message.contains("force"), "{matchers} → {message}");
    }
    let (status, answer) = add(json!({ "rule_id": "no-such-rule" }), true).await;
    assert_eq!(status, 201, "--force adds it anyway: {answer}");
    assert_eq!(answer["matches"], json!([]), "{answer}");
    let (status, answer) = add(json!({ "rule_id": "queue-admission-stall" }), false).await;
    assert_eq!(status, 201, "{answer}");
    let matches = answer["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "the firing QueueDepth: {answer}");
    assert_eq!(
        (matches[0]["key"]["rule_id"].as_str(), matches[0]["phase"].as_str()),
        (Some("queue-admission-stall"), Some("firing"))
    );

    let cli = |args: &[&str]| {
        Command::new(workspace_binary("alerting"))
            .args(args)
            .args(["--url", &alerting.url])
            .env_clear()
            .env("ALERTING_API_KEY", RESPONDER_KEY)
            .output()
            .unwrap()
    };
    let out =
        cli(&["silence", "add", "--match", "rule_id=queue-admission-stall", "--for", "1h", "--comment", "deploy"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("it mutes 1 alert(s) pending or firing now")
            && stdout.contains("queue-admission-stall"),
        "{out:?}"
    );
    let out = cli(&["silence", "add", "--match", "rule=queue-admission-stall", "--for", "1h", "--comment", "deploy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("did you mean `rule_id`?"), "{out:?}");
    assert_eq!(stderr.matches("no alert carries").count(), 1, "the cause is said once: {stderr}");
    let out = cli(&["incidents", "list", "--state", "resolved"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no incidents (resolved)\n", "{out:?}");
}

#[tokio::test]
async fn the_silence_limit_is_configurable() {
    let alerting = Launch::new(None).env("ALERTING_SILENCE_MAX", "2h").start().await;
    let body = |d: &str| json!({ "matchers": { "rule_id": "queue-admission-stall" }, "duration": d, "comment": "c" });
    let (status, _) = alerting.call(Method::POST, "/v1/silences", None, Some(body("2h"))).await;
    assert_eq!(status, 201);
    let (status, answer) = alerting.call(Method::POST, "/v1/silences", None, Some(body("2h1s"))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("ALERTING_SILENCE_MAX"), "{answer}");
}

#[tokio::test]
async fn a_password_in_the_prometheus_url_never_reaches_a_log_line() {
    let closed = free_port();
    let alerting = Launch::new(None)
        .without("ALERTING_SCRAPE")
        .env("PROMETHEUS_URL", &format!("http://alerting:hunter2-prom-secret@127.0.0.1:{closed}"))
        .start()
        .await;
    wait_until("two failed evaluations", Duration::from_secs(20), async || {
        alerting.metric("alerting_evaluations_total{outcome=\"source_error\"}").await.is_some_and(|n| n >= 2.0)
    })
    .await;
    let logs = alerting.logs();
    assert!(logs.contains("metric source unavailable"), "the failure is logged: {logs}");
    assert!(!logs.contains("hunter2-prom-secret"), "{logs}");
    let (_, alerts) = alerting.call(Method::GET, "/v1/alerts", None, None).await;
    assert!(!alerts.to_string().contains("hunter2"), "{alerts}");
}

/// A target that is down, watched through the `up` series its scrape
/// synthesises: the `instance` label names the target.
const TARGET_DOWN_RULES: &str = r#"
evaluation_interval: 1s
rules:
  - id: target-down
    kind: promql
    name: TargetDown
    summary: A scrape target is down
    owner: infra
    runbook: telemetry-pipeline-down
    expr: up
    critical: { below: 0.5, for: 0s, clear_above: 0.9 }
"#;

#[tokio::test]
async fn a_password_in_a_scrape_url_never_reaches_labels_pages_or_logs() {
    let closed = free_port();
    let launch = Launch::new(None);
    std::fs::write(launch.dir.path("rules.yaml"), TARGET_DOWN_RULES).unwrap();
    let alerting = launch
        .env("ALERTING_SCRAPE", &format!("app=http://scraper:hunter2-scrape-secret@127.0.0.1:{closed}/metrics"))
        .start()
        .await;
    let id = alerting.open_incident(None).await;
    wait_until("the page on the console", Duration::from_secs(10), async || !alerting.console_pages().is_empty()).await;
    let (_, shown) = alerting.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await;
    assert_eq!(shown["incident"]["labels"]["instance"], format!("127.0.0.1:{closed}"), "{shown}");
    let (_, alerts) = alerting.call(Method::GET, "/v1/alerts", None, None).await;
    let pages = serde_json::to_string(&alerting.console_pages()).unwrap();
    for (what, text) in
        [("incident", shown.to_string()), ("alerts", alerts.to_string()), ("pages", pages), ("logs", alerting.logs())]
    {
        assert!(!text.contains("hunter2-scrape-secret"), "{what}: {text}");
    }
}

#[tokio::test]
async fn framework_rejections_are_json_errors_too() {
    let alerting = Launch::new(None).start().await;
    let url = |path: &str| format!("{}{path}", alerting.url);
    let http = &alerting.http;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (http.put(url("/v1/alerts")), 405, "METHOD_NOT_ALLOWED"),
        (http.delete(url("/v1/incidents")), 405, "METHOD_NOT_ALLOWED"),
        (
            http.post(url("/v1/incidents/1/notes")).header("content-type", "text/plain").body("hello"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (http.post(url("/v1/incidents/1/notes")), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            http.post(url("/v1/incidents/1/ack")).header("content-type", "text/plain").body("{\"by\":\"kim\"}"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        // Just over the limit: small enough for the socket buffers, so the
        // client is done writing when the early answer comes.
        (
            http.post(url("/v1/silences")).header("content-type", "application/json").body(vec![b' '; 513 * 1024]),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            http.post(url("/v1/silences")).header("content-type", "application/json").body("{\"matchers\":"),
            400,
            "BAD_REQUEST",
        ),
        (http.post(url("/v1/silences")).json(&json!({ "matchers": 5 })), 400, "BAD_REQUEST"),
        (http.get(url("/v1/incidents/0")), 400, "BAD_REQUEST"),
        (http.get(url("/v1/incidents/-3")), 400, "BAD_REQUEST"),
        (http.get(url("/v1/incidents/+3")), 400, "BAD_REQUEST"),
        (http.get(url("/v1/incidents/99999999999999999999")), 400, "BAD_REQUEST"),
        (http.post(url("/v1/incidents/0/ack")), 400, "BAD_REQUEST"),
        (http.delete(url("/v1/silences/0")), 400, "BAD_REQUEST"),
        (http.get(url("/v1/incidents?limit=05")), 400, "BAD_REQUEST"),
        (http.get(url("/v1/oncall?at=9999-12-31T23:59:59Z")), 200, ""),
        (http.get(url("/v2/anything")), 404, "NOT_FOUND"),
    ];
    for (request, want, code) in cases {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url());
        let response = http.execute(request).await.unwrap();
        let status = response.status().as_u16();
        let allow = response.headers().get("allow").is_some();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{what}: {body}");
        assert!(content_type.starts_with("application/json"), "{what}: {content_type}");
        if want >= 400 {
            assert_eq!(body["error"]["code"], code, "{what}: {body}");
            assert!(body["error"]["message"].is_string(), "{what}: {body}");
        }
        if want == 405 {
            assert!(allow, "{what}: a 405 says what is allowed");
        }
    }
}

#[tokio::test]
async fn the_retention_job_deletes_old_resolved_incidents_and_delivered_pages() {
    const DAY: i64 = 86_400_000;
    let launch = Launch::new(None);
    let now = chrono::Utc::now().timestamp_millis();
    let db = format!("sqlite://{}", launch.dir.path("incidents.db").display());
    let (old, recent, old_open) = {
        let store = alerting::incidents::Store::connect(&db).await.unwrap();
        let open = async |fingerprint: &str, at: i64| {
            let new = alerting::incidents::NewIncident {
                fingerprint: fingerprint.into(),
                rule_id: "queue-admission-stall".into(),
                alert: "QueueDepth".into(),
                severity: alerting::rules::Severity::Critical,
                summary: "deep".into(),
                labels: Default::default(),
                value: 50.0,
                threshold: 10.0,
                op: alerting::rules::Op::Above,
                started_at: at,
                paged_at: at,
            };
            store.open(&new).await.unwrap().0.id
        };
        let old = open("old{}", now - 200 * DAY).await;
        store
            .record(old, now - 200 * DAY, alerting::incidents::EventKind::Note, Some("kim"), "old note", None)
            .await
            .unwrap();
        store.enqueue(old, "old:page", "console", "[]", "{}", now - 200 * DAY).await.unwrap();
        let due = store.due(now, 10).await.unwrap();
        store.delivered(&due[0], now - 200 * DAY).await.unwrap();
        store.resolve(old, "alerting", now - 199 * DAY).await.unwrap();
        let recent = open("recent{}", now - 2 * DAY).await;
        store.resolve(recent, "alerting", now - DAY).await.unwrap();
        let old_open = open("still-open{}", now - 200 * DAY).await;
        store.close().await;
        (old, recent, old_open)
    };
    let alerting: Alerting = launch.start().await;
    let status = async |id: i64| alerting.call(Method::GET, &format!("/v1/incidents/{id}"), None, None).await.0;
    wait_until("the incident resolved 199 days ago to be deleted", Duration::from_secs(20), async || {
        status(old).await == 404
    })
    .await;
    assert_eq!(status(recent).await, 200, "resolved a day ago: kept");
    assert_eq!(status(old_open).await, 200, "open incidents are never deleted");
}

#[tokio::test]
async fn a_slow_client_gets_a_408_or_a_closed_connection_and_holds_nothing() {
    let alerting = Launch::new(None)
        .env("ALERTING_API_KEY", RESPONDER_KEY)
        .env("ALERTING_HTTP_HEADER_READ_TIMEOUT", "1s")
        .env("ALERTING_HTTP_BODY_READ_TIMEOUT", "1s")
        .env("ALERTING_REQUEST_TIMEOUT", "4s")
        .start()
        .await;
    let port = alerting.launch.port;
    // A body trickled past its deadline: the client's 408, with the JSON body.
    let head = format!(
        "POST /v1/silences HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {RESPONDER_KEY}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"matchers\""
    );
    let answer = exchange(("127.0.0.1", port), head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
    // A request head that never ends: the connection is closed, and counted.
    let answer = exchange(("127.0.0.1", port), b"GET /v1/alerts HTTP/1.1\r\nhost: t\r\n").await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let metrics = alerting.http.get(format!("{}/metrics", alerting.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_server_connections_closed_total{reason=\"header_timeout\"} 1"), "{metrics}");
    assert!(metrics.contains("http_server_connections_max 1000"), "{metrics}");
}

#[tokio::test]
async fn a_body_deadline_the_request_deadline_would_cut_short_is_refused_at_start() {
    let (status, logs) = Launch::new(None)
        .env("ALERTING_HTTP_BODY_READ_TIMEOUT", "10s")
        .env("ALERTING_REQUEST_TIMEOUT", "10s")
        .refused()
        .await;
    assert!(!status.success());
    assert!(logs.contains("ALERTING_HTTP_BODY_READ_TIMEOUT"), "{logs}");
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_file_is_refused_with_a_clear_error() {
    let shared = testkit::TempDir::new("alerting-shared-sqlite");
    let db = format!("sqlite://{}", shared.path("incidents.db").display());
    let first = Launch::new(None).env("ALERTING_DATABASE_URL", &db).start().await;
    let (status, logs) = Launch::new(None).env("ALERTING_DATABASE_URL", &db).refused().await;
    assert!(!status.success());
    assert!(logs.contains("already in use by another alerting process") && logs.contains("PostgreSQL"), "{logs}");
    // The first keeps serving.
    assert_eq!(first.call(Method::GET, "/v1/incidents", None, None).await.0, 200);
    // Once it is gone (killed, not stopped), the file is free again.
    drop(first);
    let store = alerting::incidents::Store::connect(&db).await.expect("the lock died with the process");
    store.close().await;
}
