//! The alerting service: evaluates SLIs against Prometheus or a direct
//! scrape, pages the on-call roster over Slack, email or the console with a
//! runbook link, escalates when nobody acknowledges, and keeps incidents.

pub mod auth;
pub mod engine;
pub mod export;
pub mod http;
pub mod incidents;
pub mod metrics;
pub mod notify;
pub mod oncall;
pub mod promql;
pub mod rules;
pub mod server;
pub mod service;
pub mod source;

/// The service's name in its log lines, spans and resources, unless
/// `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE: &str = "alerting";
