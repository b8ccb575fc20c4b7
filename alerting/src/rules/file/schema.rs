//! The rule file's schema, as written in the file (serde).

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    pub(super) evaluation_interval: Option<Dur>,
    pub(super) runbook_base_url: Option<String>,
    pub(super) dashboard_base_url: Option<String>,
    #[serde(default)]
    pub(super) defaults: DefaultsSpec,
    pub(super) rules: Vec<RuleSpec>,
    #[serde(default)]
    pub(super) inhibit_rules: Vec<InhibitSpec>,
    pub(super) grouping: Option<GroupingSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupingSpec {
    #[serde(default)]
    pub(super) group_by: Vec<String>,
    pub(super) group_wait: Option<Dur>,
    pub(super) group_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InhibitSpec {
    pub(super) source_matchers: Vec<String>,
    pub(super) target_matchers: Vec<String>,
    #[serde(default)]
    pub(super) equal: Vec<String>,
    pub(super) hold: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsSpec {
    pub(super) no_data_for: Option<Dur>,
    pub(super) no_data_severity: Option<Severity>,
    pub(super) clear_for: Option<Dur>,
    pub(super) window: Option<Dur>,
    pub(super) short_window: Option<Dur>,
    pub(super) dashboard: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Kind {
    Sli,
    BurnRate,
    Promql,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Sli => "sli",
            Kind::BurnRate => "burn_rate",
            Kind::Promql => "promql",
        }
    }
}

/// One entry of `rules:`. Every kind's fields in one flat struct, so that
/// serde reports type errors with their line (a tagged enum buffers the
/// entry and loses positions); fields that do not fit the kind are rejected
/// in [`build`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub(super) id: Option<String>,
    pub(super) kind: Option<Kind>,
    pub(super) name: Option<String>,
    pub(super) summary: Option<String>,
    pub(super) owner: Option<String>,
    pub(super) runbook: Option<String>,
    pub(super) dashboard: Option<String>,
    pub(super) unit: Option<Unit>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) no_data_for: Option<Dur>,
    pub(super) no_data_severity: Option<Severity>,
    // sli
    pub(super) sli: Option<Sli>,
    pub(super) window: Option<Dur>,
    pub(super) min_requests: Option<f64>,
    // sli and promql: the window paired with every range of the expression
    pub(super) short_window: Option<Dur>,
    // promql
    pub(super) expr: Option<String>,
    pub(super) and: Option<Vec<ConditionSpec>>,
    // sli and promql
    pub(super) warning: Option<LevelSpec>,
    pub(super) critical: Option<LevelSpec>,
    // burn_rate
    pub(super) slo: Option<f64>,
    pub(super) slo_period: Option<Dur>,
    pub(super) page_fast: Option<BurnSpec>,
    pub(super) page_slow: Option<BurnSpec>,
    pub(super) ticket: Option<BurnSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LevelSpec {
    pub(super) above: Option<f64>,
    pub(super) below: Option<f64>,
    #[serde(rename = "for")]
    pub(super) for_: Option<Dur>,
    pub(super) clear_below: Option<f64>,
    pub(super) clear_above: Option<f64>,
    pub(super) clear_for: Option<Dur>,
    /// `promql` only: this level's own expression instead of the rule's.
    pub(super) expr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConditionSpec {
    pub(super) expr: String,
    pub(super) above: Option<f64>,
    pub(super) below: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BurnSpec {
    pub(super) long: Option<Dur>,
    pub(super) short: Option<Dur>,
    pub(super) factor: Option<f64>,
    #[serde(rename = "for")]
    pub(super) for_: Option<Dur>,
    pub(super) clear_factor: Option<f64>,
    pub(super) clear_window: Option<Dur>,
    pub(super) clear_for: Option<Dur>,
}

/// A duration as written in the file (`90s`, `5m`, `1h30m`, `3d`); parsed
/// during deserialization so a bad one is reported at its own line.
#[derive(Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 1h30m or 3d")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(|why| E::custom(format!("bad duration `{s}`: {why}")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dur, E> {
                Err(E::custom(format!("bad duration `{n}`: add a unit (s, m, h or d)")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dur, E> {
                Err(E::custom(format!("bad duration `{n}`: add a unit (s, m, h or d)")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
