//! The alerting HTTP API over a real socket: every bad request is a clear
//! 4xx with a JSON error body and changes nothing; the happy paths work.

use std::{sync::Arc, time::Duration};

use alerting::{
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

struct Api {
    base: String,
    http: reqwest::Client,
    state: Arc<AppState>,
    _dir: testkit::TempDir,
}

async fn api(api_key: Option<&str>) -> Api {
    let dir = testkit::TempDir::new("alerting-api");
    let store = incidents::Store::connect(&format!("sqlite://{}", dir.join("a.db").display())).await.unwrap();
    let set = alerting::rules::shipped();
    let channels = Channels { slack: None, email: None, console: Notifier::Console(Console::file(dir.join("pages.jsonl"))) };
    let service = Service::new(store, Roster::example(), set.rules.clone(), channels, Config::default(), Metrics::new());
    let state = Arc::new(AppState {
        service,
        engine: std::sync::Mutex::new(Engine::new(set.rules)),
        wake: tokio::sync::Notify::new(),
        api_key: api_key.map(str::to_owned),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api { base, http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(), state, _dir: dir }
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_owned());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
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
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{"a":"b"},"ends_at":"2001-01-01T00:00:00Z","comment":"c"}"#), 400),
        (Method::POST, "/v1/silences".into(), Some(r#"{"matchers":{"a":"b"},"comment":"c"}"#), 400),
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
    let (_, shown) = api.send(Method::GET, &format!("/v1/incidents/{id}"), None).await;
    assert_eq!(shown["incident"]["state"], "firing", "nothing changed");
    assert!(!shown["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "acked" || e["kind"] == "note"));
}

#[tokio::test]
async fn notes_events_silences_ack_and_resolve_work_and_resolve_twice_is_harmless() {
    let api = api(None).await;
    let id = api.open_incident().await;
    let (status, _) = api.send(Method::POST, &format!("/v1/incidents/{id}/notes"), Some(r#"{"text":"rolled back","by":"kim"}"#)).await;
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
        .send(Method::POST, "/v1/silences", Some(r#"{"matchers":{"rule_id":"cpu-high"},"duration":"2h","kind":"maintenance","comment":"resize"}"#))
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
async fn with_an_api_key_changes_need_it_and_reads_do_not() {
    let api = api(Some("s3cret")).await;
    let id = api.open_incident().await;
    let (status, body) = api.send(Method::POST, &format!("/v1/incidents/{id}/ack"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, _) = api.send(Method::GET, &format!("/v1/incidents/{id}"), None).await;
    assert_eq!(status, 200);
    let r = api.http.post(format!("{}/v1/incidents/{id}/ack", api.base)).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
