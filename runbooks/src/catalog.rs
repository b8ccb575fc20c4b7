//! Where runbooks come from: the copies built into the binary (so
//! `runbook` works from any directory), or a directory given with `--dir`
//! / `RUNBOOKS_DIR` (to try an edit without rebuilding).

use std::path::{Path, PathBuf};

use crate::book::{self, BookError, Runbook};

/// Every runbook, compiled in. The coverage test checks this list against
/// the `*.md` files beside it, so a new runbook cannot be left out.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("alerting-no-evaluator", include_str!("../alerting-no-evaluator.md")),
    ("cpu-high", include_str!("../cpu-high.md")),
    ("db-pool-saturation", include_str!("../db-pool-saturation.md")),
    ("db-replica-lag", include_str!("../db-replica-lag.md")),
    ("error-budget-burn", include_str!("../error-budget-burn.md")),
    ("high-error-rate", include_str!("../high-error-rate.md")),
    ("high-p95-latency", include_str!("../high-p95-latency.md")),
    ("hold-expiry-backlog", include_str!("../hold-expiry-backlog.md")),
    ("memory-high", include_str!("../memory-high.md")),
    ("payment-failures", include_str!("../payment-failures.md")),
    ("queue-admission-stall", include_str!("../queue-admission-stall.md")),
    ("redis-memory-high", include_str!("../redis-memory-high.md")),
    ("telemetry-export-dropping", include_str!("../telemetry-export-dropping.md")),
    ("telemetry-pipeline-down", include_str!("../telemetry-pipeline-down.md")),
];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} has no runbooks (*.md besides README.md)")]
    Empty { dir: String },
    #[error("unknown runbook `{id}`; `runbook list` shows the {count} there are")]
    Unknown { id: String, count: usize },
    #[error(transparent)]
    Invalid(#[from] BookError),
}

/// Runbook texts by id, parsed on demand: one broken file fails `list` and
/// itself, not a run of another runbook in the middle of an incident.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// (id, text, origin), sorted by id.
    entries: Vec<(String, String, String)>,
}

impl Catalog {
    pub fn embedded() -> Self {
        let entries =
            EMBEDDED.iter().map(|(id, text)| (id.to_string(), text.to_string(), format!("runbooks/{id}.md"))).collect();
        Self { entries }
    }

    /// Every `*.md` in `dir` except `README.md`; the id is the file stem.
    pub fn from_dir(dir: &Path) -> Result<Self, CatalogError> {
        let read_err = |path: &Path, source| CatalogError::Read { path: path.display().to_string(), source };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let path: PathBuf = entry.map_err(|e| read_err(dir, e))?.path();
            let is_runbook =
                path.extension().is_some_and(|e| e == "md") && path.file_name().is_some_and(|n| n != "README.md");
            if !is_runbook {
                continue;
            }
            let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            entries.push((id, text, path.display().to_string()));
        }
        if entries.is_empty() {
            return Err(CatalogError::Empty { dir: dir.display().to_string() });
        }
        entries.sort();
        Ok(Self { entries })
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(id, _, _)| id.as_str())
    }

    pub fn get(&self, id: &str) -> Result<Runbook, CatalogError> {
        let (id, text, origin) = self
            .entries
            .iter()
            .find(|(i, _, _)| i == id)
            .ok_or_else(|| CatalogError::Unknown { id: id.to_string(), count: self.entries.len() })?;
        Ok(book::parse(id, text, origin)?)
    }

    /// Every runbook parsed, or each one's error.
    pub fn all(&self) -> Vec<Result<Runbook, BookError>> {
        self.entries.iter().map(|(id, text, origin)| book::parse(id, text, origin)).collect()
    }
}
