//! The alerting service's own metrics, so a broken pager is itself
//! visible: evaluations and their duration, rule states, and pages by
//! channel and outcome with delivery latency.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub evaluations: IntCounterVec,
    pub evaluation_seconds: HistogramVec,
    pub rule_state: GaugeVec,
    pub source_up: Gauge,
    pub pages: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    pub outbox_pending: IntGauge,
    pub incidents_open: IntGauge,
    pub retention_deleted: IntCounterVec,
    /// Series the embedded scrape store refused, over its cap.
    pub scrape_series_dropped: IntCounter,
    /// The listener's connections and the limits it enforced.
    pub connections: serving::ConnectionMetrics,
    /// 1 while this process holds the evaluator lease; a group's sum is 1.
    pub leader: IntGauge,
    /// Times this process took the evaluator lease.
    pub leader_changes: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let evaluations = IntCounterVec::new(
            Opts::new("alerting_evaluations_total", "Rule evaluations by outcome (ok, source_error)"),
            &["outcome"],
        )
        .expect("valid metric");
        let evaluation_seconds = HistogramVec::new(
            HistogramOpts::new(
                "alerting_evaluation_duration_seconds",
                "Time to query the source and evaluate every rule",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["source"],
        )
        .expect("valid metric");
        let rule_state = GaugeVec::new(
            Opts::new("alerting_rule_state", "1 for the state each rule is in (inactive, pending, firing, no_data)"),
            &["rule", "state"],
        )
        .expect("valid metric");
        let source_up = Gauge::new("alerting_source_up", "1 when the last evaluation reached the metric source")
            .expect("valid metric");
        let pages = IntCounterVec::new(
            Opts::new(
                "alerting_pages_total",
                "Page delivery attempts by channel and outcome (delivered, retry, failed, silenced, claim_lost)",
            ),
            &["channel", "outcome"],
        )
        .expect("valid metric");
        let delivery_seconds = HistogramVec::new(
            HistogramOpts::new("alerting_page_delivery_seconds", "From writing a page to the outbox to its delivery")
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["channel"],
        )
        .expect("valid metric");
        let outbox_pending =
            IntGauge::new("alerting_outbox_pending", "Pages written but not yet delivered").expect("valid metric");
        let incidents_open =
            IntGauge::new("alerting_incidents_open", "Incidents not yet resolved").expect("valid metric");
        let retention_deleted = IntCounterVec::new(
            Opts::new(
                "alerting_retention_deleted_total",
                "Rows deleted by retention, by table (incidents, timeline, outbox, silences)",
            ),
            &["table"],
        )
        .expect("valid metric");
        for c in [
            Box::new(evaluations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(evaluation_seconds.clone()),
            Box::new(rule_state.clone()),
            Box::new(source_up.clone()),
            Box::new(pages.clone()),
            Box::new(delivery_seconds.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(incidents_open.clone()),
            Box::new(retention_deleted.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        // Zero series exist from the start, so rate() and dashboards see
        // them before the first page.
        for channel in ["slack", "email", "console"] {
            delivery_seconds.with_label_values(&[channel]);
            for outcome in ["delivered", "retry", "failed", "silenced", "claim_lost"] {
                pages.with_label_values(&[channel, outcome]);
            }
        }
        for outcome in ["ok", "source_error"] {
            evaluations.with_label_values(&[outcome]);
        }
        for source in ["prometheus", "scrape"] {
            evaluation_seconds.with_label_values(&[source]);
        }
        for table in ["incidents", "timeline", "outbox", "silences"] {
            retention_deleted.with_label_values(&[table]);
        }
        let scrape_series_dropped = IntCounter::new(
            "alerting_scrape_series_dropped_total",
            "Samples of new series the embedded scrape store refused because it holds its maximum series (a target's labels ran away)",
        )
        .expect("valid metric");
        registry.register(Box::new(scrape_series_dropped.clone())).expect("unique metric");
        let leader = IntGauge::new(
            "alerting_leader",
            "1 while this process evaluates the rules (holds the group's evaluator lease), else 0; summed over a group it is 1",
        )
        .expect("valid metric");
        let leader_changes =
            IntCounter::new("alerting_leader_acquired_total", "Times this process took the evaluator lease")
                .expect("valid metric");
        registry.register(Box::new(leader.clone())).expect("unique metric");
        registry.register(Box::new(leader_changes.clone())).expect("unique metric");
        let connections = serving::ConnectionMetrics::new();
        connections.register(&registry).expect("unique metric");
        Self {
            registry,
            evaluations,
            evaluation_seconds,
            rule_state,
            source_up,
            pages,
            delivery_seconds,
            outbox_pending,
            incidents_open,
            retention_deleted,
            scrape_series_dropped,
            connections,
            leader,
            leader_changes,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
