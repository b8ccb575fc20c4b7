//! Email over SMTP (lettre, rustls): one multipart/alternative message to all
//! recipients, with the same content as text and as HTML so every client
//! shows the runbook link and the ack command.

use std::time::Duration;

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{self, authentication::Credentials},
};
use serde::Deserialize;
use tracing::Instrument as _;

use super::{ConfigError, Page, Recipient, SendError};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain text: only for a relay on loopback or a trusted network.
    None,
    /// Plain connection upgraded with STARTTLS (usually port 587); refuses
    /// to send if the server cannot upgrade.
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

#[derive(Clone, Deserialize)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    /// `Alerting <alerting@example.com>` or a bare address.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Hand-written so the password can never reach a log.
impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One attempt should not hold a page for lettre's default minute.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email").field("host", &self.host).field("from", &self.from).finish_non_exhaustive()
    }
}

impl Email {
    /// Must run inside a Tokio runtime: lettre's connection pool starts a
    /// task that closes idle connections.
    pub fn new(config: EmailConfig) -> Result<Self, ConfigError> {
        Self::with_timeout(config, DEFAULT_TIMEOUT)
    }

    /// As [`Email::new`], with `timeout` for each SMTP command.
    pub fn with_timeout(config: EmailConfig, timeout: Duration) -> Result<Self, ConfigError> {
        let from: Mailbox =
            config.from.parse().map_err(|e| ConfigError(format!("email sender {:?}: {e}", config.from)))?;
        let tls_error = |e: smtp::Error| ConfigError(format!("SMTP TLS settings for {}: {e}", config.host));
        let builder = match config.tls {
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(tls_error)?,
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(tls_error)?,
        };
        let mut builder = builder.port(config.port).timeout(Some(timeout));
        match (config.username, config.password) {
            (Some(user), Some(password)) => builder = builder.credentials(Credentials::new(user, password)),
            (None, None) => {}
            _ => return Err(ConfigError("SMTP username and password go together".into())),
        }
        Ok(Email { transport: builder.build(), from, host: config.host })
    }

    /// The message `send` would deliver; recipients without an email
    /// address are skipped, and none at all is a permanent failure.
    pub fn message(&self, page: &Page, to: &[Recipient]) -> Result<Message, SendError> {
        let mut builder = Message::builder().from(self.from.clone()).subject(page.title());
        let mut any = false;
        for recipient in to {
            let Some(address) = recipient.email.as_deref() else {
                continue;
            };
            let address: Address = address
                .trim()
                .parse()
                .map_err(|e| SendError::Permanent(format!("email address of {}: {e}", recipient.name)))?;
            builder = builder.to(Mailbox::new(Some(recipient.name.clone()), address));
            any = true;
        }
        if !any {
            return Err(SendError::Permanent("no recipient has an email address".into()));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(page.text(), html(page)))
            .map_err(|e| SendError::Permanent(format!("building the email: {e}")))
    }

    /// One SMTP transaction. 4xx replies and connection trouble are
    /// retryable; 5xx replies and messages lettre refuses are not.
    pub async fn send(&self, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
        let message = self.message(page, to)?;
        let span = tracing::info_span!(
            "smtp send",
            otel.name = "smtp send",
            otel.kind = "client",
            server.address = %self.host,
            error.type = tracing::field::Empty,
        );
        let sent = self.transport.send(message).instrument(span.clone()).await;
        if sent.is_err() {
            span.record("error.type", "smtp_error");
        }
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() || e.is_client() => {
                Err(SendError::Permanent(format!("SMTP {}: {e}", self.host)))
            }
            Err(e) => Err(SendError::Retryable { reason: format!("SMTP {}: {e}", self.host), after: None }),
        }
    }
}

/// The HTML twin of [`Page::text`]. Every interpolated value is escaped, and
/// only http(s) URLs become links (a `javascript:` runbook URL stays text).
fn html(page: &Page) -> String {
    let row = |name: &str, value: &str| format!("<tr><th align=\"left\">{name}</th><td>{value}</td></tr>\n");
    let link = |label: &str, url: &str| {
        if url.starts_with("https://") || url.starts_with("http://") {
            format!("<a href=\"{}\">{label}</a>", escape(url))
        } else {
            format!("{label}: {}", escape(url))
        }
    };
    let mut rows = row("Value", &escape(&page.value_vs_threshold()));
    rows += &row("Since", &escape(&page.since_rfc3339()));
    if let Some(lasted) = page.lasted_text() {
        rows += &row("Lasted", &escape(&lasted));
    }
    rows += &row("Severity", page.severity.as_str());
    rows += &row("Incident", &format!("#{}", page.incident_id));
    if !page.labels.is_empty() {
        rows += &row("Labels", &escape(&page.labels_text()));
    }
    let mut links = vec![link("Runbook", &page.runbook_url)];
    if let Some(dashboard) = &page.dashboard_url {
        links.push(link("Dashboard", dashboard));
    }
    let mut commands = String::new();
    if page.wants_ack() {
        commands += &format!("Acknowledge: <code>{}</code><br>\n", escape(&page.ack_command));
    }
    commands += &format!("Run the runbook: <code>{}</code>", escape(&page.runbook_command));
    if !page.also.is_empty() {
        let items: Vec<String> = page.also.iter().map(|g| format!("<li>{}</li>", escape(&g.line()))).collect();
        commands += &format!("</p>\n<p>Also firing ({} more):</p>\n<ul>{}</ul>\n<p>", page.also.len(), items.join(""));
    }
    format!(
        "<!doctype html>\n<html><body>\n<h2>{title}</h2>\n<p>{summary}</p>\n<table>\n{rows}</table>\n<p>{links}</p>\n<p>{commands}</p>\n</body></html>\n",
        title = escape(&page.title()),
        summary = escape(&page.summary),
        links = links.join(" · "),
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
