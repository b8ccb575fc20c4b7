//! `alerting serve`: settings, start-up checks, and the three loops
//! (evaluate, deliver, HTTP). Every setting is a flag and an environment
//! variable; with none, it scrapes a local booking service and pages the
//! console, keeping incidents in `alerting.db`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use chrono::Utc;

use crate::{
    engine::{Engine, Phase},
    http::{self, AppState},
    incidents,
    metrics::Metrics,
    notify::{Channel, Notifier, console::Console, email, slack::Slack},
    oncall::Roster,
    promql,
    rules::{self, file::RuleSet},
    service::{Channels, Config, Service},
    source::{Source, scrape::Target},
};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTP API and /metrics.
    #[arg(long, env = "ALERTING_LISTEN", default_value = "127.0.0.1:9095")]
    pub listen: SocketAddr,
    /// Rule file (YAML). Default: the shipped rules.
    #[arg(long, env = "ALERTING_RULES")]
    pub rules: Option<PathBuf>,
    /// Roster file (YAML). Default: the shipped example roster.
    #[arg(long, env = "ALERTING_ROSTER")]
    pub roster: Option<PathBuf>,
    /// Incident store: `sqlite://FILE` or `postgres://...`.
    #[arg(long, env = "ALERTING_DATABASE_URL", default_value = "sqlite://alerting.db")]
    pub database_url: String,
    /// Query this Prometheus instead of scraping targets directly.
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Targets to scrape when no Prometheus is given: `job=url`, comma separated.
    #[arg(long, env = "ALERTING_SCRAPE", default_value = "booking=http://127.0.0.1:8080/metrics", value_delimiter = ',')]
    pub scrape: Vec<String>,
    /// Evaluation interval (`5s`). Default: the rule file's, else 5s.
    #[arg(long, env = "ALERTING_INTERVAL")]
    pub interval: Option<String>,
    /// Slack incoming-webhook URL. Unset: no Slack.
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true)]
    pub slack_webhook_url: Option<String>,
    /// SMTP server host. Unset: no email.
    #[arg(long, env = "SMTP_HOST")]
    pub smtp_host: Option<String>,
    #[arg(long, env = "SMTP_PORT", default_value_t = 25)]
    pub smtp_port: u16,
    /// none, starttls or tls.
    #[arg(long, env = "SMTP_TLS", default_value = "none")]
    pub smtp_tls: String,
    #[arg(long, env = "SMTP_FROM", default_value = "alerting@localhost")]
    pub smtp_from: String,
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Append console pages as JSON lines to this file instead of stdout.
    #[arg(long, env = "ALERTING_CONSOLE_FILE")]
    pub console_file: Option<PathBuf>,
    /// Where a page goes when its channel keeps failing: console, email or slack.
    #[arg(long, env = "ALERTING_FALLBACK", default_value = "console")]
    pub fallback: String,
    #[arg(long, env = "ALERTING_MAX_ATTEMPTS", default_value_t = 6)]
    pub max_attempts: i64,
    /// First retry delay; doubles per attempt up to a minute.
    #[arg(long, env = "ALERTING_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Base URL of the runbooks (`<base>/<id>.md`). Default: the rule file's.
    #[arg(long, env = "RUNBOOK_BASE_URL")]
    pub runbook_base_url: Option<String>,
    /// Grafana's URL, for dashboard links. Default: the rule file's.
    #[arg(long, env = "GRAFANA_URL")]
    pub grafana_url: Option<String>,
    /// When set, changes through the API need `Authorization: Bearer <key>`.
    #[arg(long, env = "ALERTING_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Test hook: `after-outbox-write` exits right after a page is stored.
    #[arg(long, env = "ALERTING_FAILPOINT", hide = true)]
    pub failpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("incident store: {0}")]
    Store(#[from] incidents::IncidentError),
    #[error("listening on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Rules and roster, loaded and checked against each other.
pub fn load_config(rules: Option<&std::path::Path>, roster: Option<&std::path::Path>) -> Result<(RuleSet, Roster), StartError> {
    let set = match rules {
        Some(path) => rules::file::load(path).map_err(|e| StartError::Config(e.to_string()))?,
        None => rules::file::shipped(),
    };
    let roster = match roster {
        Some(path) => Roster::load(path).map_err(|e| StartError::Config(e.to_string()))?,
        None => Roster::example(),
    };
    for rule in &set.rules {
        if roster.role(&rule.owner).is_none() {
            return Err(StartError::Config(format!(
                "rule `{}` (line {}): owner role `{}` is not in the roster {}",
                rule.id,
                rule.line,
                rule.owner,
                roster.origin()
            )));
        }
    }
    Ok((set, roster))
}

pub struct Server {
    state: Arc<AppState>,
    source: Source,
    /// Every distinct expression of the rules; the rules never change
    /// while the service runs, so this is computed once.
    exprs: Vec<String>,
    interval: Duration,
    listener: tokio::net::TcpListener,
}

impl Server {
    pub async fn build(mut args: ServeArgs) -> Result<Self, StartError> {
        // An empty variable (compose's `${SLACK_WEBHOOK_URL:-}`) means unset.
        for value in [&mut args.prometheus_url, &mut args.slack_webhook_url, &mut args.smtp_host] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        let (set, roster) = load_config(args.rules.as_deref(), args.roster.as_deref())?;
        for warning in &set.warnings {
            tracing::warn!(warning, "rule file");
        }
        let interval = match &args.interval {
            Some(i) => promql::parse_duration(i).map_err(|why| StartError::Config(format!("ALERTING_INTERVAL `{i}`: {why}")))?,
            None => set.evaluation_interval,
        }
        .max(Duration::from_secs(1));
        let engine = Engine::new(set.rules.clone());
        let exprs: Vec<String> = engine.expressions().into_iter().map(str::to_owned).collect();
        let timeout = interval.min(Duration::from_secs(10));
        let source = match &args.prometheus_url {
            Some(url) => Source::prometheus(url, timeout),
            None => {
                let targets = args
                    .scrape
                    .iter()
                    .map(|t| {
                        let (job, url) = t.split_once('=').ok_or_else(|| StartError::Config(format!("ALERTING_SCRAPE entry {t:?} is not job=url")))?;
                        Ok(Target { job: job.trim().into(), url: url.trim().into() })
                    })
                    .collect::<Result<Vec<_>, StartError>>()?;
                Source::scrape(targets, &exprs.iter().map(String::as_str).collect::<Vec<_>>(), timeout).map_err(|e| StartError::Config(e.to_string()))?
            }
        };
        let channel = |name: &str| match name {
            "console" => Ok(Channel::Console),
            "email" => Ok(Channel::Email),
            "slack" => Ok(Channel::Slack),
            other => Err(StartError::Config(format!("unknown channel {other:?} (console, email or slack)"))),
        };
        let channels = Channels {
            slack: args.slack_webhook_url.as_ref().map(|url| Notifier::Slack(Slack::new(url, Duration::from_secs(10)))),
            email: match &args.smtp_host {
                Some(host) => Some(Notifier::Email(
                    email::Email::new(email::EmailConfig {
                        host: host.clone(),
                        port: args.smtp_port,
                        tls: match args.smtp_tls.as_str() {
                            "none" => email::Tls::None,
                            "starttls" => email::Tls::StartTls,
                            "tls" => email::Tls::Tls,
                            other => return Err(StartError::Config(format!("SMTP_TLS must be none, starttls or tls, not {other:?}"))),
                        },
                        from: args.smtp_from.clone(),
                        username: args.smtp_username.clone(),
                        password: args.smtp_password.clone(),
                    })
                    .map_err(|e| StartError::Config(format!("email: {e}")))?,
                )),
                None => None,
            },
            console: Notifier::Console(match &args.console_file {
                Some(path) => Console::file(path),
                None => Console::stdout(),
            }),
        };
        let fallback = channel(&args.fallback)?;
        let config = Config {
            runbook_base_url: args.runbook_base_url.clone().unwrap_or_else(|| set.runbook_base_url.clone()),
            dashboard_base_url: args.grafana_url.clone().unwrap_or_else(|| set.dashboard_base_url.clone()),
            max_attempts: args.max_attempts.max(1),
            retry_base: Duration::from_millis(args.retry_base_ms.max(1)),
            retry_max: Duration::from_secs(60),
            fallback,
            exit_after_outbox_write: args.failpoint.as_deref() == Some("after-outbox-write"),
        };
        let store = incidents::Store::connect(&args.database_url).await?;
        let service = Service::new(store, roster, set.rules.clone(), channels, config, Metrics::new());
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| StartError::Bind(args.listen, e))?;
        let state = Arc::new(AppState {
            service,
            engine: std::sync::Mutex::new(engine),
            wake: tokio::sync::Notify::new(),
            api_key: args.api_key.clone(),
        });
        Ok(Self { state, source, exprs, interval, listener })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Server { state, mut source, exprs, interval, listener } = self;
        let source_kind = source.kind();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let evaluator = {
            let state = state.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => evaluate_once(&state, &mut source, &exprs).await,
                        _ = stop.changed() => break,
                    }
                }
            })
        };
        let deliverer = {
            let state = state.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    let now = Utc::now().timestamp_millis();
                    if let Err(e) = state.service.deliver(now).await {
                        tracing::error!(error = %e, "delivering pages");
                    }
                    let next = state.service.store.next_due().await.ok().flatten();
                    let wait = next.map_or(Duration::from_secs(1), |t| Duration::from_millis((t - Utc::now().timestamp_millis()).clamp(0, 1000) as u64));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = state.wake.notified() => {}
                        _ = stop.changed() => break,
                    }
                }
            })
        };
        tracing::info!(addr = %listener.local_addr()?, source = source_kind, "alerting service listening");
        let app = http::router(state.clone());
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        let _ = stop_tx.send(true);
        let _ = evaluator.await;
        let _ = deliverer.await;
        state.service.store.close().await;
        served
    }
}

/// One evaluation: query, step the state machine, record, page.
pub async fn evaluate_once(state: &AppState, source: &mut Source, exprs: &[String]) {
    let started = std::time::Instant::now();
    let now = Utc::now().timestamp_millis();
    let refs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let results = match source.evaluate(&refs, now).await {
        Ok(r) => {
            state.service.metrics.evaluations.with_label_values(&["ok"]).inc();
            state.service.metrics.source_up.set(1.0);
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "metric source unavailable; rules count as no data");
            state.service.metrics.evaluations.with_label_values(&["source_error"]).inc();
            state.service.metrics.source_up.set(0.0);
            Default::default()
        }
    };
    let (transitions, statuses, rules) = match state.engine.lock() {
        Ok(mut e) => {
            let t = e.evaluate(&results, now);
            let rules: Vec<(String, bool)> = e.rules().iter().map(|r| (r.id.clone(), e.without_data(&r.id))).collect();
            (t, e.statuses(), rules)
        }
        Err(_) => return,
    };
    state.service.metrics.evaluation_seconds.with_label_values(&[source.kind()]).observe(started.elapsed().as_secs_f64());
    let metrics = &state.service.metrics;
    for (id, without_data) in &rules {
        let phase = statuses.iter().filter(|s| &s.key.rule_id == id).map(|s| s.phase).max().unwrap_or(Phase::Inactive);
        let current = if *without_data { "no_data" } else { phase.as_str() };
        for state_name in ["inactive", "pending", "firing", "no_data"] {
            metrics.rule_state.with_label_values(&[id, state_name]).set(if state_name == current { 1.0 } else { 0.0 });
        }
    }
    if !transitions.is_empty() {
        for t in &transitions {
            tracing::info!(transition = ?t, "alert transition");
        }
    }
    if let Err(e) = state.service.apply(transitions, now).await {
        tracing::error!(error = %e, "recording incidents");
    }
    state.wake.notify_one();
}
