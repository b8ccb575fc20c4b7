//! What a notification says, whatever channel carries it. A page is stored as
//! JSON in the durable outbox before any channel sees it, so it holds every
//! value a channel needs (no lookups at send time) and its wording lives here
//! once rather than in each channel.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::{Op, Severity, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageKind {
    Firing,
    /// Nobody acknowledged, so the next escalation level is paged too.
    Escalated {
        level: usize,
    },
    Resolved,
    /// A channel kept failing for this incident; sent to the fallback channel
    /// so a page is never lost silently.
    DeliveryFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub kind: PageKind,
    pub incident_id: i64,
    /// Alert name as Prometheus shows it (`HighErrorRate`).
    pub alert: String,
    pub rule_id: String,
    pub severity: Severity,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    pub op: Op,
    pub unit: Unit,
    pub since: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
    pub runbook_url: String,
    /// `runbook run high-error-rate --incident 42`
    pub runbook_command: String,
    pub dashboard_url: Option<String>,
    /// `alerting ack 42`
    pub ack_command: String,
}

impl Page {
    /// `[CRITICAL] HighErrorRate firing`, `[RESOLVED] HighErrorRate`: the
    /// first thing a phone lock screen shows, so state and name come first.
    pub fn title(&self) -> String {
        let sev = self.severity.as_str().to_uppercase();
        match self.kind {
            PageKind::Firing => format!("[{sev}] {} firing", self.alert),
            PageKind::Escalated { level } => {
                format!("[{sev}] {} escalated (level {level})", self.alert)
            }
            PageKind::Resolved => format!("[RESOLVED] {}", self.alert),
            PageKind::DeliveryFailed => format!("[{sev}] {} page not delivered", self.alert),
        }
    }

    /// `1.52 % (> 1.00 %)`
    pub fn value_vs_threshold(&self) -> String {
        format!(
            "{} ({} {})",
            format_value(self.value, self.unit),
            self.op.promql(),
            format_value(self.threshold, self.unit)
        )
    }

    /// RFC 3339 in UTC, whole seconds: unambiguous across time zones.
    pub fn since_rfc3339(&self) -> String {
        self.since.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// `route=/v1/holds, service=booking`, or empty.
    pub fn labels_text(&self) -> String {
        let pairs: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join(", ")
    }

    /// Whether the page still asks for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        !matches!(self.kind, PageKind::Resolved)
    }

    /// The plain-text body shared by email and the console.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n{}\n\n", self.title(), self.summary);
        let mut line = |name: &str, value: &str| out.push_str(&format!("{name:<11}{value}\n"));
        line("Value:", &self.value_vs_threshold());
        line("Since:", &self.since_rfc3339());
        line("Severity:", self.severity.as_str());
        line("Incident:", &format!("#{}", self.incident_id));
        if !self.labels.is_empty() {
            line("Labels:", &self.labels_text());
        }
        line("Runbook:", &self.runbook_url);
        if let Some(dashboard) = &self.dashboard_url {
            line("Dashboard:", dashboard);
        }
        out.push('\n');
        if self.wants_ack() {
            out.push_str(&format!("Acknowledge:  {}\n", self.ack_command));
        }
        out.push_str(&format!("Run runbook:  {}\n", self.runbook_command));
        out
    }
}

/// A value as a human reads it: Ratio → `1.52 %`, Seconds → `850 ms` or
/// `1.20 s`, Bytes → `3.1 GiB`, None → the number with at most 3 decimals.
pub fn format_value(value: f64, unit: Unit) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    match unit {
        Unit::Ratio => format!("{:.2} %", value * 100.0),
        Unit::Seconds if value.abs() < 1.0 => format!("{:.0} ms", value * 1000.0),
        Unit::Seconds => format!("{value:.2} s"),
        Unit::Bytes => {
            const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
            if value.abs() < 1024.0 {
                return format!("{value:.0} B");
            }
            let mut scaled = value / 1024.0;
            let mut unit = UNITS[0];
            for next in &UNITS[1..] {
                if scaled.abs() < 1024.0 {
                    break;
                }
                scaled /= 1024.0;
                unit = next;
            }
            format!("{scaled:.1} {unit}")
        }
        Unit::None => {
            let s = format!("{value:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_in_their_unit() {
        assert_eq!(format_value(0.0152, Unit::Ratio), "1.52 %");
        assert_eq!(format_value(0.85, Unit::Seconds), "850 ms");
        assert_eq!(format_value(1.2, Unit::Seconds), "1.20 s");
        assert_eq!(
            format_value(3.1 * 1024.0 * 1024.0 * 1024.0, Unit::Bytes),
            "3.1 GiB"
        );
        assert_eq!(format_value(512.0, Unit::Bytes), "512 B");
        assert_eq!(format_value(2048.0, Unit::Bytes), "2.0 KiB");
        assert_eq!(format_value(42.0, Unit::None), "42");
        assert_eq!(format_value(0.1 + 0.2, Unit::None), "0.3");
        assert_eq!(format_value(f64::NAN, Unit::Ratio), "NaN");
    }
}
