//! Runbooks for the booking platform's alerts, and the `runbook` CLI that
//! runs them.
//!
//! Each alert rule in `alerting/config/rules.yaml` names a runbook,
//! `runbooks/<id>.md`: Markdown prose in six sections (what it means for
//! users, likely causes, diagnose, mitigate, verify, escalate) with the
//! machine-readable steps embedded as `runbook-step` blocks ([`book`]).
//! Steps call a fixed registry of actions on PostgreSQL, Redis, Prometheus
//! and the booking service ([`action`]); [`run`] runs them with the safety
//! rules, [`report`] says what they found and what the run comes to, and
//! [`timeline`] records them on an incident.

pub mod action;
pub mod book;
pub mod catalog;
pub mod cli;
pub mod condition;
pub mod exposition;
pub mod report;
pub mod run;
pub mod target;
pub mod timeline;

/// The tool's name in its log lines and spans, unless `OTEL_SERVICE_NAME`
/// says otherwise.
pub const SERVICE: &str = "runbook";
