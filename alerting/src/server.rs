//! `alerting serve`: settings, start-up checks, and the loops (evaluate,
//! one delivery lane per channel, retention, HTTP). Every setting is a flag
//! and an environment variable; with none, it scrapes a local booking
//! service and pages the console, keeping incidents in `alerting.db`.
//!
//! Start-up refuses settings that would expose something: an API off
//! loopback without any key, a key shorter than 32 bytes, SMTP credentials
//! sent in plain text to another machine.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use tracing::Instrument as _;

use crate::{
    auth::Keys,
    engine::{AlertKey, Engine, Phase},
    http::{self, AppState, Shared},
    incidents::{self, Fence, Retention},
    metrics::Metrics,
    notify::{
        Channel, Notifier,
        console::{Console, Format},
        email,
        slack::Slack,
    },
    oncall::Roster,
    promql,
    rules::{self, file::RuleSet},
    service::{Channels, Config, Failpoint, Service, ServiceError},
    source::{Source, scrape::Target},
};

/// Secrets are in here, so there is no `Debug`.
#[derive(clap::Args, Clone)]
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
    #[arg(
        long,
        env = "ALERTING_SCRAPE",
        default_value = "booking=http://127.0.0.1:8080/metrics",
        value_delimiter = ','
    )]
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
    /// SMTP server port (587 for STARTTLS submission, 465 for TLS).
    #[arg(long, env = "SMTP_PORT", default_value_t = 25)]
    pub smtp_port: u16,
    /// starttls, tls or none. `none` with SMTP_USERNAME/SMTP_PASSWORD is
    /// refused unless SMTP_HOST is this machine (127.0.0.0/8, ::1, localhost).
    #[arg(long, env = "SMTP_TLS", default_value = "starttls")]
    pub smtp_tls: String,
    /// The From address of page emails.
    #[arg(long, env = "SMTP_FROM", default_value = "alerting@localhost")]
    pub smtp_from: String,
    /// SMTP login, with SMTP_PASSWORD; unset: no authentication.
    #[arg(long, env = "SMTP_USERNAME", hide_env_values = true)]
    pub smtp_username: Option<String>,
    /// SMTP password (never logged).
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Append console pages to this file instead of stdout (a terminal such
    /// as /dev/tty or /dev/fd/3 works too, which is how `scripts/run.sh`
    /// keeps pages apart from the logs).
    #[arg(long, env = "ALERTING_CONSOLE_FILE")]
    pub console_file: Option<PathBuf>,
    /// How console pages are written: `text` (a block, coloured on a
    /// terminal) or `json` (one line per page). Default: text on stdout,
    /// json into ALERTING_CONSOLE_FILE.
    #[arg(long, env = "ALERTING_CONSOLE_FORMAT", value_enum)]
    pub console_format: Option<Format>,
    /// Written before `alerting` and `runbook` in the commands a page
    /// prints (`/opt/booking/bin/`), so they run as printed. Default: none,
    /// both are on the PATH.
    #[arg(long, env = "ALERTING_PAGE_COMMAND_DIR")]
    pub page_command_dir: Option<PathBuf>,
    /// Where a page goes when its channel keeps failing: console, email or slack.
    #[arg(long, env = "ALERTING_FALLBACK", default_value = "console")]
    pub fallback: String,
    /// Sends of a page before it goes to ALERTING_FALLBACK.
    #[arg(long, env = "ALERTING_MAX_ATTEMPTS", default_value_t = 6)]
    pub max_attempts: i64,
    /// First retry delay; doubles per attempt up to a minute.
    #[arg(long, env = "ALERTING_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// The longest `Retry-After` (Slack's rate limit) waited for; a channel
    /// asking for more fails over to ALERTING_FALLBACK at once.
    #[arg(long, env = "ALERTING_RETRY_AFTER_MAX", default_value = "60s")]
    pub retry_after_max: String,
    /// Base of the runbook links (`<base>/<id>.md`): an http(s) URL or an
    /// absolute directory. Default: the rule file's, else the `runbooks/`
    /// folder of the checkout the binary was built from.
    #[arg(long, env = "RUNBOOK_BASE_URL")]
    pub runbook_base_url: Option<String>,
    /// Grafana's URL, for dashboard links. Default: the rule file's; with
    /// neither, pages carry no dashboard link.
    #[arg(long, env = "GRAFANA_URL")]
    pub grafana_url: Option<String>,
    /// A responder key (reads and changes), named `api-key` on timelines.
    /// With any key set, every API route but /healthz, /metrics and
    /// /openapi.json needs `Authorization: Bearer <key>`. At least 32 bytes.
    #[arg(long, env = "ALERTING_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A read-only key (the GET routes), named `read-key`. At least 32 bytes.
    #[arg(long, env = "ALERTING_READ_KEY", hide_env_values = true)]
    pub read_key: Option<String>,
    /// Named keys: a YAML list of `{name, role: read|responder, sha256}`,
    /// as `alerting keys new` prints them. The file holds no secret.
    #[arg(long, env = "ALERTING_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// The longest silence or maintenance window.
    #[arg(long, env = "ALERTING_SILENCE_MAX", default_value = "7d")]
    pub silence_max: String,
    /// Resolved incidents (timelines and pages included) and ended
    /// silences older than this many days are deleted; 0 keeps them.
    #[arg(long, env = "ALERTING_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// Delivered and failed pages of resolved incidents older than this
    /// many days are deleted; 0 keeps them (until ALERTING_RETENTION_DAYS).
    #[arg(long, env = "ALERTING_OUTBOX_RETENTION_DAYS", default_value_t = 7)]
    pub outbox_retention_days: u32,
    /// A request running longer is answered 503 TIMEOUT.
    #[arg(long, env = "ALERTING_REQUEST_TIMEOUT", default_value = "10s")]
    pub request_timeout: String,
    /// The request head must arrive within this (and a kept-alive
    /// connection may wait this long for its next request).
    #[arg(long, env = "ALERTING_HTTP_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub http_header_read_timeout: String,
    /// The request body must arrive within this after the head, else 408.
    /// Shorter than ALERTING_REQUEST_TIMEOUT.
    #[arg(long, env = "ALERTING_HTTP_BODY_READ_TIMEOUT", default_value = "5s")]
    pub http_body_read_timeout: String,
    /// A connection on which no byte moves either way for this long is closed.
    #[arg(long, env = "ALERTING_HTTP_IDLE_TIMEOUT", default_value = "60s")]
    pub http_idle_timeout: String,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "ALERTING_HTTP_MAX_CONNECTIONS", default_value_t = 1000)]
    pub http_max_connections: usize,
    /// In a group on one PostgreSQL, how long the evaluator's lease lasts
    /// unrenewed: a dead evaluator is replaced this long after its last
    /// renewal (plus up to one interval). At least twice the interval.
    #[arg(long, env = "ALERTING_LEASE_TTL", default_value = "15s")]
    pub lease_ttl: String,
    /// How long a process's claim on a page lasts: a sender that dies
    /// mid-send leaves its page to another process after this. Longer
    /// than a send's 10 s timeout.
    #[arg(long, env = "ALERTING_CLAIM_TIMEOUT", default_value = "60s")]
    pub claim_timeout: String,
    /// Test hook: `after-outbox-write` exits right after a page is stored;
    /// `after-claim` right after a page is claimed, before it is sent.
    #[arg(long, env = "ALERTING_FAILPOINT", hide = true)]
    pub failpoint: Option<String>,
}

/// How [`Server::run`] ends other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The test hook `ALERTING_FAILPOINT` was reached.
    #[error("failpoint {0} reached: stopping as if killed")]
    Failpoint(Failpoint),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("incident store: {0}")]
    Store(#[from] incidents::IncidentError),
    #[error("listening on {0} (ALERTING_LISTEN): {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Rules and roster, loaded and checked against each other.
pub fn load_config(
    rules: Option<&std::path::Path>,
    roster: Option<&std::path::Path>,
) -> Result<(RuleSet, Roster), StartError> {
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
    lease_ttl: Duration,
    listener: tokio::net::TcpListener,
    limits: serving::Limits,
    retention: Retention,
    /// One delivery worker per channel; off only under the test failpoint,
    /// which must exit between storing a page and sending it.
    lanes: bool,
}

impl Server {
    pub async fn build(mut args: ServeArgs) -> Result<Self, StartError> {
        // An empty variable (compose's `${SLACK_WEBHOOK_URL:-}`) means unset.
        for value in [
            &mut args.prometheus_url,
            &mut args.slack_webhook_url,
            &mut args.smtp_host,
            &mut args.smtp_username,
            &mut args.smtp_password,
            &mut args.api_key,
            &mut args.read_key,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        if args.keys_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            args.keys_file = None;
        }
        let keys = Keys::load(args.api_key.as_deref(), args.read_key.as_deref(), args.keys_file.as_deref())
            .map_err(|e| StartError::Config(e.to_string()))?;
        if !args.listen.ip().to_canonical().is_loopback() && !keys.required() {
            return Err(StartError::Config(format!(
                "ALERTING_LISTEN {} is not a loopback address, and no key is set: anyone who reaches it could ack, resolve and silence. \
                 Set ALERTING_API_KEY (a responder key; `alerting keys new` makes one), ALERTING_READ_KEY or ALERTING_KEYS_FILE, \
                 or listen on 127.0.0.1",
                args.listen
            )));
        }
        let (set, roster) = load_config(args.rules.as_deref(), args.roster.as_deref())?;
        let set =
            set.with_links(args.runbook_base_url.clone(), args.grafana_url.clone()).map_err(StartError::Config)?;
        for warning in &set.warnings {
            tracing::warn!(warning, "rule file");
        }
        let interval = match &args.interval {
            Some(i) => promql::parse_duration(i)
                .map_err(|why| StartError::Config(format!("ALERTING_INTERVAL `{i}`: {why}")))?,
            None => set.evaluation_interval,
        }
        .max(Duration::from_secs(1));
        let duration = |setting: &str, text: &str| {
            promql::parse_duration(text).map_err(|why| StartError::Config(format!("{setting} `{text}`: {why}")))
        };
        let silence_max = duration("ALERTING_SILENCE_MAX", &args.silence_max)?;
        let retry_after_max = duration("ALERTING_RETRY_AFTER_MAX", &args.retry_after_max)?;
        let request_timeout = duration("ALERTING_REQUEST_TIMEOUT", &args.request_timeout)?;
        let limits = serving::Limits {
            header_read_timeout: duration("ALERTING_HTTP_HEADER_READ_TIMEOUT", &args.http_header_read_timeout)?,
            body_read_timeout: duration("ALERTING_HTTP_BODY_READ_TIMEOUT", &args.http_body_read_timeout)?,
            idle_timeout: duration("ALERTING_HTTP_IDLE_TIMEOUT", &args.http_idle_timeout)?,
            max_connections: args.http_max_connections.max(1),
        };
        // A body still arriving when the request times out would be our 503
        // instead of the client's 408.
        if limits.body_read_timeout >= request_timeout
            || [limits.header_read_timeout, limits.body_read_timeout, limits.idle_timeout, request_timeout]
                .contains(&Duration::ZERO)
        {
            return Err(StartError::Config(
                "the HTTP timeouts must be above zero, and ALERTING_HTTP_BODY_READ_TIMEOUT shorter than ALERTING_REQUEST_TIMEOUT".into(),
            ));
        }
        let engine = Engine::new(set.rules.clone()).with_inhibitions(set.inhibit_rules.clone());
        let exprs: Vec<String> = engine.expressions().into_iter().map(str::to_owned).collect();
        let timeout = interval.min(Duration::from_secs(10));
        let source = match &args.prometheus_url {
            Some(url) => Source::prometheus(url, timeout),
            None => {
                let targets = args
                    .scrape
                    .iter()
                    .map(|t| {
                        // Only the job: the URL may hold credentials.
                        let (job, url) = t.split_once('=').ok_or_else(|| {
                            StartError::Config("ALERTING_SCRAPE entries must be job=url, comma separated".into())
                        })?;
                        Ok(Target { job: job.trim().into(), url: url.trim().into() })
                    })
                    .collect::<Result<Vec<_>, StartError>>()?;
                Source::scrape(targets, &exprs.iter().map(String::as_str).collect::<Vec<_>>(), timeout)
                    .map_err(|e| StartError::Config(e.to_string()))?
            }
        };
        let channels = Channels {
            slack: args.slack_webhook_url.as_ref().map(|url| Notifier::Slack(Slack::new(url, SEND_TIMEOUT))),
            email: match &args.smtp_host {
                Some(host) => Some(Notifier::Email(
                    email::Email::new(email_config(&args, host)?)
                        .map_err(|e| StartError::Config(format!("email: {e}")))?,
                )),
                None => None,
            },
            console: Notifier::Console(match (&args.console_file, args.console_format) {
                (Some(path), format) => Console::file(path).with_format(format.unwrap_or(Format::Json)),
                (None, Some(Format::Json)) => {
                    return Err(StartError::Config("ALERTING_CONSOLE_FORMAT=json needs ALERTING_CONSOLE_FILE".into()));
                }
                (None, _) => Console::stdout(),
            }),
        };
        let fallback = Channel::parse(&args.fallback).ok_or_else(|| {
            StartError::Config(format!("ALERTING_FALLBACK must be console, email or slack, not {:?}", args.fallback))
        })?;
        if !channels.configured().contains(&fallback) {
            return Err(StartError::Config(format!(
                "ALERTING_FALLBACK is {fallback}, which is not configured (set {})",
                if fallback == Channel::Email { "SMTP_HOST" } else { "SLACK_WEBHOOK_URL" }
            )));
        }
        let failpoint = args.failpoint.as_deref().map(Failpoint::try_from).transpose().map_err(StartError::Config)?;
        let lease_ttl = duration("ALERTING_LEASE_TTL", &args.lease_ttl)?;
        if lease_ttl < interval * 2 {
            return Err(StartError::Config(format!(
                "ALERTING_LEASE_TTL ({} s) must be at least twice the evaluation interval ({} s): the evaluator renews its lease once per evaluation",
                lease_ttl.as_secs_f64(),
                interval.as_secs_f64()
            )));
        }
        let claim_timeout = duration("ALERTING_CLAIM_TIMEOUT", &args.claim_timeout)?;
        if claim_timeout <= SEND_TIMEOUT {
            return Err(StartError::Config(format!(
                "ALERTING_CLAIM_TIMEOUT ({} s) must be longer than a send's {} s timeout, or a slow send could be taken over and sent twice",
                claim_timeout.as_secs_f64(),
                SEND_TIMEOUT.as_secs()
            )));
        }
        let command_prefix = match &args.page_command_dir {
            Some(dir) if !dir.is_absolute() => {
                return Err(StartError::Config(format!(
                    "ALERTING_PAGE_COMMAND_DIR `{}` must be absolute, or the commands work from one directory only",
                    dir.display()
                )));
            }
            Some(dir) => format!("{}/", dir.display().to_string().trim_end_matches('/')),
            None => String::new(),
        };
        let config = Config {
            runbook_base_url: set.runbook_base_url.clone(),
            dashboard_base_url: set.dashboard_base_url.clone(),
            command_prefix,
            max_attempts: args.max_attempts.max(1),
            retry_base: Duration::from_millis(args.retry_base_ms.max(1)),
            retry_max: Duration::from_secs(60),
            retry_after_max,
            fallback,
            failpoint,
            claim_timeout,
            grouping: set.grouping.clone(),
        };
        let days = |n: u32| (n > 0).then(|| Duration::from_secs(u64::from(n) * 86_400));
        let retention = Retention { incidents: days(args.retention_days), outbox: days(args.outbox_retention_days) };
        // Bind before the store: a taken port must not leave a new empty
        // `alerting.db` behind.
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.map_err(|e| StartError::Bind(args.listen, e))?;
        let store = incidents::Store::connect(&args.database_url).await?;
        let service = Service::new(store, roster, set.rules.clone(), channels, config, Metrics::new());
        let state = Arc::new(AppState {
            service,
            engine: std::sync::Mutex::new(engine),
            wake: tokio::sync::Notify::new(),
            keys,
            silence_max,
            request_timeout,
        });
        // After a page is written, one loop sends (a lane could send it before
        // the process stops).
        let lanes = failpoint != Some(Failpoint::AfterOutboxWrite);
        Ok(Self { state, source, exprs, interval, lease_ttl, listener, limits, retention, lanes })
    }

    /// See [`Service::on_failpoint`]: the binary exits at the failpoint.
    pub fn on_failpoint(&self, hook: fn(Failpoint)) {
        self.state.service.on_failpoint(hook);
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Evaluates, delivers and serves the API until `shutdown` completes;
    /// then stops taking connections, lets requests in flight finish, stops
    /// the loops, and closes the store (which waits for sends in flight).
    ///
    /// A failpoint ends it at once with [`RunError::Failpoint`], skipping
    /// every graceful step (the evaluator is aborted with its lease held;
    /// the lanes are left running, and the binary exits before they matter:
    /// its [`Server::on_failpoint`] hook exits at the point itself).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        let Server { state, mut source, exprs, interval, lease_ttl, listener, limits, retention, lanes } = self;
        let source_kind = source.kind();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let evaluator = {
            let state = state.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut lease: Option<Fence> = None;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => tick(&state, &mut lease, lease_ttl, &mut source, &exprs).await,
                        _ = stop.changed() => break,
                    }
                }
                // A clean stop hands evaluation over at once.
                if let Some(fence) = lease {
                    state.service.metrics.leader.set(0);
                    if let Err(e) = state.service.store.release(&fence).await {
                        tracing::warn!(error = %e, "releasing the evaluator lease");
                    }
                }
            })
        };
        if lanes {
            spawn_lanes(&state);
        } else {
            spawn_serial_delivery(&state, stop_rx.clone());
        }
        spawn_retention(&state, retention);
        tracing::info!(addr = %listener.local_addr()?, source = source_kind, "alerting service listening");
        let serve = serving::serve(
            listener,
            http::router(state.clone()),
            limits,
            state.service.metrics.connections.clone(),
            shutdown,
        );
        let served = tokio::select! {
            served = serve => served,
            point = state.service.crashed() => {
                // Before `stop_tx` drops: the evaluator must not wake to
                // release its lease, as a killed process would not.
                evaluator.abort();
                return Err(RunError::Failpoint(point));
            }
        };
        let _ = stop_tx.send(true);
        let _ = evaluator.await;
        state.service.store.close().await;
        Ok(served?)
    }
}

/// Under the test failpoint only: one loop delivers every channel's pages
/// after each wake, so the process exits between storing a page and
/// sending it (a lane could send it in between).
fn spawn_serial_delivery(state: &Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let now = Utc::now().timestamp_millis();
            if let Err(e) = state.service.deliver(now).await {
                tracing::error!(error = %e, "delivering pages");
            }
            let next = state.service.store.next_due().await.ok().flatten();
            let wait = next.map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t - Utc::now().timestamp_millis()).clamp(0, 1000) as u64)
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = state.wake.notified() => {}
                _ = stop.changed() => break,
            }
        }
    });
}

/// The email settings, refusing credentials in plain text to another
/// machine: SMTP AUTH over `none` hands the password to the network.
fn email_config(args: &ServeArgs, host: &str) -> Result<email::EmailConfig, StartError> {
    let tls = match args.smtp_tls.as_str() {
        "none" => email::Tls::None,
        "starttls" => email::Tls::StartTls,
        "tls" => email::Tls::Tls,
        other => return Err(StartError::Config(format!("SMTP_TLS must be starttls, tls or none, not {other:?}"))),
    };
    let credentials = args.smtp_username.is_some() || args.smtp_password.is_some();
    if tls == email::Tls::None && credentials && !is_this_machine(host) {
        return Err(StartError::Config(format!(
            "SMTP_TLS is none but SMTP_USERNAME/SMTP_PASSWORD are set: the password would cross the network to {host} in plain text. \
             Use SMTP_TLS=starttls or tls (plain text is allowed only to 127.0.0.0/8, ::1 or localhost)"
        )));
    }
    Ok(email::EmailConfig {
        host: host.to_owned(),
        port: args.smtp_port,
        tls,
        from: args.smtp_from.clone(),
        username: args.smtp_username.clone(),
        password: args.smtp_password.clone(),
    })
}

/// `localhost`, 127.0.0.0/8 or ::1 (bracketed or not).
fn is_this_machine(host: &str) -> bool {
    let host = host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// How long an idle lane sleeps when nothing is due: its bell wakes it
/// for new pages, this only bounds how late a retry can be picked up.
const LANE_IDLE: Duration = Duration::from_secs(1);
/// How often retention runs (and once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// One worker per channel, each sending only its own pages, so a channel
/// that hangs delays nobody else. They stop when the store closes
/// (the end of [`Server::run`]), which waits for their sends in flight.
fn spawn_lanes(state: &Shared) {
    state.service.use_lane_workers();
    for channel in Channel::ALL {
        let state = state.clone();
        tokio::spawn(async move {
            let service = &state.service;
            loop {
                if let Err(e) = service.deliver_channel(channel, Utc::now().timestamp_millis()).await {
                    tracing::error!(channel = channel.as_str(), error = %e, "delivering pages");
                }
                let next = service.store.next_due_on(channel.as_str()).await.ok().flatten();
                let wait = next.map_or(LANE_IDLE, |t| {
                    let ms = t.saturating_sub(Utc::now().timestamp_millis()).clamp(0, LANE_IDLE.as_millis() as i64);
                    Duration::from_millis(ms as u64)
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = service.rung(channel) => {}
                    _ = service.store.closed() => break,
                }
            }
        });
    }
}

/// Deletes old incidents, timelines, pages and silences, at start and then
/// hourly, until the store closes.
fn spawn_retention(state: &Shared, policy: Retention) {
    if policy.incidents.is_none() && policy.outbox.is_none() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let service = &state.service;
        loop {
            match service.store.purge(&policy, Utc::now().timestamp_millis()).await {
                Ok(purged) => {
                    let counted = [
                        ("incidents", purged.incidents),
                        ("timeline", purged.timeline),
                        ("outbox", purged.outbox),
                        ("silences", purged.silences),
                    ];
                    for (table, n) in counted {
                        service.metrics.retention_deleted.with_label_values(&[table]).inc_by(n);
                    }
                    if counted.iter().any(|(_, n)| *n > 0) {
                        tracing::info!(?purged, "retention deleted old rows");
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_EVERY) => {}
                _ = service.store.closed() => break,
            }
        }
    });
}

/// The most open incidents a new evaluator takes up (far above any real
/// count; the API lists no more either).
const OPEN_INCIDENTS_MAX: i64 = 10_000;

/// The timeout of one send on any channel; claims must outlast it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One tick of the evaluator loop. The process holding the lease evaluates
/// and renews it (saving the engine's state); the others try to take it,
/// and meanwhile mirror the evaluator's saved state, so `GET /v1/alerts`
/// and the still-firing check answer the same on every instance.
///
/// Any failure to write or renew gives the lease up locally: the next tick
/// takes it again (this process may, at once) from the last saved state, so
/// transitions whose writes failed are made again rather than lost.
async fn tick(state: &AppState, lease: &mut Option<Fence>, ttl: Duration, source: &mut Source, exprs: &[String]) {
    let store = &state.service.store;
    let metrics = &state.service.metrics;
    if lease.is_none() {
        match store.acquire(ttl, store.is_sqlite()).await {
            Ok(Some(taken)) => {
                if let (Some(saved), Ok(mut engine)) = (&taken.state, state.engine.lock()) {
                    engine.restore(saved);
                }
                if let Err(e) = adopt_open_incidents(state).await {
                    // Evaluating without them could leave an incident open
                    // for good; the lease is taken again next tick.
                    tracing::warn!(error = %e, "cannot read the open incidents; not evaluating this tick");
                    store.release(&taken.fence).await.ok();
                    return;
                }
                tracing::info!(
                    epoch = taken.fence.epoch,
                    instance = store.instance(),
                    "this process now evaluates the rules"
                );
                metrics.leader.set(1);
                metrics.leader_changes.inc();
                *lease = Some(taken.fence);
            }
            Ok(None) => {
                metrics.leader.set(0);
                match store.evaluator().await {
                    Ok(Some(current)) => {
                        if let (Some(saved), Ok(mut engine)) = (&current.state, state.engine.lock()) {
                            engine.restore(saved);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the evaluator's state"),
                }
                publish_states(state);
                return;
            }
            Err(e) => {
                metrics.leader.set(0);
                tracing::warn!(error = %e, "cannot reach the incident store to take the evaluator lease");
                return;
            }
        }
    }
    let Some(fence) = lease.clone() else { return };
    // One trace per evaluation: its query, its recording, and the pages it
    // writes (whose deliveries continue the trace) hang under this span.
    let span = tracing::info_span!(
        "evaluation",
        otel.name = "evaluate rules",
        alerting.epoch = fence.epoch,
        alerting.expressions = exprs.len(),
        alerting.transitions = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let evaluated = evaluate_once(state, source, exprs, Some(&fence)).instrument(span.clone()).await;
    if evaluated.is_err() {
        span.record("error.type", "not_recorded");
    }
    drop(span);
    let outcome = match evaluated {
        Ok(()) => {
            // Renewed only with the state saved: a lease renewed over an
            // empty snapshot would hand the next evaluator nothing.
            match state
                .engine
                .lock()
                .map_err(|_| "the engine's lock is poisoned".to_owned())
                .and_then(|e| e.snapshot().map_err(|e| format!("encoding the engine's state: {e}")))
            {
                Ok(snapshot) => store.renew(&fence, ttl, &snapshot).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                epoch = fence.epoch,
                "the evaluator lease passed to another process; this one stops evaluating"
            );
            metrics.leader.set(0);
            *lease = None;
        }
        Err(e) => {
            tracing::warn!(epoch = fence.epoch, error = %e, "evaluation not recorded; giving the lease up to take it again from the last saved state");
            metrics.leader.set(0);
            *lease = None;
        }
    }
}

/// Holds firing, in the engine's memory, every open incident's alert: see
/// [`crate::engine::Engine::adopt`].
async fn adopt_open_incidents(state: &AppState) -> Result<(), ServiceError> {
    let open = state.service.store.list_open(OPEN_INCIDENTS_MAX).await?;
    let keys = open.into_iter().map(|i| (AlertKey { rule_id: i.rule_id, labels: i.labels }, i.severity, i.started_at));
    let adopted = match state.engine.lock() {
        Ok(mut engine) => engine.adopt(keys),
        Err(_) => return Ok(()),
    };
    if !adopted.is_empty() {
        tracing::warn!(
            alerts = ?adopted,
            "open incidents the saved state did not hold firing are taken up as firing, to resolve when they clear"
        );
    }
    Ok(())
}

/// `alerting_rule_state` from the engine's current memory.
fn publish_states(state: &AppState) {
    let (statuses, rules) = match state.engine.lock() {
        Ok(e) => (e.statuses(), e.rules().iter().map(|r| (r.id.clone(), e.without_data(&r.id))).collect::<Vec<_>>()),
        Err(_) => return,
    };
    let metrics = &state.service.metrics;
    for (id, without_data) in &rules {
        let phase = statuses.iter().filter(|s| &s.key.rule_id == id).map(|s| s.phase).max().unwrap_or(Phase::Inactive);
        let current = if *without_data { "no_data" } else { phase.as_str() };
        for state_name in ["inactive", "pending", "firing", "no_data"] {
            metrics.rule_state.with_label_values(&[id, state_name]).set(if state_name == current { 1.0 } else { 0.0 });
        }
    }
}

/// One evaluation: query, step the state machine, record, page. With a
/// fence, every write holds only under that lease.
pub async fn evaluate_once(
    state: &AppState,
    source: &mut Source,
    exprs: &[String],
    fence: Option<&Fence>,
) -> Result<(), ServiceError> {
    let started = std::time::Instant::now();
    let now = Utc::now().timestamp_millis();
    let refs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let query = tracing::info_span!(
        "rules query",
        otel.name = %format!("query {}", source.kind()),
        alerting.expressions = refs.len(),
    );
    let results = match source.evaluate(&refs, now).instrument(query).await {
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
    let transitions = match state.engine.lock() {
        Ok(mut e) => e.evaluate(&results, now),
        Err(_) => return Ok(()),
    };
    state
        .service
        .metrics
        .evaluation_seconds
        .with_label_values(&[source.kind()])
        .observe(started.elapsed().as_secs_f64());
    state.service.metrics.scrape_series_dropped.inc_by(source.take_dropped_series());
    publish_states(state);
    for t in &transitions {
        tracing::info!(transition = ?t, "alert transition");
    }
    tracing::Span::current().record("alerting.transitions", transitions.len());
    let record = tracing::info_span!("record transitions", alerting.transitions = transitions.len());
    let applied = match fence {
        Some(fence) => state.service.apply_fenced(fence, transitions, now).instrument(record).await,
        None => state.service.apply(transitions, now).instrument(record).await,
    };
    state.wake.notify_one();
    applied.inspect_err(|e| tracing::error!(error = %e, "recording incidents"))
}

#[cfg(test)]
mod tests {
    use super::is_this_machine;

    #[test]
    fn only_loopback_hosts_are_this_machine() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.3.2.1", "::1", "[::1]", "::ffff:127.0.0.1"] {
            assert!(is_this_machine(host), "{host}");
        }
        for host in ["smtp.example.com", "10.0.0.1", "0.0.0.0", "::", "localhost.example.com", "128.0.0.1"] {
            assert!(!is_this_machine(host), "{host}");
        }
    }
}
