//! A local stand-in for a Slack incoming webhook (Slack cannot run here). It
//! checks the wire format Slack checks — JSON body, Block Kit block types,
//! text object kinds and the size limits — and answers like Slack: `ok`,
//! `400 invalid_blocks`, or whatever the test scripted (429, 500, ...).
#![allow(dead_code)]

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use tokio::sync::Notify;

/// What the receiver answers to the next POST; the script is consumed in
/// order, then every POST gets [`Reply::Ok`] (if its payload is valid).
#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    /// 429 with `Retry-After: retry_after_secs`, as Slack rate-limits.
    TooMany {
        retry_after_secs: u64,
    },
    ServerError,
    /// Any other status, e.g. 404 `no_service` for a revoked webhook.
    Status(u16),
    /// Never answers, as a Slack outage that accepts connections does; the
    /// request stays open until the client gives up.
    Hang,
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    delivered: Mutex<Vec<Value>>,
    attempts: Mutex<usize>,
    /// Requests received and not answered yet.
    hanging: Mutex<usize>,
    violations: Mutex<Vec<String>>,
    changed: Notify,
}

pub struct SlackReceiver {
    /// Webhook URL to give the notifier.
    pub url: String,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SlackReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SlackReceiver {
    pub async fn start(script: Vec<Reply>) -> Self {
        let state = Arc::new(State { script: Mutex::new(script.into()), ..State::default() });
        let app = Router::new().fallback({
            let state = state.clone();
            move |method: Method, headers: HeaderMap, body: Bytes| async move {
                // The script is read once per POST, here, so concurrent
                // requests each take their own reply.
                let scripted =
                    (method == Method::POST).then(|| state.script.lock().unwrap().pop_front().unwrap_or(Reply::Ok));
                if matches!(scripted, Some(Reply::Hang)) {
                    return hang(&state).await;
                }
                receive(&state, method, &headers, &body, scripted.unwrap_or(Reply::Ok))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackReceiver { url: format!("http://{addr}/services/T0000/B0000/secret"), state, server }
    }

    /// Payloads answered 200, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.state.delivered.lock().unwrap().clone()
    }

    /// Every POST, whatever the answer.
    pub fn attempts(&self) -> usize {
        *self.state.attempts.lock().unwrap()
    }

    /// Requests it is holding open without an answer ([`Reply::Hang`]).
    pub fn hanging(&self) -> usize {
        *self.state.hanging.lock().unwrap()
    }

    /// What Slack would have rejected, one line per problem.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Waits until `n` payloads were delivered; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        self.try_wait_for(n, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`SlackReceiver::wait_for`], saying what it saw instead of panicking
    /// (for a caller that adds its own evidence).
    pub async fn try_wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Value>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let delivered = self.delivered();
            if delivered.len() >= n {
                return Ok(delivered);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(format!(
                    "Slack receiver: {} of {n} payloads delivered after {timeout:?} ({} attempts, violations: {:?})",
                    delivered.len(),
                    self.attempts(),
                    self.violations()
                ));
            }
        }
    }
}

/// Counts the attempt, then waits forever; the count of hanging requests
/// drops when the client closes the connection and the handler is dropped.
async fn hang(state: &Arc<State>) -> Response {
    struct Open(Arc<State>);
    impl Drop for Open {
        fn drop(&mut self) {
            *self.0.hanging.lock().unwrap() -= 1;
        }
    }
    *state.attempts.lock().unwrap() += 1;
    *state.hanging.lock().unwrap() += 1;
    let _open = Open(state.clone());
    state.changed.notify_waiters();
    std::future::pending::<()>().await;
    StatusCode::OK.into_response()
}

fn receive(state: &State, method: Method, headers: &HeaderMap, body: &[u8], scripted: Reply) -> Response {
    let response = answer(state, method, headers, body, scripted);
    state.changed.notify_waiters();
    response
}

fn answer(state: &State, method: Method, headers: &HeaderMap, body: &[u8], scripted: Reply) -> Response {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "invalid_method").into_response();
    }
    *state.attempts.lock().unwrap() += 1;
    let checked = validate(headers, body);
    if let Err(problems) = &checked {
        state.violations.lock().unwrap().extend(problems.iter().cloned());
    }
    match (scripted, checked) {
        (Reply::TooMany { retry_after_secs }, _) => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry_after_secs.to_string())], "rate_limited")
                .into_response()
        }
        (Reply::ServerError, _) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error").into_response(),
        (Reply::Status(code), _) => {
            let status = StatusCode::from_u16(code).expect("scripted status");
            (status, status.canonical_reason().unwrap_or("error")).into_response()
        }
        // Taken by the handler before it gets here; answered as an outage.
        (Reply::Hang, _) => (StatusCode::SERVICE_UNAVAILABLE, "hang").into_response(),
        (Reply::Ok, Err(_)) => (StatusCode::BAD_REQUEST, "invalid_blocks").into_response(),
        (Reply::Ok, Ok(payload)) => {
            state.delivered.lock().unwrap().push(payload);
            (StatusCode::OK, "ok").into_response()
        }
    }
}

/// Slack's checks on an incoming-webhook body; every problem is reported.
pub fn validate(headers: &HeaderMap, body: &[u8]) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/json") {
        problems.push(format!("content-type is {content_type:?}, not application/json"));
    }
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("body is not JSON: {e}"));
            return Err(problems);
        }
    };
    let mut v = Validator { problems, action_ids: HashSet::new(), block_ids: HashSet::new() };
    v.payload(&payload);
    if v.problems.is_empty() { Ok(payload) } else { Err(v.problems) }
}

struct Validator {
    problems: Vec<String>,
    action_ids: HashSet<String>,
    block_ids: HashSet<String>,
}

impl Validator {
    fn fail(&mut self, at: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{at}: {what}"));
    }

    fn payload(&mut self, payload: &Value) {
        let Some(obj) = payload.as_object() else {
            return self.fail("payload", "not a JSON object");
        };
        match obj.get("text").and_then(Value::as_str) {
            Some(t) if !t.trim().is_empty() => self.max_len("text", t, 40_000),
            _ => self.fail("text", "missing or empty (Slack needs it for notifications)"),
        }
        let Some(blocks) = obj.get("blocks").and_then(Value::as_array) else {
            return self.fail("blocks", "missing or not an array");
        };
        if blocks.is_empty() || blocks.len() > 50 {
            self.fail("blocks", format!("{} blocks, must be 1..=50", blocks.len()));
        }
        for (i, block) in blocks.iter().enumerate() {
            self.block(&format!("blocks[{i}]"), block);
        }
    }

    fn block(&mut self, at: &str, block: &Value) {
        if let Some(id) = block.get("block_id") {
            match id.as_str() {
                Some(id) if id.chars().count() <= 255 && self.block_ids.insert(id.to_string()) => {}
                _ => self.fail(at, "block_id not a unique string of ≤255 chars"),
            }
        }
        match block.get("type").and_then(Value::as_str) {
            Some("header") => match block.get("text") {
                Some(text) => self.text_object(&format!("{at}.text"), text, 150, true),
                None => self.fail(at, "header without text"),
            },
            Some("section") => {
                let text = block.get("text");
                let fields = block.get("fields");
                if text.is_none() && fields.is_none() {
                    self.fail(at, "section needs text or fields");
                }
                if let Some(text) = text {
                    self.text_object(&format!("{at}.text"), text, 3000, false);
                }
                if let Some(fields) = fields {
                    let Some(fields) = fields.as_array() else {
                        return self.fail(at, "fields is not an array");
                    };
                    if fields.is_empty() || fields.len() > 10 {
                        self.fail(at, format!("{} fields, must be 1..=10", fields.len()));
                    }
                    for (i, field) in fields.iter().enumerate() {
                        self.text_object(&format!("{at}.fields[{i}]"), field, 2000, false);
                    }
                }
                if block.get("accessory").is_some() {
                    self.fail(at, "accessory is not checked by this receiver");
                }
            }
            Some("context") => {
                let Some(elements) = block.get("elements").and_then(Value::as_array) else {
                    return self.fail(at, "context without elements");
                };
                if elements.is_empty() || elements.len() > 10 {
                    self.fail(at, format!("{} context elements, must be 1..=10", elements.len()));
                }
                for (i, element) in elements.iter().enumerate() {
                    self.text_object(&format!("{at}.elements[{i}]"), element, 3000, false);
                }
            }
            Some("actions") => {
                let Some(elements) = block.get("elements").and_then(Value::as_array) else {
                    return self.fail(at, "actions without elements");
                };
                if elements.is_empty() || elements.len() > 25 {
                    self.fail(at, format!("{} action elements, must be 1..=25", elements.len()));
                }
                for (i, element) in elements.iter().enumerate() {
                    self.button(&format!("{at}.elements[{i}]"), element);
                }
            }
            Some("divider") => {}
            other => self.fail(at, format!("unknown block type {other:?}")),
        }
    }

    fn button(&mut self, at: &str, button: &Value) {
        if button.get("type").and_then(Value::as_str) != Some("button") {
            return self.fail(at, "only buttons are checked in actions");
        }
        match button.get("text") {
            Some(text) => self.text_object(&format!("{at}.text"), text, 75, true),
            None => self.fail(at, "button without text"),
        }
        match button.get("action_id").and_then(Value::as_str) {
            Some(id) if id.chars().count() <= 255 => {
                if !self.action_ids.insert(id.to_string()) {
                    self.fail(at, format!("duplicate action_id {id:?}"));
                }
            }
            _ => self.fail(at, "action_id missing or longer than 255"),
        }
        if let Some(url) = button.get("url") {
            match url.as_str() {
                Some(u) if u.chars().count() > 3000 => self.fail(at, "url longer than 3000"),
                Some(u) if is_absolute_web_url(u) => {}
                _ => self.fail(at, format!("url {url} is not an absolute http(s) URL")),
            }
        }
        if let Some(style) = button.get("style")
            && !matches!(style.as_str(), Some("primary" | "danger"))
        {
            self.fail(at, format!("style {style} is not primary or danger"));
        }
    }

    fn text_object(&mut self, at: &str, object: &Value, max: usize, plain_only: bool) {
        let kind = object.get("type").and_then(Value::as_str);
        match kind {
            Some("plain_text") => {}
            Some("mrkdwn") if !plain_only => {
                if object.get("emoji").is_some() {
                    self.fail(at, "emoji is only allowed on plain_text");
                }
            }
            Some("mrkdwn") => self.fail(at, "must be plain_text, not mrkdwn"),
            other => self.fail(at, format!("text object type {other:?}")),
        }
        match object.get("text").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => self.max_len(at, t, max),
            _ => self.fail(at, "text missing or empty"),
        }
    }

    fn max_len(&mut self, at: &str, text: &str, max: usize) {
        let n = text.chars().count();
        if n > max {
            self.fail(at, format!("{n} chars, limit {max}"));
        }
    }
}

fn is_absolute_web_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !url.chars().any(char::is_whitespace))
}
