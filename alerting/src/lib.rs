//! The alerting service: evaluates SLIs against Prometheus or a direct
//! scrape, pages the on-call roster over Slack, email or the console with a
//! runbook link, escalates when nobody acknowledges, and keeps incidents.

pub mod rules;
pub mod promql;
pub mod source;
pub mod engine;
pub mod incidents;
pub mod oncall;
pub mod metrics;
pub mod notify;
pub mod export;
pub mod service;
pub mod auth;
pub mod http;
pub mod server;
