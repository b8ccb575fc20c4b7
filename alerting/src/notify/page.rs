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
    /// On a resolved page: the rule's value when the engine saw it clear
    /// (`None` when a person resolved it). `value` stays the value it fired
    /// (or was last upgraded) with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_value: Option<f64>,
    /// On a resolved page: how long the incident lasted, from `since` (the
    /// condition's start) to its resolution, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lasted_secs: Option<i64>,
    /// A grouped page: the other warnings that arrived with this one (see
    /// the rule file's `grouping`), each with its own incident and ack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Grouped>,
}

/// One more alert on a grouped page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grouped {
    pub incident_id: i64,
    pub alert: String,
    pub summary: String,
    /// `0.62 % (> 0.5 %)`
    pub value: String,
    pub runbook_url: String,
    pub ack_command: String,
}

impl Grouped {
    /// `#7 HighP95Latency 620 ms (> 500 ms): Booking requests are slow · alerting ack 7`
    pub fn line(&self) -> String {
        format!("#{} {} {}: {} · {}", self.incident_id, self.alert, self.value, self.summary, self.ack_command)
    }
}

impl Page {
    /// `[CRITICAL] HighErrorRate firing`, `[RESOLVED] HighErrorRate`: the
    /// first thing a phone lock screen shows, so state and name come first.
    pub fn title(&self) -> String {
        let sev = self.severity.as_str().to_uppercase();
        match self.kind {
            PageKind::Firing if !self.also.is_empty() => {
                format!("[{sev}] {} firing (+{} more)", self.alert, self.also.len())
            }
            PageKind::Firing => format!("[{sev}] {} firing", self.alert),
            PageKind::Escalated { level } => {
                format!("[{sev}] {} escalated (level {level})", self.alert)
            }
            PageKind::Resolved => format!("[RESOLVED] {}", self.alert),
            PageKind::DeliveryFailed => format!("[{sev}] {} page not delivered", self.alert),
        }
    }

    /// `1.52 % (> 1.00 %)`; on a resolved page the value it resolved at,
    /// with what it fired at: `0.10 % (> 1.00 % when it fired at 1.52 %)`.
    pub fn value_vs_threshold(&self) -> String {
        let threshold = format!("{} {}", self.op.promql(), format_value(self.threshold, self.unit));
        let value = format_value(self.value, self.unit);
        match (self.kind, self.resolved_value) {
            (PageKind::Resolved, Some(at)) => {
                format!("{} ({threshold} when it fired at {value})", format_value(at, self.unit))
            }
            (PageKind::Resolved, None) => format!("{value} when it fired ({threshold})"),
            _ => format!("{value} ({threshold})"),
        }
    }

    /// `13 min 5 s`, `2 h 4 min`: how long a resolved incident lasted.
    pub fn lasted_text(&self) -> Option<String> {
        let secs = self.lasted_secs?.max(0);
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        Some(match (h, m, s) {
            (0, 0, s) => format!("{s} s"),
            (0, m, 0) => format!("{m} min"),
            (0, m, s) => format!("{m} min {s} s"),
            (h, 0, _) => format!("{h} h"),
            (h, m, _) => format!("{h} h {m} min"),
        })
    }

    /// RFC 3339 in UTC, whole seconds: unambiguous across time zones.
    pub fn since_rfc3339(&self) -> String {
        self.since.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// `route=/v1/holds, service=booking`, or empty.
    pub fn labels_text(&self) -> String {
        let pairs: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
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
        if let Some(lasted) = self.lasted_text() {
            line("Lasted:", &lasted);
        }
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
        if !self.also.is_empty() {
            out.push_str(&format!("\nAlso firing ({} more, each its own incident):\n", self.also.len()));
            for other in &self.also {
                out.push_str(&format!("  {}\n", other.line()));
            }
        }
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

    fn resolved(resolved_value: Option<f64>, lasted_secs: Option<i64>) -> Page {
        Page {
            kind: PageKind::Resolved,
            incident_id: 7,
            alert: "HighErrorRate".into(),
            rule_id: "high-error-rate".into(),
            severity: Severity::Critical,
            summary: String::new(),
            value: 0.9595,
            threshold: 0.01,
            op: Op::Above,
            unit: Unit::Ratio,
            since: DateTime::from_timestamp(0, 0).unwrap(),
            labels: BTreeMap::new(),
            runbook_url: String::new(),
            runbook_command: String::new(),
            dashboard_url: None,
            ack_command: String::new(),
            resolved_value,
            lasted_secs,
            also: Vec::new(),
        }
    }

    #[test]
    fn a_resolved_page_says_what_it_resolved_at_and_what_it_fired_at() {
        assert_eq!(resolved(Some(0.001), None).value_vs_threshold(), "0.10 % (> 1.00 % when it fired at 95.95 %)");
        assert_eq!(
            resolved(None, None).value_vs_threshold(),
            "95.95 % when it fired (> 1.00 %)",
            "resolved by a person"
        );
        let lasted = |secs| resolved(None, Some(secs)).lasted_text().unwrap();
        assert_eq!(
            (lasted(45), lasted(13 * 60), lasted(13 * 60 + 5)),
            ("45 s".into(), "13 min".into(), "13 min 5 s".into())
        );
        assert_eq!((lasted(2 * 3600), lasted(2 * 3600 + 4 * 60 + 9)), ("2 h".into(), "2 h 4 min".into()));
        assert!(resolved(None, Some(60)).text().contains("Lasted:    1 min"));
    }

    #[test]
    fn values_read_in_their_unit() {
        assert_eq!(format_value(0.0152, Unit::Ratio), "1.52 %");
        assert_eq!(format_value(0.85, Unit::Seconds), "850 ms");
        assert_eq!(format_value(1.2, Unit::Seconds), "1.20 s");
        assert_eq!(format_value(3.1 * 1024.0 * 1024.0 * 1024.0, Unit::Bytes), "3.1 GiB");
        assert_eq!(format_value(512.0, Unit::Bytes), "512 B");
        assert_eq!(format_value(2048.0, Unit::Bytes), "2.0 KiB");
        assert_eq!(format_value(42.0, Unit::None), "42");
        assert_eq!(format_value(0.1 + 0.2, Unit::None), "0.3");
        assert_eq!(format_value(f64::NAN, Unit::Ratio), "NaN");
    }
}
