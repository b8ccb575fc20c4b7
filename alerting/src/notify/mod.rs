//! Channels that carry a [`Page`] to people: Slack incoming webhooks, email
//! over SMTP, and the console (stdout or a JSON-lines file, the default that
//! needs no account).
//!
//! A `send` makes exactly one attempt. Retries, backoff and the fallback
//! channel belong to the durable outbox that calls it, so a crash between
//! attempts loses nothing; a channel only says whether trying again can help.

pub mod console;
pub mod email;
pub mod page;
pub mod slack;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use page::{Grouped, Page, PageKind, format_value};

/// Someone on call, with the handles each channel needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub name: String,
    /// Slack member id (`U024BE7LH`), mentioned as `<@U024BE7LH>`.
    pub slack: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Slack,
    Email,
    Console,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Slack, Channel::Email, Channel::Console];

    /// The channel an outbox row or a setting names; `None` for any other
    /// word (never a default channel).
    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Slack => "slack",
            Channel::Email => "email",
            Channel::Console => "console",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt failed, which is all the outbox needs to decide whether
/// to try again. Reasons never carry secrets (webhook tokens, passwords).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The same message may go through later (rate limit, outage, timeout).
    /// `after` is the wait the remote side asked for, if any.
    #[error("temporary delivery failure: {reason}")]
    Retryable { reason: String, after: Option<Duration> },
    /// Resending the same message cannot succeed (revoked webhook, rejected
    /// address): go to the fallback channel instead.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// A channel whose settings cannot work (bad URL, bad address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid notifier settings: {0}")]
pub struct ConfigError(pub String);

/// Every channel, dispatched by match: the set is closed, and this keeps
/// `send` a plain `async fn` without boxing.
#[derive(Debug)]
pub enum Notifier {
    Slack(slack::Slack),
    Email(email::Email),
    Console(console::Console),
}

impl Notifier {
    pub fn channel(&self) -> Channel {
        match self {
            Notifier::Slack(_) => Channel::Slack,
            Notifier::Email(_) => Channel::Email,
            Notifier::Console(_) => Channel::Console,
        }
    }

    /// One attempt to deliver one message naming every recipient in `to`.
    pub async fn send(&self, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
        let result = match self {
            Notifier::Slack(n) => n.send(page, to).await,
            Notifier::Email(n) => n.send(page, to).await,
            Notifier::Console(n) => n.send(page, to).await,
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "page not delivered");
        }
        result
    }
}
