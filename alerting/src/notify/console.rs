//! The channel that needs no account: a readable block on stdout, or one
//! JSON line per page appended to a file (easy to tail, grep or ship). It is
//! the embedded default and the last-resort fallback.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::{Page, Recipient, SendError};

#[derive(Debug, Clone)]
pub struct Console {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Stdout,
    File(PathBuf),
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
        Console {
            target: Target::Stdout,
        }
    }

    /// Appends to `path`, creating it and its folders on first use.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Console {
            target: Target::File(path.into()),
        }
    }

    pub async fn send(&self, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
        match &self.target {
            Target::Stdout => {
                let block = block(page, to);
                // One write under the lock, so concurrent pages never interleave.
                std::io::stdout()
                    .lock()
                    .write_all(block.as_bytes())
                    .map_err(|e| retryable("stdout", &e))
            }
            Target::File(path) => append(path, page, to).await,
        }
    }
}

async fn append(path: &Path, page: &Page, to: &[Recipient]) -> Result<(), SendError> {
    let mut line = serde_json::to_string(&Line {
        sent_at: chrono::Utc::now(),
        page,
        to,
    })
    .map_err(|e| SendError::Permanent(format!("page as JSON: {e}")))?;
    line.push('\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| retryable(&dir.display().to_string(), &e))?;
    }
    let where_ = path.display().to_string();
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| retryable(&where_, &e))?;
    // A single append-mode write keeps each line whole even with several writers.
    file.write_all(line.as_bytes())
        .await
        .map_err(|e| retryable(&where_, &e))?;
    file.flush().await.map_err(|e| retryable(&where_, &e))
}

fn block(page: &Page, to: &[Recipient]) -> String {
    let names: Vec<&str> = to.iter().map(|r| r.name.as_str()).collect();
    let rule = "=".repeat(72);
    format!(
        "{rule}\nTo: {}\n{}{rule}\n",
        if names.is_empty() {
            "(nobody)".to_string()
        } else {
            names.join(", ")
        },
        page.text()
    )
}

/// A full disk or a closed pipe may recover; the outbox decides how long to wait.
fn retryable(what: &str, e: &std::io::Error) -> SendError {
    SendError::Retryable {
        reason: format!("console {what}: {e}"),
        after: None,
    }
}
