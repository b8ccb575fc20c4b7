//! Slack incoming webhooks with a Block Kit message.
//!
//! Slack rejects a whole message (`400 invalid_blocks`) when one block breaks
//! a limit, and a rejected page is a lost page, so every limit is enforced
//! here while building, truncating with "…" rather than failing.
//!
//! The client speaks https (rustls, webpki roots) for `https://hooks.slack.com`
//! and plain http for a relay or the tests' local receiver.

use std::{collections::HashSet, time::Duration};

use reqwest_tls::{StatusCode, Url, header::RETRY_AFTER};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{ConfigError, Page, Recipient, SendError};

/// Block Kit limits, in characters, from Slack's reference.
const HEADER_TEXT: usize = 150;
const SECTION_TEXT: usize = 3000;
const FIELD_TEXT: usize = 2000;
const MAX_FIELDS: usize = 10;
const MAX_BLOCKS: usize = 50;
const MAX_ACTIONS: usize = 25;
const MAX_CONTEXT_ELEMENTS: usize = 10;
const BUTTON_TEXT: usize = 75;
const BUTTON_URL: usize = 3000;
/// Slack accepts far more for the fallback, but it only feeds the push
/// notification, where a short line reads better.
const FALLBACK_TEXT: usize = 3000;

pub struct Slack {
    /// A webhook that cannot work is kept as its reason, so every send is
    /// a permanent failure (the outbox then goes to the fallback channel).
    target: Result<(Url, reqwest_tls::Client), String>,
}

/// The webhook URL is a credential (its path is the token), so it is never
/// printed.
impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.target.as_ref().ok().and_then(|(url, _)| url.host_str());
        f.debug_struct("Slack").field("host", &host).finish_non_exhaustive()
    }
}

impl Slack {
    /// `timeout` bounds one whole attempt (connect, request, response).
    /// Never fails, so a bad webhook cannot stop the service from starting;
    /// use [`Slack::try_new`] to refuse bad settings up front.
    pub fn new(webhook_url: &str, timeout: Duration) -> Self {
        Slack { target: target(webhook_url, timeout) }
    }

    pub fn try_new(webhook_url: &str, timeout: Duration) -> Result<Self, ConfigError> {
        let slack = Self::new(webhook_url, timeout);
        match &slack.target {
            Ok(_) => Ok(slack),
            Err(reason) => Err(ConfigError(reason.clone())),
        }
    }

    /// One POST; 429 and 5xx (and no answer at all) are worth retrying, any
    /// other 4xx means the webhook or payload is wrong for good.
    pub async fn send(&self, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
        let (url, client) = self.target.as_ref().map_err(|e| SendError::Permanent(e.clone()))?;
        // A client span under the delivery attempt's; the path holds the
        // webhook's token, so only the host is named.
        let span = tracing::info_span!(
            "slack webhook",
            otel.name = "POST",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = url.host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let sent = client.post(url.clone()).json(&payload(page, to)).send().instrument(span.clone()).await;
        match &sent {
            Ok(r) => {
                span.record("http.response.status_code", r.status().as_u16());
                if !r.status().is_success() {
                    span.record("error.type", r.status().as_str());
                }
            }
            Err(_) => {
                span.record("error.type", "no_answer");
            }
        }
        let response = sent
            // The URL holds the webhook token: keep it out of the reason.
            .map_err(|e| SendError::Retryable { reason: format!("Slack: {}", e.without_url()), after: None })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let reason = format!("Slack answered {status}: {}", truncate(body.trim(), 200));
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => SendError::Retryable { reason, after },
            s if s.is_server_error() => SendError::Retryable { reason, after: None },
            _ => SendError::Permanent(reason),
        })
    }
}

fn target(webhook_url: &str, timeout: Duration) -> Result<(Url, reqwest_tls::Client), String> {
    let url = Url::parse(webhook_url).map_err(|e| format!("Slack webhook URL does not parse: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("Slack webhook URL must be http(s)".into());
    }
    let client = reqwest_tls::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client for Slack: {e}"))?;
    Ok((url, client))
}

/// The webhook body: a `text` fallback for notifications plus the blocks.
pub fn payload(page: &Page, to: &[Recipient]) -> Value {
    let mentions = mentions(to);
    let mut blocks =
        vec![json!({ "type": "header", "text": plain(&page.title(), HEADER_TEXT) }), section(page, &mentions)];
    if !page.labels.is_empty() {
        blocks.push(labels_context(page));
    }
    let (buttons, unlinked) = buttons(page);
    if !buttons.is_empty() {
        blocks.push(json!({ "type": "actions", "elements": buttons }));
    }
    blocks.push(commands_section(page, &unlinked));
    if !page.also.is_empty() {
        // One section for the rest of the group, cut to Slack's section limit.
        let lines: Vec<String> = page.also.iter().map(|g| format!("• {}", escape(&g.line()))).collect();
        let text = format!("*Also firing ({} more):*\n{}", page.also.len(), lines.join("\n"));
        blocks.push(json!({ "type": "section", "text": mrkdwn(&text, SECTION_TEXT) }));
    }
    blocks.truncate(MAX_BLOCKS);

    // Mentions here too: the fallback is what the push notification shows.
    let fallback = format!("{} {}: {}", mentions, escape(&page.title()), escape(&page.summary));
    json!({
        "text": truncate(fallback.trim(), FALLBACK_TEXT),
        "blocks": blocks,
    })
}

fn section(page: &Page, mentions: &str) -> Value {
    let since = format!("<!date^{}^{{date_short_pretty}} {{time}}|{}>", page.since.timestamp(), page.since_rfc3339());
    let on_call = if mentions.is_empty() { "nobody".to_string() } else { mentions.to_string() };
    let mut fields = vec![format!("*Value*\n{}", escape(&page.value_vs_threshold())), format!("*Since*\n{since}")];
    if let Some(lasted) = page.lasted_text() {
        fields.push(format!("*Lasted*\n{lasted}"));
    }
    fields.extend([
        format!("*Severity*\n{}", page.severity.as_str()),
        format!("*Incident*\n#{}", page.incident_id),
        format!("*On call*\n{on_call}"),
    ]);
    let fields: Vec<Value> = fields.iter().take(MAX_FIELDS).map(|f| mrkdwn(f, FIELD_TEXT)).collect();
    let summary = if page.summary.trim().is_empty() { page.title() } else { page.summary.clone() };
    json!({ "type": "section", "text": mrkdwn(&escape(&summary), SECTION_TEXT), "fields": fields })
}

fn labels_context(page: &Page) -> Value {
    let mut elements: Vec<Value> = page
        .labels
        .iter()
        .take(MAX_CONTEXT_ELEMENTS)
        .map(|(k, v)| mrkdwn(&format!("*{}*: {}", escape(k), escape(v)), SECTION_TEXT))
        .collect();
    if page.labels.len() > MAX_CONTEXT_ELEMENTS {
        let rest = page.labels.len() - (MAX_CONTEXT_ELEMENTS - 1);
        elements[MAX_CONTEXT_ELEMENTS - 1] = mrkdwn(&format!("…and {rest} more labels"), SECTION_TEXT);
    }
    json!({ "type": "context", "elements": elements })
}

/// Link buttons for the URLs Slack will accept; the others are returned so
/// they still appear as text (a relative or oversized URL would make Slack
/// reject the whole message).
fn buttons(page: &Page) -> (Vec<Value>, Vec<(&'static str, String)>) {
    let links =
        [("Runbook", "runbook", Some(&page.runbook_url)), ("Dashboard", "dashboard", page.dashboard_url.as_ref())];
    let mut buttons = Vec::new();
    let mut unlinked = Vec::new();
    let mut action_ids = HashSet::new();
    for (label, action_id, url) in links {
        let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
            continue;
        };
        if is_web_url(url) && url.chars().count() <= BUTTON_URL && action_ids.insert(action_id) {
            let mut button = json!({
                "type": "button",
                "text": plain(label, BUTTON_TEXT),
                "action_id": action_id,
                "url": url,
            });
            if action_id == "runbook" {
                button["style"] = json!("primary");
            }
            buttons.push(button);
        } else {
            unlinked.push((label, url.clone()));
        }
    }
    buttons.truncate(MAX_ACTIONS);
    (buttons, unlinked)
}

fn commands_section(page: &Page, unlinked: &[(&str, String)]) -> Value {
    let mut lines = Vec::new();
    if page.wants_ack() {
        lines.push(format!("*Acknowledge:* `{}`", escape(&page.ack_command)));
    }
    lines.push(format!("*Run the runbook:* `{}`", escape(&page.runbook_command)));
    for (label, url) in unlinked {
        lines.push(format!("*{label}:* {}", escape(url)));
    }
    json!({ "type": "section", "text": mrkdwn(&lines.join("\n"), SECTION_TEXT) })
}

fn mentions(to: &[Recipient]) -> String {
    let names: Vec<String> = to
        .iter()
        .map(|r| match r.slack.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => format!("<@{id}>"),
            None => escape(&r.name),
        })
        .collect();
    names.join(" ")
}

fn is_web_url(url: &str) -> bool {
    Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

fn plain(text: &str, max: usize) -> Value {
    json!({ "type": "plain_text", "text": truncate(text, max), "emoji": true })
}

fn mrkdwn(text: &str, max: usize) -> Value {
    json!({ "type": "mrkdwn", "text": truncate(text, max) })
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters; user text
/// (summaries, labels) must not turn into mentions or links.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// At most `max` characters, ending in "…" when cut. A cut never splits an
/// escape such as `&amp;`, which Slack would show half-decoded.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
        && cut.len() - amp < 5
    {
        cut.truncate(amp);
    }
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_counts_characters_and_keeps_escapes_whole() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ééééé", 3).chars().count(), 3);
        assert_eq!(truncate("ab&amp;cd", 5), "ab…");
    }
}
