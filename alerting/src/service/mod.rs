//! From alert transitions to people: incidents, paging plans, the durable
//! outbox and its delivery, acknowledgements and resolutions.
//!
//! Every step takes `now` (Unix ms) from its caller, so escalation and
//! retries are tested on virtual time.
//!
//! Delivery guarantee: a page is committed to the outbox before any send,
//! and marked delivered right after the channel accepts it. A crash before
//! the send loses nothing (the restarted worker sends it); only a crash in
//! the instant between the channel's acceptance and our commit can repeat a
//! page. Critical pages are never batched: each incident is paged on its own
//! the moment it fires. Sending is per channel ([`delivery`]), so a channel
//! that is down or slow never holds up another.

mod delivery;

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use tracing::Instrument as _;

use crate::{
    engine::{NO_DATA, Transition},
    incidents::{self, EventKind, Fence, Incident, IncidentError, NewIncident, Who},
    metrics::Metrics,
    notify::{Channel, Notifier, Page, PageKind, Recipient},
    oncall::{self, Roster},
    rules::{Grouping, Rule, Severity, Unit},
};

pub struct Config {
    pub runbook_base_url: String,
    /// Grafana; `None`: pages carry no dashboard link.
    pub dashboard_base_url: Option<String>,
    /// Written before `alerting` and `runbook` in a page's commands (a
    /// directory ending in `/`), so they run as printed: empty means both
    /// are on the PATH.
    pub command_prefix: String,
    /// Attempts per page before it goes to the fallback channel.
    pub max_attempts: i64,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The longest `Retry-After` waited for; a channel asking for more is
    /// treated as failed, and the page goes to the fallback at once.
    pub retry_after_max: Duration,
    pub fallback: Channel,
    /// Test hook (`ALERTING_FAILPOINT`): stop as if killed at that point.
    pub failpoint: Option<Failpoint>,
    /// How long a sender's claim on a page lasts before another process may
    /// send it: longer than any channel's send timeout.
    pub claim_timeout: Duration,
    /// How warnings are batched into pages (the rule file's `grouping`).
    pub grouping: Option<Grouping>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            runbook_base_url: crate::rules::file::default_runbook_base(),
            dashboard_base_url: None,
            command_prefix: String::new(),
            max_attempts: 6,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(60),
            fallback: Channel::Console,
            failpoint: None,
            claim_timeout: Duration::from_secs(60),
            grouping: None,
        }
    }
}

/// The configured channels. The console is always there: the embedded
/// default, and the last resort.
pub struct Channels {
    pub slack: Option<Notifier>,
    pub email: Option<Notifier>,
    pub console: Notifier,
}

impl Channels {
    fn get(&self, channel: Channel) -> Option<&Notifier> {
        match channel {
            Channel::Slack => self.slack.as_ref(),
            Channel::Email => self.email.as_ref(),
            Channel::Console => Some(&self.console),
        }
    }

    /// The channels that can carry a page.
    pub fn configured(&self) -> Vec<Channel> {
        Channel::ALL.into_iter().filter(|c| self.get(*c).is_some()).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Incident(#[from] IncidentError),
    /// A page or its recipients could not be written as JSON: nothing is
    /// written, rather than an empty page into the durable outbox.
    #[error("cannot encode a page for the outbox: {0}")]
    Encode(#[from] serde_json::Error),
    /// The test hook was reached: the process must stop at once, as if
    /// killed there (see [`Service::crashed`]).
    #[error("failpoint {0} reached")]
    Failpoint(Failpoint),
}

/// A point where a test kills the process (`ALERTING_FAILPOINT`), to show
/// that what was written before it is enough to carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Right after a page is committed to the outbox, before it is sent.
    AfterOutboxWrite,
    /// Right after a page is claimed and its claim renewed, in the instant
    /// before it is sent.
    AfterClaim,
}

impl Failpoint {
    pub const ALL: [Failpoint; 2] = [Failpoint::AfterOutboxWrite, Failpoint::AfterClaim];

    pub fn as_str(self) -> &'static str {
        match self {
            Failpoint::AfterOutboxWrite => "after-outbox-write",
            Failpoint::AfterClaim => "after-claim",
        }
    }

    /// The exit status the binary stops with, one per point.
    pub fn exit_code(self) -> u8 {
        match self {
            Failpoint::AfterOutboxWrite => 86,
            Failpoint::AfterClaim => 87,
        }
    }
}

impl TryFrom<&str> for Failpoint {
    type Error = String;

    fn try_from(s: &str) -> Result<Failpoint, String> {
        Failpoint::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Failpoint::ALL.iter().map(|f| f.as_str()).collect();
            format!("ALERTING_FAILPOINT must be one of {}, not {s:?}", names.join(", "))
        })
    }
}

impl std::fmt::Display for Failpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub struct Service {
    pub store: incidents::Store,
    pub roster: Roster,
    rules: BTreeMap<String, Rule>,
    channels: Channels,
    config: Config,
    pub metrics: Metrics,
    lanes: delivery::Lanes,
    /// The failpoint reached, if any (see [`Service::crashed`]).
    crash: tokio::sync::watch::Sender<Option<Failpoint>>,
    /// Run the instant a failpoint is reached (the binary's: exit there).
    on_failpoint: std::sync::OnceLock<fn(Failpoint)>,
}

fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Service {
    pub fn new(
        store: incidents::Store,
        roster: Roster,
        rules: Vec<Rule>,
        channels: Channels,
        config: Config,
        metrics: Metrics,
    ) -> Self {
        let mut by_id: BTreeMap<String, Rule> = rules.into_iter().map(|r| (r.id.clone(), r)).collect();
        by_id.entry(NO_DATA.into()).or_insert_with(no_data_rule);
        let crash = tokio::sync::watch::Sender::new(None);
        let lanes = delivery::Lanes::default();
        Self { store, roster, rules: by_id, channels, config, metrics, lanes, crash, on_failpoint: Default::default() }
    }

    /// What the process does the instant a failpoint is reached, before
    /// any other task runs again. The binary exits there: a process that
    /// only stopped after the error travelled up would let its other tasks
    /// go on meanwhile (a delivery loop claiming the page just written, for
    /// one), which a killed process cannot. Without a hook (a library
    /// caller, a test) the failpoint is only the error.
    pub fn on_failpoint(&self, hook: fn(Failpoint)) {
        let _ = self.on_failpoint.set(hook);
    }

    /// `Err(Failpoint)` when `point` is this process's failpoint: the
    /// caller stops there, and [`Service::crashed`] resolves.
    fn failpoint(&self, point: Failpoint) -> Result<(), ServiceError> {
        if self.config.failpoint != Some(point) {
            return Ok(());
        }
        tracing::error!(failpoint = point.as_str(), "failpoint reached: stopping as if killed");
        if let Some(hook) = self.on_failpoint.get() {
            hook(point);
        }
        self.crash.send_replace(Some(point));
        Err(ServiceError::Failpoint(point))
    }

    /// Resolves once a failpoint was reached; never without one. The server
    /// then returns at once, without the graceful steps (claims stay held,
    /// the lease stays taken); see `Server::run`.
    pub async fn crashed(&self) -> Failpoint {
        let mut rx = self.crash.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(point) => point.unwrap_or(Failpoint::AfterOutboxWrite),
            Err(_) => std::future::pending().await,
        }
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.get(id)
    }

    /// Opens, upgrades and resolves incidents for one evaluation's
    /// transitions, then pages whatever became due.
    pub async fn apply(&self, transitions: Vec<Transition>, now: i64) -> Result<(), ServiceError> {
        self.apply_with(&self.store, transitions, now).await
    }

    /// [`Service::apply`] as the group's evaluator under `fence`: every
    /// write is refused ([`IncidentError::Fenced`]) once the lease has
    /// passed to another process.
    pub async fn apply_fenced(
        &self,
        fence: &Fence,
        transitions: Vec<Transition>,
        now: i64,
    ) -> Result<(), ServiceError> {
        self.apply_with(&self.store.fenced(fence.clone()), transitions, now).await
    }

    async fn apply_with(
        &self,
        store: &incidents::Store,
        transitions: Vec<Transition>,
        now: i64,
    ) -> Result<(), ServiceError> {
        for t in transitions {
            match t {
                Transition::Fired { key, severity, value, threshold, op, since_ms, detail } => {
                    let Some(rule) = self.rules.get(&key.rule_id) else { continue };
                    let (incident, created) = store
                        .open(&NewIncident {
                            fingerprint: key.fingerprint(),
                            rule_id: rule.id.clone(),
                            alert: rule.name.clone(),
                            severity,
                            summary: detail,
                            labels: key.labels.clone(),
                            value,
                            threshold,
                            op,
                            started_at: since_ms,
                            paged_at: now,
                        })
                        .await?;
                    if created {
                        let text = format!(
                            "{} {} fired: {} ({} {})",
                            severity,
                            rule.name,
                            crate::notify::format_value(value, rule.unit),
                            op.promql(),
                            crate::notify::format_value(threshold, rule.unit)
                        );
                        store
                            .record(
                                incident.id,
                                now,
                                EventKind::Fired,
                                None,
                                &text,
                                Some(&serde_json::json!({
                                    "value": value,
                                    "threshold": threshold,
                                    // The evaluation that fired it, and so its first page's trace.
                                    "trace_id": telemetry::spans::current_context().map(|cx| cx.trace_id.to_string()),
                                })),
                            )
                            .await?;
                    }
                }
                Transition::Upgraded { key, severity, value, threshold, .. } => {
                    if let Some(open) = store.find_open(&key.fingerprint()).await? {
                        store.upgrade(open.id, severity, value, threshold, now).await?;
                        store
                            .record(
                                open.id,
                                now,
                                EventKind::Upgraded,
                                None,
                                &format!("severity raised to {severity}"),
                                None,
                            )
                            .await?;
                    }
                }
                Transition::Resolved { key, value } => {
                    if let Some(open) = store.find_open(&key.fingerprint()).await? {
                        self.resolve_at(store, open.id, "alerting", now, Some(value)).await?;
                    }
                }
                Transition::Inhibited { key, severity, by } => {
                    // On the inhibitor's incident (open, or the one that just
                    // resolved), so whoever handles it sees what it muted.
                    let name = self.rules.get(&key.rule_id).map_or(key.rule_id.as_str(), |r| r.name.as_str());
                    if let Some(host) = store.latest(&by).await? {
                        let text =
                            format!("{name} ({severity}) is firing too; not paged: inhibited by this incident's alert");
                        store
                            .record(
                                host.id,
                                now,
                                EventKind::Inhibited,
                                None,
                                &text,
                                Some(&serde_json::json!({ "alert": key.fingerprint(), "severity": severity })),
                            )
                            .await?;
                    }
                }
            }
        }
        self.escalate_with(store, now).await
    }

    /// Pages every step of every unacknowledged incident's plan that is due.
    pub async fn escalate(&self, now: i64) -> Result<(), ServiceError> {
        self.escalate_with(&self.store, now).await
    }

    /// Each due step is written to the outbox (idempotent: its dedup key
    /// names the incident, plan and step), then claimed by moving
    /// `steps_paged` on; only the claim's winner records it on the
    /// timeline. A crash between the two re-writes the same rows (no-ops)
    /// and claims then; two evaluators at once write one set of rows.
    async fn escalate_with(&self, store: &incidents::Store, now: i64) -> Result<(), ServiceError> {
        let open = store.unacked().await?;
        self.metrics.incidents_open.set(store.count_open().await?);
        let mut groups: BTreeMap<String, Vec<Incident>> = BTreeMap::new();
        for incident in open {
            let Some(rule) = self.rules.get(&incident.rule_id) else { continue };
            let plan = oncall::plan(&self.roster, incident.severity, &rule.owner);
            let due = oncall::due(&plan, utc(incident.plan_started_at), utc(now)) as i64;
            if due <= incident.steps_paged {
                continue;
            }
            if let Some(silence) = self.silenced_by(&incident, rule, now).await? {
                if store.claim_steps(&incident, due).await? {
                    store
                        .record(
                            incident.id,
                            now,
                            EventKind::Silenced,
                            None,
                            &format!("page suppressed by {silence}"),
                            None,
                        )
                        .await?;
                    self.metrics.pages.with_label_values(&["console", "silenced"]).inc();
                }
                continue;
            }
            // A warning's first page waits for its group; critical never does.
            if let Some(grouping) = &self.config.grouping
                && incident.severity == Severity::Warning
                && incident.steps_paged == 0
            {
                let labels = rule.alert_labels(incident.severity, &incident.labels);
                groups.entry(grouping.key(&labels)).or_default().push(incident);
                continue;
            }
            let mut paged = Vec::new();
            for step in incident.steps_paged..due {
                let kind = if step == 0 { PageKind::Firing } else { PageKind::Escalated { level: step as usize } };
                paged.push(self.page_step(store, &incident, rule, &plan[step as usize], step, kind, now).await?);
            }
            if store.claim_steps(&incident, due).await? {
                for (kind, text, data) in paged {
                    store.record(incident.id, now, kind, None, &text, Some(&data)).await?;
                }
            }
            self.failpoint(Failpoint::AfterOutboxWrite)?;
        }
        if let Some(grouping) = &self.config.grouping {
            for (key, members) in groups {
                let first = members.iter().map(|i| i.plan_started_at).min().unwrap_or(now);
                let waited = now.saturating_sub(first) >= millis(grouping.group_wait);
                let flushed = store.group_flushed(&key).await?;
                let spaced = flushed.is_none_or(|at| now.saturating_sub(at) >= millis(grouping.group_interval));
                if !(waited && spaced) {
                    continue;
                }
                for chunk in members.chunks(GROUP_PAGE_MAX) {
                    self.page_group(store, &key, chunk, now).await?;
                }
                store.set_group_flushed(&key, now).await?;
            }
        }
        Ok(())
    }

    /// One first page for a group of warnings: the first incident's page,
    /// listing the others, to everyone any of them would page. Each
    /// incident's step is claimed (and its escalation clock started) now.
    async fn page_group(
        &self,
        store: &incidents::Store,
        key: &str,
        members: &[Incident],
        now: i64,
    ) -> Result<(), ServiceError> {
        let Some(lead) = members.first() else { return Ok(()) };
        let Some(rule) = self.rules.get(&lead.rule_id) else { return Ok(()) };
        let mut recipients: Vec<Recipient> = Vec::new();
        for incident in members {
            let Some(rule) = self.rules.get(&incident.rule_id) else { continue };
            let plan = oncall::plan(&self.roster, incident.severity, &rule.owner);
            let Some(step) = plan.first() else { continue };
            for t in oncall::targets(&self.roster, step, utc(now)) {
                let name = format!("{} ({})", t.person.name, t.role);
                if !recipients.iter().any(|r| r.name == name) {
                    recipients.push(Recipient { name, slack: t.person.slack.clone(), email: t.person.email.clone() });
                }
            }
        }
        let mut page = self.page_for(lead, rule, PageKind::Firing);
        page.also = members[1..]
            .iter()
            .filter_map(|i| {
                let rule = self.rules.get(&i.rule_id)?;
                let other = self.page_for(i, rule, PageKind::Firing);
                Some(crate::notify::Grouped {
                    incident_id: i.id,
                    alert: i.alert.clone(),
                    summary: i.summary.clone(),
                    value: other.value_vs_threshold(),
                    runbook_url: other.runbook_url,
                    ack_command: other.ack_command,
                })
            })
            .collect();
        let ids: Vec<i64> = members.iter().map(|i| i.id).collect();
        let tag = format!("group:{key}:{}", ids.iter().map(i64::to_string).collect::<Vec<_>>().join("-"));
        let used = self.enqueue_everywhere(store, &ids, &tag, &page, &recipients, now).await?;
        let who: Vec<String> = recipients.iter().map(|r| r.name.clone()).collect();
        for incident in members {
            if store.claim_grouped_page(incident, now).await? {
                let others: Vec<String> =
                    ids.iter().filter(|id| **id != incident.id).map(|id| format!("#{id}")).collect();
                let text =
                    format!("paged {} via {} (one page with {})", who.join(", "), used.join(", "), others.join(", "));
                let data = serde_json::json!({ "level": 0, "recipients": who, "group": key, "with": ids });
                store.record(incident.id, now, EventKind::Paged, None, &text, Some(&data)).await?;
            }
        }
        Ok(())
    }

    async fn silenced_by(&self, incident: &Incident, rule: &Rule, now: i64) -> Result<Option<String>, ServiceError> {
        let labels = rule.alert_labels(incident.severity, &incident.labels);
        Ok(self.store.silences(now).await?.into_iter().find(|s| s.matches(&labels, now)).map(|s| {
            format!(
                "{} #{} ({})",
                if s.kind == incidents::SilenceKind::Maintenance { "maintenance" } else { "silence" },
                s.id,
                s.comment
            )
        }))
    }

    pub fn page_for(&self, incident: &Incident, rule: &Rule, kind: PageKind) -> Page {
        Page {
            kind,
            incident_id: incident.id,
            alert: incident.alert.clone(),
            rule_id: incident.rule_id.clone(),
            severity: incident.severity,
            summary: incident.summary.clone(),
            value: incident.value,
            threshold: incident.threshold,
            op: incident.op,
            unit: rule.unit,
            since: utc(incident.started_at),
            labels: incident.labels.clone(),
            runbook_url: crate::rules::file::runbook_url(&self.config.runbook_base_url, rule),
            runbook_command: format!(
                "{}runbook run {} --incident {}",
                self.config.command_prefix, rule.runbook, incident.id
            ),
            dashboard_url: crate::rules::file::dashboard_url(self.config.dashboard_base_url.as_deref(), rule),
            ack_command: format!("{}alerting ack {}", self.config.command_prefix, incident.id),
            resolved_value: None,
            lasted_secs: None,
            also: Vec::new(),
        }
    }

    /// Writes one step's pages to the outbox; returns its timeline event
    /// (kind, text, data) for the caller to record once the step is claimed.
    #[allow(clippy::too_many_arguments)]
    async fn page_step(
        &self,
        store: &incidents::Store,
        incident: &Incident,
        rule: &Rule,
        step: &oncall::Step,
        index: i64,
        kind: PageKind,
        now: i64,
    ) -> Result<(EventKind, String, serde_json::Value), ServiceError> {
        let targets = oncall::targets(&self.roster, step, utc(now));
        let recipients: Vec<Recipient> = targets
            .iter()
            .map(|t| Recipient {
                name: format!("{} ({})", t.person.name, t.role),
                slack: t.person.slack.clone(),
                email: t.person.email.clone(),
            })
            .collect();
        let page = self.page_for(incident, rule, kind);
        let tag = format!("{}:{}:step{}", incident.id, incident.plan_started_at, index);
        let channels = self.enqueue_everywhere(store, &[incident.id], &tag, &page, &recipients, now).await?;
        let who: Vec<String> = recipients.iter().map(|r| r.name.clone()).collect();
        let text = if index == 0 {
            format!("paged {} via {}", who.join(", "), channels.join(", "))
        } else {
            format!("not acknowledged: escalated (level {index}) to {} via {}", who.join(", "), channels.join(", "))
        };
        Ok((
            if index == 0 { EventKind::Paged } else { EventKind::Escalated },
            text,
            serde_json::json!({ "level": index, "recipients": who }),
        ))
    }

    /// Writes one outbox row per channel that can reach some recipient; a
    /// grouped page's row speaks for every incident in `incidents`. In a
    /// span of its own, which each row names as the parent of its delivery
    /// attempts.
    async fn enqueue_everywhere(
        &self,
        store: &incidents::Store,
        incidents: &[i64],
        tag: &str,
        page: &Page,
        to: &[Recipient],
        now: i64,
    ) -> Result<Vec<&'static str>, ServiceError> {
        let span = tracing::info_span!(
            "page enqueue",
            otel.name = "enqueue page",
            otel.kind = "producer",
            alerting.incident = incidents.first().copied().unwrap_or_default(),
            alerting.page = %tag,
            alerting.recipients = to.len(),
        );
        async {
            let mut used = Vec::new();
            let page_json = serde_json::to_string(page)?;
            for channel in [Channel::Slack, Channel::Email, Channel::Console] {
                if self.channels.get(channel).is_none() {
                    continue;
                }
                let reachable = reachable(channel, to);
                if reachable.is_empty() {
                    continue;
                }
                let recipients = serde_json::to_string(&reachable)?;
                let key = format!("{tag}:{}", channel.as_str());
                store.enqueue_group(incidents, &key, channel.as_str(), &recipients, &page_json, now).await?;
                self.ring(channel);
                used.push(channel.as_str());
            }
            Ok(used)
        }
        .instrument(span)
        .await
    }

    pub async fn ack(&self, id: i64, who: impl Into<Who>, now: i64) -> Result<Incident, ServiceError> {
        Ok(self.store.ack(id, who, now).await?)
    }

    /// Resolves and tells everyone who was paged.
    pub async fn resolve(&self, id: i64, who: impl Into<Who>, now: i64) -> Result<Incident, ServiceError> {
        self.resolve_at(&self.store, id, who, now, None).await
    }

    /// [`Service::resolve`], with the rule's value when the engine saw it
    /// clear (on the resolved page).
    async fn resolve_at(
        &self,
        store: &incidents::Store,
        id: i64,
        who: impl Into<Who>,
        now: i64,
        value: Option<f64>,
    ) -> Result<Incident, ServiceError> {
        // The resolved pages are written in the resolve's own transaction:
        // an incident is never resolved without them.
        let mut rang = Vec::new();
        let pages = |incident: &Incident,
                     paged: &[(String, String)]|
         -> Result<Vec<incidents::NewPage>, IncidentError> {
            let rule = self.rules.get(&incident.rule_id).cloned().unwrap_or_else(no_data_rule);
            let mut page = self.page_for(incident, &rule, PageKind::Resolved);
            page.resolved_value = value.filter(|v| v.is_finite());
            page.lasted_secs = Some(now.saturating_sub(incident.started_at) / 1000);
            let page_json = serde_json::to_string(&page)?;
            let mut by_channel: BTreeMap<&str, Vec<Recipient>> = BTreeMap::new();
            for (channel, recipients) in paged {
                let list: Vec<Recipient> = serde_json::from_str(recipients)
                    .map_err(|e| IncidentError::Unreadable { what: "recipients of a page", detail: e.to_string() })?;
                let entry = by_channel.entry(channel.as_str()).or_default();
                for r in list {
                    if !entry.iter().any(|e| e.name == r.name) {
                        entry.push(r);
                    }
                }
            }
            rang.extend(by_channel.keys().filter_map(|c| Channel::parse(c)));
            by_channel
                .into_iter()
                .map(|(channel, recipients)| {
                    Ok(incidents::NewPage {
                        dedup_key: format!("{id}:resolved:{channel}"),
                        channel: channel.to_owned(),
                        recipients: serde_json::to_string(&recipients)?,
                        page: page_json.clone(),
                    })
                })
                .collect()
        };
        let Some(incident) = store.resolve_notifying(id, who, now, pages).await? else {
            return Ok(self.store.get(id).await?);
        };
        for channel in rang {
            self.ring(channel);
        }
        Ok(incident)
    }
}

/// The recipients `channel` can reach (the console reaches everyone).
fn reachable(channel: Channel, to: &[Recipient]) -> Vec<&Recipient> {
    to.iter()
        .filter(|r| match channel {
            Channel::Slack => r.slack.is_some(),
            Channel::Email => r.email.is_some(),
            Channel::Console => true,
        })
        .collect()
}

/// Warnings on one grouped page at most; more make more pages. Ten lines
/// fit Slack's 3,000-character section with room to spare.
pub const GROUP_PAGE_MAX: usize = 10;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn kind_name(kind: &PageKind) -> &'static str {
    match kind {
        PageKind::Firing => "page",
        PageKind::Escalated { .. } => "escalation",
        PageKind::Resolved => "resolved notice",
        PageKind::DeliveryFailed => "delivery-failure notice",
    }
}

/// The synthetic rule behind the aggregated no-data alert.
pub fn no_data_rule() -> Rule {
    Rule {
        id: NO_DATA.into(),
        name: "NoData".into(),
        summary: "Rules are getting no data: the metrics pipeline or the service is down".into(),
        owner: "infra".into(),
        runbook: "telemetry-pipeline-down".into(),
        dashboard: None,
        unit: Unit::None,
        levels: Vec::new(),
        no_data_for: Duration::ZERO,
        no_data_severity: Severity::Critical,
        labels: Default::default(),
        line: 0,
    }
}
