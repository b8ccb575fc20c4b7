//! The channel that needs no account: a readable block on stdout (its title
//! coloured by severity on a terminal), or one JSON line per page appended to
//! a file (easy to tail, grep or ship). It is the embedded default and the
//! last-resort fallback.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::{Page, PageKind, Recipient, SendError};
use crate::rules::Severity;

#[derive(Debug, Clone)]
pub struct Console {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Stdout,
    File(PathBuf, Format),
}

/// How a page is written into a file (`ALERTING_CONSOLE_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The block a person reads, as on stdout.
    Text,
    /// One JSON line per page, for machines.
    Json,
}

/// One line of the file.
#[derive(Serialize)]
struct Line<'a> {
    sent_at: chrono::DateTime<chrono::Utc>,
    page: &'a Page,
    to: &'a [Recipient],
}

impl Console {
    pub fn stdout() -> Self {
        Console { target: Target::Stdout }
    }

    /// Appends JSON lines to `path`, creating it and its folders on first use.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Console { target: Target::File(path.into(), Format::Json) }
    }

    /// The same file, written in `format`.
    pub fn with_format(self, format: Format) -> Self {
        match self.target {
            Target::File(path, _) => Console { target: Target::File(path, format) },
            Target::Stdout => self,
        }
    }

    pub async fn send(&self, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
        match &self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                let block = block(page, to, out.is_terminal());
                // One write under the lock, so concurrent pages never interleave.
                out.write_all(block.as_bytes()).map_err(|e| retryable("stdout", &e))
            }
            Target::File(path, format) => append(path, *format, page, to).await,
        }
    }
}

async fn append(path: &Path, format: Format, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
    let json = match format {
        Format::Json => {
            let mut line = serde_json::to_string(&Line { sent_at: chrono::Utc::now(), page, to })
                .map_err(|e| SendError::Permanent(format!("page as JSON: {e}")))?;
            line.push('\n');
            Some(line)
        }
        Format::Text => None,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|e| retryable(&dir.display().to_string(), &e))?;
    }
    let where_ = path.display().to_string();
    let mut file =
        tokio::fs::OpenOptions::new().create(true).append(true).open(path).await.map_err(|e| retryable(&where_, &e))?;
    // A terminal behind the path (`/dev/tty`, run.sh's `/dev/fd/3`) gets colour.
    let line = json.unwrap_or_else(|| block(page, to, std::os::fd::AsFd::as_fd(&file).is_terminal()));
    // A single append-mode write keeps each line whole even with several writers.
    file.write_all(line.as_bytes()).await.map_err(|e| retryable(&where_, &e))?;
    file.flush().await.map_err(|e| retryable(&where_, &e))
}

/// The page as a person reads it, between two rules. With `colour`, the
/// rules and the title line take the severity's colour (ANSI): red for
/// critical, yellow for a warning, green for a resolve.
fn block(page: &Page, to: &[Recipient], colour: bool) -> String {
    let names: Vec<&str> = to.iter().map(|r| r.name.as_str()).collect();
    let (on, off) = match (colour, page.kind, page.severity) {
        (false, ..) => ("", ""),
        (true, PageKind::Resolved, _) => ("\x1b[1;32m", "\x1b[0m"),
        (true, _, Severity::Critical) => ("\x1b[1;31m", "\x1b[0m"),
        (true, _, Severity::Warning) => ("\x1b[1;33m", "\x1b[0m"),
    };
    let rule = "=".repeat(72);
    let text = page.text();
    let (title, rest) = text.split_once('\n').unwrap_or((&text, ""));
    format!(
        "{on}{rule}\n{title}{off}\nTo: {}\n{rest}{on}{rule}{off}\n",
        if names.is_empty() { "(nobody)".to_string() } else { names.join(", ") },
    )
}

/// A full disk or a closed pipe may recover; the outbox decides how long to wait.
fn retryable(what: &str, e: &std::io::Error) -> SendError {
    SendError::Retryable { reason: format!("console {what}: {e}"), after: None }
}
