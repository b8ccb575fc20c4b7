//! Recording a run on an incident's timeline through the alerting API:
//! `POST /v1/incidents/{id}/events` with `kind: runbook_step`, one event per
//! step, so whoever picks the incident up sees what was checked and done.

use std::time::Duration;

use reqwest_tls::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::target::{http_client, left_origin, plain, redact_url};

/// The alerting API caps event data at 256 KiB; stay well below.
const MAX_DATA_BYTES: usize = 200 * 1024;
const MAX_TEXT_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("incident {incident} does not exist at {url} (`alerting incidents list` shows the open ones)")]
    NotFound { incident: i64, url: String },
    #[error("cannot reach the alerting service at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the alerting service at {url} answered {status}: {message}")]
    Refused { url: String, status: StatusCode, message: String },
}

pub struct Timeline {
    client: reqwest_tls::Client,
    base: String,
    /// `base` as it may be printed.
    shown: String,
    api_key: Option<String>,
    pub incident: i64,
}

impl Timeline {
    /// Checks the incident exists, before any step runs.
    pub async fn open(url: &str, api_key: Option<String>, incident: i64) -> Result<Self, TimelineError> {
        let shown = redact_url(url);
        let client = http_client(Duration::from_secs(5), Duration::from_secs(15))
            .map_err(|message| TimelineError::Unreachable { url: shown.clone(), message })?;
        let timeline = Self { client, base: url.trim_end_matches('/').to_string(), shown, api_key, incident };
        let path = format!("/v1/incidents/{incident}");
        let response = timeline.request(Method::GET, &path).send().await.map_err(|e| timeline.unreachable(e))?;
        match response.status() {
            s if s.is_success() => Ok(timeline),
            StatusCode::NOT_FOUND => Err(TimelineError::NotFound { incident, url: timeline.shown.clone() }),
            status => Err(timeline.refused(status, response).await),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        request
    }

    fn unreachable(&self, e: reqwest_tls::Error) -> TimelineError {
        TimelineError::Unreachable { url: self.shown.clone(), message: plain(e) }
    }

    async fn refused(&self, status: StatusCode, response: Response) -> TimelineError {
        if let Some(to) = left_origin(&response) {
            let message =
                format!("a redirect to another origin, {to}, which is not followed so the API key stays here");
            return TimelineError::Refused { url: self.shown.clone(), status, message };
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"].as_str().unwrap_or("no message").to_string();
        TimelineError::Refused { url: self.shown.clone(), status, message }
    }

    /// Records one event; `text` is the one-line summary, `data` the step's
    /// output (already redacted by the caller).
    pub async fn record(&self, text: &str, data: Value) -> Result<(), TimelineError> {
        let mut text: String = text.chars().take(MAX_TEXT_CHARS).collect();
        if text.trim().is_empty() {
            text = "runbook step".into();
        }
        let data = if data.to_string().len() > MAX_DATA_BYTES {
            json!({ "truncated": true, "note": "output too large for the timeline; rerun with --json to see it", "trace_id": data["trace_id"] })
        } else {
            data
        };
        let body = json!({ "kind": "runbook_step", "text": text, "by": "runbook", "data": data });
        let path = format!("/v1/incidents/{}/events", self.incident);
        let response = self.request(Method::POST, &path).json(&body).send().await.map_err(|e| self.unreachable(e))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(TimelineError::NotFound { incident: self.incident, url: self.shown.clone() }),
            status => Err(self.refused(status, response).await),
        }
    }
}
