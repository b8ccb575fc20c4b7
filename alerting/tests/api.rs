//! The alerting HTTP API over a real socket: every bad request is a clear
//! 4xx with a JSON error body and changes nothing; the happy paths work;
//! and every answer is what `openapi.json` says it is.

mod support {
    pub mod openapi;
}

use std::{sync::Arc, time::Duration};

use alerting::{
    auth::Keys,
    engine::{AlertKey, Engine, Transition},
    http::{AppState, router},
    incidents,
    metrics::Metrics,
    notify::{Notifier, console::Console},
    oncall::Roster,
    rules::{Op, Severity},
    service::{Channels, Config, Service},
};
use serde_json::{Value, json};
use support::openapi::Doc;

struct Api {
    base: String,
    http: reqwest::Client,
    state: Arc<AppState>,
    _dir: testkit::TempDir,
}

const KEY: &str = "responder-key-for-api-tests-0123456789";
const READ: &str = "read-only-key-for-api-tests-0123456789";

async fn api(api_key: Option<&str>) -> Api {
    api_with(Keys::load(api_key, None, None).unwrap()).await
}

async fn api_with(keys: Keys) -> Api {
    let dir = testkit::TempDir::new("alerting-api");
    let store = incidents::Store::connect(&format!("sqlite://{}", dir.join("a.db").display())).await.unwrap();
    let set = alerting::rules::shipped();
    let channels =
        Channels { slack: None, email: None, console: Notifier::Console(Console::file(dir.join("pages.jsonl"))) };
    let service =
        Service::new(store, Roster::example(), set.rules.clone(), channels, Config::default(), Metrics::new());
    let state = Arc::new(AppState {
        service,
        engine: std::sync::Mutex::new(Engine::new(set.rules)),
        wake: tokio::sync::Notify::new(),
        keys,
        silence_max: alerting::http::SILENCE_MAX,
        request_timeout: alerting::http::REQUEST_TIMEOUT,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api { base, http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(), state, _dir: dir }
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        self.send_as(None, method, path, body).await
    }

    /// Sends with `key` as the bearer token, and checks the answer against
    /// the document: a documented status, a body that fits its schema.
    async fn send_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_owned());
        }
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let doc = Doc::load();
        if doc.template(path).is_some() {
            if let Err(e) = doc.check(method.as_str(), path, status, &content_type, &body) {
                panic!("{e}");
            }
        } else {
            assert!(body["error"]["code"].is_string(), "an undocumented path still answers the error envelope: {body}");
        }
        (status, body)
    }

    async fn open_incident(&self) -> i64 {
        let fired = Transition::Fired {
            key: AlertKey { rule_id: "high-error-rate".into(), labels: Default::default() },
            severity: Severity::Critical,
            value: 0.3,
            threshold: 0.01,
            op: Op::Above,
            since_ms: 1_800_000_000_000,
            detail: "errors".into(),
        };
        self.state.service.apply(vec![fired], 1_800_000_000_000).await.unwrap();
        self.state.service.store.list(None, 1).await.unwrap()[0].id
    }
}

use reqwest::Method;

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_json_error_and_change_nothing() {
    let api = api(None).await;
    let id = api.open_incident().await;
    let long_by = json!({ "by": "é".repeat(201) }).to_string();
    let cases: Vec<(Method, String, Option<&str>, u16)> = vec![
        (Method::GET, "/v1/incidents/abc".into(), None, 400),
        (Method::GET, "/v1/incidents/999999".into(), None, 404),
        (Method::GET, "/v1/incidents?state=bogus".into(), None, 400),
        (Method::GET, "/v1/incidents?limit=0".into(), None, 400),
        (Method::GET, "/v1/incidents?surprise=1".into(), None, 400),
        (Method::POST, format!("/v1/incidents/{id}/ack"), Some("{not json"), 400),
        (Method::POST, format!("/v1/incidents/{id}/ack"), Some(r#"{"by":""}"#), 400),
        (Method::POST, format!("/v1/incidents/{id}/ack"), Some(r#"{"who":"kim"}"#), 400),
        (Method::POST, "/v1/incidents/999999/ack".into(), None, 404),
        (Method::POST, format!("/v1/incidents/{id}/notes"), Some(r#"{"text":""}"#), 400),
        (Method::POST, format!("/v1/incidents/{id}/notes"), Some(r#"{"txt":"x"}"#), 400),
        (Method::POST, format!("/v1/incidents/{id}/events"), Some(r#"{"kind":"drop_table","text":"x"}"#), 400),
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{},"duration":"1h","comment":"c"}"#), 400),
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{"a":"b"},"duration":"1x","comment":"c"}"#), 400),
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{"a":"b"},"duration":"1h","comment":""}"#), 400),
        (
            Method::POST,
            "/v1/silences".into(),
            Some(r#"{"matchers":{"a":"b"},"ends_at":"2001-01-01T00:00:00Z","comment":"c"}"#),
            400,
        ),
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{"a":"b"},"comment":"c"}"#), 400),
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{"a":"b"},"duration":"1h","comment":"c"}"#), 400),
        (
            Method::POST,
            "/v1/silences".into(),
            Some(r#"{"matchers":{"rule_id":"cpu-high"},"duration":"8d","comment":"c"}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/silences".into(),
            Some(r#"{"matchers":{"rule id":"x"},"duration":"1h","comment":"c"}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/silences".into(),
            Some(r#"{"matchers":{"rule_id":"x\u0000"},"duration":"1h","comment":"c"}"#),
            400,
        ),
        (
            Method::POST,
            "/v1/silences".into(),
            Some(
                r#"{"matchers":{"rule_id":"cpu-high"},"duration":"1h","comment":"c","starts_at":"2026-01-01 00:00:00Z"}"#,
            ),
            400,
        ),
        (Method::POST, format!("/v1/incidents/{id}/notes"), Some(r#"{"text":"nul \u0000 inside"}"#), 400),
        (Method::POST, format!("/v1/incidents/{id}/notes"), Some(r#"{"text":" \t\r\n"}"#), 400),
        (Method::POST, format!("/v1/incidents/{id}/ack"), Some(&long_by), 400),
        (Method::GET, "/v1/incidents/0".into(), None, 400),
        (Method::GET, "/v1/incidents?limit=1001".into(), None, 400),
        (Method::GET, format!("/v1/oncall?owner={}", "x".repeat(201)), None, 400),
        (Method::GET, "/v1/oncall?severity=fatal".into(), None, 400),
        (Method::DELETE, "/v1/silences/77".into(), None, 404),
        (Method::DELETE, "/v1/silences/x".into(), None, 400),
        (Method::GET, "/v1/oncall?rule=nope".into(), None, 404),
        (Method::GET, "/v1/oncall?at=yesterday".into(), None, 400),
        (Method::GET, "/v2/anything".into(), None, 404),
    ];
    for (method, path, body, want) in cases {
        let (status, json) = api.send(method.clone(), &path, body).await;
        assert_eq!(status, want, "{method} {path} {body:?} → {json}");
        assert!(json["error"]["code"].is_string() && json["error"]["message"].is_string(), "{method} {path}: {json}");
    }
    // Just within every bound is fine.
    let (status, json) = api
        .send(
            Method::POST,
            &format!("/v1/incidents/{id}/notes"),
            Some(&json!({ "text": "é".repeat(10_000), "by": "é".repeat(200) }).to_string()),
        )
        .await;
    assert_eq!(status, 201, "{json}");
    let (_, shown) = api.send(Method::GET, &format!("/v1/incidents/{id}"), None).await;
    assert_eq!(shown["incident"]["state"], "firing", "nothing changed");
    assert!(!shown["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "acked"));
}

#[tokio::test]
async fn notes_events_silences_ack_and_resolve_work_and_resolve_twice_is_harmless() {
    let api = api(None).await;
    let id = api.open_incident().await;
    let (status, _) = api
        .send(Method::POST, &format!("/v1/incidents/{id}/notes"), Some(r#"{"text":"rolled back","by":"kim"}"#))
        .await;
    assert_eq!(status, 201);
    let step = json!({ "kind": "runbook_step", "text": "postgres.long_queries: 1 found", "by": "runbook", "data": { "count": 1 } });
    let (status, _) = api.send(Method::POST, &format!("/v1/incidents/{id}/events"), Some(&step.to_string())).await;
    assert_eq!(status, 201);
    let (status, body) = api.send(Method::POST, &format!("/v1/incidents/{id}/ack"), None).await;
    assert_eq!((status, body["incident"]["state"].as_str()), (200, Some("acked")));
    let (status, body) = api.send(Method::POST, &format!("/v1/incidents/{id}/resolve"), Some(r#"{"by":"kim"}"#)).await;
    assert_eq!((status, body["incident"]["state"].as_str()), (200, Some("resolved")));
    let (status, _) = api.send(Method::POST, &format!("/v1/incidents/{id}/resolve"), None).await;
    assert_eq!(status, 200);
    let (status, body) = api.send(Method::POST, &format!("/v1/incidents/{id}/ack"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("ALREADY_RESOLVED")));
    let (_, shown) = api.send(Method::GET, &format!("/v1/incidents/{id}"), None).await;
    let kinds: Vec<&str> = shown["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fired", "paged", "note", "runbook_step", "acked", "resolved"]);
    assert_eq!(shown["timeline"][3]["data"]["count"], 1);

    let (status, body) = api
        .send(
            Method::POST,
            "/v1/silences",
            Some(r#"{"matchers":{"rule_id":"cpu-high"},"duration":"2h","kind":"maintenance","comment":"resize"}"#),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let silence = body["silence"]["id"].as_i64().unwrap();
    let (_, listed) = api.send(Method::GET, "/v1/silences", None).await;
    assert_eq!(listed["silences"].as_array().unwrap().len(), 1);
    let (status, _) = api.send(Method::DELETE, &format!("/v1/silences/{silence}"), None).await;
    assert_eq!(status, 204);
    let (_, listed) = api.send(Method::GET, "/v1/silences", None).await;
    assert!(listed["silences"].as_array().unwrap().is_empty());

    let (status, who) = api.send(Method::GET, "/v1/oncall?rule=high-error-rate&at=2026-03-29T01:30:00Z", None).await;
    assert_eq!(status, 200);
    assert_eq!(who["steps"][0]["people"].as_array().unwrap().len(), 4, "critical: every role at once: {who}");
}

#[tokio::test]
async fn with_an_api_key_reads_and_changes_need_it() {
    let api = api(Some(KEY)).await;
    let id = api.open_incident().await;
    let (status, body) = api.send(Method::POST, &format!("/v1/incidents/{id}/ack"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, _) = api.send(Method::GET, &format!("/v1/incidents/{id}"), None).await;
    assert_eq!(status, 401, "reads too: timelines hold runbook output, emails and Slack ids");
    let (status, _) = api.send_as(Some(KEY), Method::GET, &format!("/v1/incidents/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = api.send_as(Some(KEY), Method::POST, &format!("/v1/incidents/{id}/ack"), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let doc = Doc::load();
    assert!(doc.0["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc.0["paths"].as_object().unwrap() {
        for method in
            ops.as_object().unwrap().keys().filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
        {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut implemented: Vec<(String, String)> =
        alerting::http::routes().iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    implemented.sort();
    assert_eq!(documented, implemented);

    // Every listed route is really served, and the document is served as is.
    let api = api(None).await;
    for (method, path) in &implemented {
        let concrete = path.replace("{id}", "1");
        let r = api.http.request(method.parse().unwrap(), format!("{}{concrete}", api.base)).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["error"]["message"] != "no such endpoint",
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    let served: Value = api.http.get(format!("{}/openapi.json", api.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, doc.0);
}

/// What the server checks, the document says: the rules a fuzzer reads.
#[tokio::test]
async fn the_document_states_the_servers_rules() {
    let doc = Doc::load();
    let codes: Vec<&str> = doc.0["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in [
        "BAD_REQUEST",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "ALREADY_RESOLVED",
        "ALERT_STILL_FIRING",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "INTERNAL",
    ] {
        assert!(codes.contains(&code), "{code}");
    }
    for (method, path) in alerting::http::routes() {
        let op = doc.operation(method, &path.replace("{id}", "1")).unwrap();
        let responses = op["responses"].as_object().unwrap();
        let open = op["security"].as_array().is_some_and(Vec::is_empty);
        assert_eq!(
            open,
            ["/healthz", "/metrics", "/openapi.json"].contains(&path),
            "{method} {path}: only those need no key"
        );
        if !open {
            assert!(responses.contains_key("401"), "{method} {path} documents 401");
        }
        if method != "GET" {
            assert!(responses.contains_key("403"), "{method} {path} documents 403 (a read key)");
        }
        if path.contains("{id}") {
            assert!(responses.contains_key("400"), "{method} {path} documents 400 for a bad id");
            let id = op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "id").unwrap();
            assert_eq!(id["schema"]["minimum"], 1, "{method} {path}");
        }
        if method == "POST" {
            for status in ["400", "413", "415"] {
                assert!(responses.contains_key(status), "{method} {path} documents {status}");
            }
            let body = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
            let schema = doc.0.pointer(body.as_str().unwrap().trim_start_matches('#')).unwrap();
            assert_eq!(schema["additionalProperties"], false, "{method} {path}: the server refuses unknown fields");
        }
    }
    let limit = &doc.0["paths"]["/v1/incidents"]["get"]["parameters"][1]["schema"];
    assert_eq!((limit["minimum"].as_i64(), limit["maximum"].as_i64()), (Some(1), Some(1000)));
    let note = &doc.0["components"]["schemas"]["NoteBody"]["properties"];
    assert_eq!(note["text"]["maxLength"], 10_000);
    assert_eq!(note["by"]["maxLength"], 200);
    let silence = &doc.0["components"]["schemas"]["SilenceBody"]["properties"];
    assert_eq!(silence["matchers"]["maxProperties"], 20);
    assert_eq!(silence["comment"]["maxLength"], 2_000);
}

#[tokio::test]
async fn every_answer_has_a_documented_status_and_fits_its_schema() {
    let api = api_with(Keys::load(Some(KEY), Some(READ), None).unwrap()).await;
    let id = api.open_incident().await;
    let silence = r#"{"matchers":{"rule_id":"cpu-high"},"duration":"2h","comment":"resize","created_by":"kim"}"#;
    let step = r#"{"kind":"runbook_step","text":"queries: 1","data":{"count":1}}"#;
    let mut calls: Vec<(Option<&str>, Method, String, Option<&str>)> = Vec::new();
    for key in [None, Some(READ), Some(KEY)] {
        calls.extend([
            (key, Method::GET, "/healthz".into(), None),
            (key, Method::GET, "/v1/alerts".into(), None),
            (key, Method::GET, "/v1/incidents?state=open&limit=5".into(), None),
            (key, Method::GET, format!("/v1/incidents/{id}"), None),
            (key, Method::GET, "/v1/incidents/424242".into(), None),
            (key, Method::POST, format!("/v1/incidents/{id}/notes"), Some(r#"{"text":"rolled back","by":"kim"}"#)),
            (key, Method::POST, format!("/v1/incidents/{id}/events"), Some(step)),
            (key, Method::POST, "/v1/silences".into(), Some(silence)),
            (key, Method::GET, "/v1/silences".into(), None),
            (key, Method::DELETE, "/v1/silences/1".into(), None),
            (key, Method::DELETE, "/v1/silences/1".into(), None),
            (key, Method::GET, "/v1/oncall?rule=high-error-rate&at=2026-03-29T01:30:00Z".into(), None),
            (key, Method::GET, "/v1/oncall?owner=backend&severity=warning".into(), None),
            (key, Method::POST, format!("/v1/incidents/{id}/ack"), Some(r#"{"by":"kim"}"#)),
            (key, Method::POST, format!("/v1/incidents/{id}/resolve"), None),
            (key, Method::POST, format!("/v1/incidents/{id}/ack"), None),
            (key, Method::POST, "/v1/incidents/1/notes".into(), Some("{")),
        ]);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (key, method, path, body) in calls {
        let (status, _) = api.send_as(key, method.clone(), &path, body).await;
        seen.insert(status);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [200, 201, 204, 400, 401, 403, 404, 409],
        "the matrix reaches every status"
    );
}
