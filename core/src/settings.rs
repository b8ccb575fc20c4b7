//! Service settings: laptop defaults, overridden by environment variables.
//!
//! Every knob an operator may need during a sale is here, so that nothing is
//! hidden in code. `Settings::from_env` is the only place that reads the
//! environment; everything else receives a `Settings`.

use std::{fmt, net::SocketAddr, time::Duration};

use crate::domain::{client_ip::TrustedProxies, tokens::TokenKey};

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A connection URL as it may be printed: the password in its user part
/// (`postgres://user:***@host/db`) and any `password=` parameter become
/// `***`, so a command can say which database it used without leaking the
/// secret.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_len = out[authority_start..].find(['/', '?', '#']).unwrap_or(out.len() - authority_start);
        let authority = &out[authority_start..authority_start + authority_len];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            out.replace_range(authority_start + colon + 1..authority_start + at, "***");
        }
    }
    if let Some(query_start) = out.find('?') {
        let query: Vec<String> = out[query_start + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.replace_range(query_start + 1.., &query.join("&"));
    }
    out
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `BOOKING_LISTEN`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `DATABASE_URL`; `sqlite://booking.db` (a file next to the process) when unset.
    pub database_url: Secret,
    /// Pool size for PostgreSQL (`DATABASE_MAX_CONNECTIONS`, default 16).
    /// SQLite always uses one connection: it has one writer anyway.
    pub database_max_connections: u32,
    /// `DATABASE_READ_URL`: a PostgreSQL streaming replica for the catalogue
    /// (concerts, performances, seat maps), used while it is within
    /// `database_read_max_lag`; unset, every read goes to `DATABASE_URL`.
    pub database_read_url: Option<Secret>,
    /// `DATABASE_READ_MAX_LAG_SECS`, default 5: past it (or while the replica
    /// does not answer) catalogue reads go to the primary.
    pub database_read_max_lag: Duration,
    /// `REDIS_URL`; the in-process queue when unset. `redis://host:port` is
    /// one node; `redis+cluster://host:port,host:port,…` a Redis Cluster.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key (`REDIS_KEY_PREFIX`, default `booking`).
    pub redis_key_prefix: String,
    /// `ADMIN_KEY`, header `X-Admin-Key` for `/v1/admin/*`.
    pub admin_key: Secret,
    /// `TOKEN_SECRET`, the HMAC key for user and queue tokens.
    pub token_secret: Secret,
    /// `TOKEN_SECRET_PREVIOUS`: the key `TOKEN_SECRET` replaced. Tokens it
    /// signed still verify; only `TOKEN_SECRET` signs. A leaked key is
    /// rotated without logging everyone out: move it here, set a new one,
    /// and remove it once the longest token lifetime has passed.
    pub token_secret_previous: Option<Secret>,
    /// `USER_TOKEN_TTL_SECS`, default 24 h.
    pub user_token_ttl: Duration,
    /// `HOLD_SECS`, default 300.
    pub hold_duration: Duration,
    /// `MAX_HOLDS_PER_USER` per performance, default 4.
    pub max_holds_per_user: i64,
    /// `ADMISSION_BATCH`: users admitted per interval and concert, default 500.
    pub admission_batch: i64,
    /// `ADMISSION_INTERVAL_SECS`, default 15.
    pub admission_interval: Duration,
    /// `ADMISSION_MAX_ACTIVE`: active users per concert at once, default 20000.
    pub admission_max_active: i64,
    /// `ACTIVE_WINDOW_SECS`: how long an admitted user stays active, default 600.
    pub active_window: Duration,
    /// `SWEEP_INTERVAL_SECS`: how often expired holds are released, default 5.
    pub sweep_interval: Duration,
    /// `SWEEP_BATCH`: holds released per sweep statement, default 500.
    pub sweep_batch: i64,
    /// `SHUTDOWN_GRACE_SECS`: how long SIGTERM waits for in-flight requests, default 10.
    pub shutdown_grace: Duration,
    /// `REQUEST_TIMEOUT_SECS`, default 10.
    pub request_timeout: Duration,
    /// `QUEUE_ENTRY_RATE_LIMIT`: queue entries per second this instance
    /// accepts; unset means no limit. Changeable at run time.
    pub queue_entry_rate_limit: Option<u32>,
    /// `HTTP_HEADER_READ_TIMEOUT_SECS` (10), `HTTP_BODY_READ_TIMEOUT_SECS`
    /// (5), `HTTP_IDLE_TIMEOUT_SECS` (60) and `HTTP_MAX_CONNECTIONS`
    /// (10000): what the listener allows a client (see the `serving` crate).
    pub http: serving::Limits,
    /// `SIGNUP_RATE_PER_MINUTE`: sign-ups per client IP and minute (bursts
    /// of as many), default 20; `off` lifts the limit.
    pub signup_rate_per_minute: Option<u32>,
    /// `TRUSTED_PROXIES`: addresses or CIDRs whose `X-Forwarded-For` names
    /// the real client; unset, the peer address is the client.
    pub trusted_proxies: TrustedProxies,
    /// `IDEMPOTENCY_KEY_TTL_SECS`: how long a stored `Idempotency-Key`
    /// replays its first result, default 24 h. Older keys are deleted and
    /// may be used afresh.
    pub idempotency_ttl: Duration,
}

/// The development defaults are public knowledge, so a server refuses to use
/// them outside `127.0.0.1` (see `Settings::validate`).
pub const DEV_ADMIN_KEY: &str = "dev-admin-key";
pub const DEV_TOKEN_SECRET: &str = "dev-token-secret-change-me";

/// Off loopback, `ADMIN_KEY` and `TOKEN_SECRET` must be at least this long:
/// 32 random bytes (`openssl rand -base64 32` gives 44 characters) cannot be
/// guessed, a word can.
pub const MIN_SECRET_BYTES: usize = 32;

/// Every value of `ADMIN_KEY` or `TOKEN_SECRET` this repository publishes
/// (the dev defaults, old compose placeholders, examples in docs). Anyone who
/// has read the repository knows them, so they are refused off loopback
/// whatever their length. A test scans the repository for secrets it does
/// not list.
pub const PUBLIC_SECRETS: &[&str] = &[DEV_ADMIN_KEY, DEV_TOKEN_SECRET, "change-me-admin", "change-me-secret"];

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            database_url: Secret::new("sqlite://booking.db"),
            database_max_connections: 16,
            database_read_url: None,
            database_read_max_lag: Duration::from_secs(5),
            redis_url: None,
            redis_key_prefix: "booking".into(),
            admin_key: Secret::new(DEV_ADMIN_KEY),
            token_secret: Secret::new(DEV_TOKEN_SECRET),
            token_secret_previous: None,
            user_token_ttl: Duration::from_secs(24 * 3600),
            hold_duration: Duration::from_secs(300),
            max_holds_per_user: 4,
            admission_batch: 500,
            admission_interval: Duration::from_secs(15),
            admission_max_active: 20_000,
            active_window: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(5),
            sweep_batch: 500,
            shutdown_grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            queue_entry_rate_limit: None,
            http: serving::Limits::default(),
            signup_rate_per_minute: Some(20),
            trusted_proxies: TrustedProxies::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("setting {name}: {problem}")]
pub struct SettingsError {
    pub name: &'static str,
    pub problem: String,
}

/// One setting as the command line knows it: its environment variable,
/// the flag that may give it instead, and its help (with the default).
struct Declared {
    env: &'static str,
    flag: &'static str,
    help: &'static str,
    /// Never shown in `--help` from the environment.
    secret: bool,
}

const fn setting(env: &'static str, flag: &'static str, help: &'static str) -> Declared {
    Declared { env, flag, help, secret: false }
}

const fn secret(env: &'static str, flag: &'static str, help: &'static str) -> Declared {
    Declared { env, flag, help, secret: true }
}

/// Every setting, once: `booking --help` lists them (clap, each with its
/// environment variable, as alerting's settings are), and
/// [`Settings::from_lookup`] turns their values into a [`Settings`] with the
/// same checks and messages whether they came from a flag or the
/// environment. A unit test keeps this list and `from_lookup` equal.
const SETTINGS: &[Declared] = &[
    setting("BOOKING_LISTEN", "listen", "Listen address [default: 127.0.0.1:8080]"),
    secret("DATABASE_URL", "database-url", "postgres://… or sqlite://… [default: sqlite://booking.db]"),
    setting("DATABASE_MAX_CONNECTIONS", "database-max-connections", "PostgreSQL pool size [default: 16]"),
    secret("DATABASE_READ_URL", "database-read-url", "A PostgreSQL streaming replica for catalogue reads"),
    setting(
        "DATABASE_READ_MAX_LAG_SECS",
        "database-read-max-lag-secs",
        "Past this replica lag, catalogue reads go to the primary [default: 5]",
    ),
    secret("REDIS_URL", "redis-url", "redis://… or redis+cluster://…,… [default: the in-process queue]"),
    setting("REDIS_KEY_PREFIX", "redis-key-prefix", "Prefix of every Redis key [default: booking]"),
    secret("ADMIN_KEY", "admin-key", "X-Admin-Key for /v1/admin/* [default: dev-admin-key, loopback only]"),
    secret("TOKEN_SECRET", "token-secret", "HMAC key of user and queue tokens [default: a dev key, loopback only]"),
    secret("TOKEN_SECRET_PREVIOUS", "token-secret-previous", "The key TOKEN_SECRET replaced: its tokens still verify"),
    setting("USER_TOKEN_TTL_SECS", "user-token-ttl-secs", "Bearer token lifetime [default: 86400]"),
    setting("HOLD_SECS", "hold-secs", "How long a seat hold lasts unpaid [default: 300]"),
    setting("MAX_HOLDS_PER_USER", "max-holds-per-user", "Live holds per user and performance [default: 4]"),
    setting("ADMISSION_BATCH", "admission-batch", "Users admitted per concert at each tick [default: 500]"),
    setting("ADMISSION_INTERVAL_SECS", "admission-interval-secs", "Time between admission ticks [default: 15]"),
    setting("ADMISSION_MAX_ACTIVE", "admission-max-active", "Admitted users per concert at once [default: 20000]"),
    setting("ACTIVE_WINDOW_SECS", "active-window-secs", "How long an admitted user stays active [default: 600]"),
    setting("SWEEP_INTERVAL_SECS", "sweep-interval-secs", "How often expired holds are released [default: 5]"),
    setting("SWEEP_BATCH", "sweep-batch", "Holds released per sweep statement [default: 500]"),
    setting("SHUTDOWN_GRACE_SECS", "shutdown-grace-secs", "How long SIGTERM drains requests [default: 10]"),
    setting("REQUEST_TIMEOUT_SECS", "request-timeout-secs", "A longer request gets 503 TIMEOUT [default: 10]"),
    setting(
        "HTTP_HEADER_READ_TIMEOUT_SECS",
        "http-header-read-timeout-secs",
        "The request head must arrive within this [default: 10]",
    ),
    setting(
        "HTTP_BODY_READ_TIMEOUT_SECS",
        "http-body-read-timeout-secs",
        "The body must arrive within this, else 408; below REQUEST_TIMEOUT_SECS [default: 5]",
    ),
    setting("HTTP_IDLE_TIMEOUT_SECS", "http-idle-timeout-secs", "A connection idle this long is closed [default: 60]"),
    setting("HTTP_MAX_CONNECTIONS", "http-max-connections", "Connections served at once [default: 10000]"),
    setting(
        "SIGNUP_RATE_PER_MINUTE",
        "signup-rate-per-minute",
        "Sign-ups per client address and minute; `off` lifts it [default: 20]",
    ),
    setting("TRUSTED_PROXIES", "trusted-proxies", "Addresses or CIDRs whose X-Forwarded-For names the client"),
    setting(
        "IDEMPOTENCY_KEY_TTL_SECS",
        "idempotency-key-ttl-secs",
        "How long an Idempotency-Key replays its first result [default: 86400]",
    ),
    setting("QUEUE_ENTRY_RATE_LIMIT", "queue-entry-rate-limit", "Queue entries per second this instance accepts"),
];

/// The settings' values as the command line parsed them (a flag, else its
/// environment variable); [`Settings::from_args`] checks them.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    values: std::collections::BTreeMap<&'static str, String>,
}

impl clap::FromArgMatches for SettingsArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let values =
            SETTINGS.iter().filter_map(|s| matches.get_one::<String>(s.env).map(|v| (s.env, v.clone()))).collect();
        Ok(Self { values })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for SettingsArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        SETTINGS.iter().fold(command, |command, s| {
            command.arg(
                clap::Arg::new(s.env)
                    .long(s.flag)
                    .env(s.env)
                    .hide_env_values(s.secret)
                    .value_name("VALUE")
                    .help(s.help)
                    .global(true)
                    .help_heading("Settings (flag or environment variable)"),
            )
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl Settings {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by what the command line parsed (flags, else
    /// the environment), with the same checks as [`Settings::from_env`].
    pub fn from_args(args: &SettingsArgs) -> Result<Self, SettingsError> {
        Self::from_lookup(|k| args.values.get(k).cloned())
    }

    /// Defaults overridden by `lookup`; tests pass a map instead of the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut s = Self::default();
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("BOOKING_LISTEN") {
            s.listen = parse(&v, "BOOKING_LISTEN")?;
        }
        if let Some(v) = get("DATABASE_URL") {
            s.database_url = Secret::new(v);
        }
        if let Some(v) = get("DATABASE_MAX_CONNECTIONS") {
            s.database_max_connections = positive(&v, "DATABASE_MAX_CONNECTIONS")?;
        }
        s.database_read_url = get("DATABASE_READ_URL").map(Secret::new);
        s.redis_url = get("REDIS_URL").map(Secret::new);
        if let Some(v) = get("REDIS_KEY_PREFIX") {
            s.redis_key_prefix = v;
        }
        if let Some(v) = get("ADMIN_KEY") {
            s.admin_key = Secret::new(v);
        }
        if let Some(v) = get("TOKEN_SECRET") {
            s.token_secret = Secret::new(v);
        }
        s.token_secret_previous = get("TOKEN_SECRET_PREVIOUS").map(Secret::new);
        let secs = |name: &'static str, into: &mut Duration| -> Result<(), SettingsError> {
            if let Some(v) = get(name) {
                *into = Duration::from_secs(positive::<u64>(&v, name)?);
            }
            Ok(())
        };
        secs("USER_TOKEN_TTL_SECS", &mut s.user_token_ttl)?;
        secs("HOLD_SECS", &mut s.hold_duration)?;
        secs("DATABASE_READ_MAX_LAG_SECS", &mut s.database_read_max_lag)?;
        secs("ADMISSION_INTERVAL_SECS", &mut s.admission_interval)?;
        secs("ACTIVE_WINDOW_SECS", &mut s.active_window)?;
        secs("SWEEP_INTERVAL_SECS", &mut s.sweep_interval)?;
        secs("SHUTDOWN_GRACE_SECS", &mut s.shutdown_grace)?;
        secs("REQUEST_TIMEOUT_SECS", &mut s.request_timeout)?;
        secs("HTTP_HEADER_READ_TIMEOUT_SECS", &mut s.http.header_read_timeout)?;
        secs("HTTP_BODY_READ_TIMEOUT_SECS", &mut s.http.body_read_timeout)?;
        secs("HTTP_IDLE_TIMEOUT_SECS", &mut s.http.idle_timeout)?;
        secs("IDEMPOTENCY_KEY_TTL_SECS", &mut s.idempotency_ttl)?;
        if let Some(v) = get("HTTP_MAX_CONNECTIONS") {
            s.http.max_connections = positive(&v, "HTTP_MAX_CONNECTIONS")?;
        }
        if let Some(v) = get("SIGNUP_RATE_PER_MINUTE") {
            s.signup_rate_per_minute =
                if v.trim().eq_ignore_ascii_case("off") { None } else { Some(positive(&v, "SIGNUP_RATE_PER_MINUTE")?) };
        }
        if let Some(v) = get("TRUSTED_PROXIES") {
            s.trusted_proxies = v.parse().map_err(|problem| SettingsError { name: "TRUSTED_PROXIES", problem })?;
        }
        let int = |name: &'static str, into: &mut i64| -> Result<(), SettingsError> {
            if let Some(v) = get(name) {
                *into = positive(&v, name)?;
            }
            Ok(())
        };
        int("MAX_HOLDS_PER_USER", &mut s.max_holds_per_user)?;
        int("ADMISSION_BATCH", &mut s.admission_batch)?;
        int("ADMISSION_MAX_ACTIVE", &mut s.admission_max_active)?;
        int("SWEEP_BATCH", &mut s.sweep_batch)?;
        if let Some(v) = get("QUEUE_ENTRY_RATE_LIMIT") {
            s.queue_entry_rate_limit = Some(positive(&v, "QUEUE_ENTRY_RATE_LIMIT")?);
        }
        Ok(s)
    }

    /// The token key: `TOKEN_SECRET` signs, it or `TOKEN_SECRET_PREVIOUS` verifies.
    pub fn token_key(&self) -> TokenKey {
        let key = TokenKey::new(self.token_secret.expose().as_bytes());
        match &self.token_secret_previous {
            Some(previous) => key.with_previous(previous.expose().as_bytes()),
            None => key,
        }
    }

    /// Off loopback, refuses secrets that are short or published; always,
    /// a body deadline the request deadline would cut short.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.listen.ip().is_loopback() {
            let secrets = [
                ("ADMIN_KEY", Some(&self.admin_key)),
                ("TOKEN_SECRET", Some(&self.token_secret)),
                ("TOKEN_SECRET_PREVIOUS", self.token_secret_previous.as_ref()),
            ];
            for (name, secret) in secrets {
                if let Some(secret) = secret {
                    check_secret(name, secret)?;
                }
            }
        }
        if let Some(read) = &self.database_read_url {
            let postgres = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !postgres(read.expose()) || !postgres(self.database_url.expose()) {
                return Err(SettingsError {
                    name: "DATABASE_READ_URL",
                    problem:
                        "is a PostgreSQL replica of a PostgreSQL DATABASE_URL (postgres://…); SQLite has no replicas"
                            .into(),
                });
            }
        }
        if let Some(Some(Err(problem))) = self.redis_url.as_ref().map(|u| crate::queue::cluster_seeds(u.expose())) {
            return Err(SettingsError { name: "REDIS_URL", problem });
        }
        // A body still arriving when the request timeout fires would be
        // answered 503 (our fault, counted by the error-rate SLI) instead of
        // 408 (the client's).
        if self.http.body_read_timeout >= self.request_timeout {
            return Err(SettingsError {
                name: "HTTP_BODY_READ_TIMEOUT_SECS",
                problem: format!("must be shorter than REQUEST_TIMEOUT_SECS ({} s)", self.request_timeout.as_secs()),
            });
        }
        Ok(())
    }
}

/// A secret fit for a listener others can reach. The message never quotes it.
fn check_secret(name: &'static str, secret: &Secret) -> Result<(), SettingsError> {
    let value = secret.expose().trim();
    if PUBLIC_SECRETS.iter().any(|p| p.eq_ignore_ascii_case(value)) {
        return Err(SettingsError {
            name,
            problem: "is a value published in this repository; generate one (openssl rand -base64 32) when listening beyond loopback".into(),
        });
    }
    if value.len() < MIN_SECRET_BYTES {
        return Err(SettingsError {
            name,
            problem: format!(
                "must be at least {MIN_SECRET_BYTES} bytes when listening beyond loopback (it has {}); generate one with openssl rand -base64 32",
                value.len()
            ),
        });
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(v: &str, name: &'static str) -> Result<T, SettingsError>
where
    T::Err: fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| SettingsError { name, problem: format!("{v:?}: {e}") })
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str, name: &'static str) -> Result<T, SettingsError>
where
    T::Err: fmt::Display,
{
    let n: T = parse(v, name)?;
    if n <= T::default() {
        return Err(SettingsError { name, problem: format!("{v:?} must be greater than zero") });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_settings_are_exactly_the_ones_read() {
        let read = std::cell::RefCell::new(Vec::new());
        Settings::from_lookup(|k| {
            read.borrow_mut().push(k.to_owned());
            None
        })
        .unwrap();
        let mut read = read.into_inner();
        read.sort();
        let mut declared: Vec<String> = SETTINGS.iter().map(|s| s.env.to_owned()).collect();
        declared.sort();
        assert_eq!(read, declared);
    }

    #[test]
    fn a_flag_gives_a_setting_as_its_variable_would_and_bad_values_fail_alike() {
        use clap::{Args, FromArgMatches};
        let command = SettingsArgs::augment_args(clap::Command::new("t"));
        let parse = |argv: &[&str]| {
            let matches = command.clone().try_get_matches_from(argv).unwrap();
            Settings::from_args(&SettingsArgs::from_arg_matches(&matches).unwrap())
        };
        let s = parse(&["t", "--hold-secs", "60", "--signup-rate-per-minute", "off"]).unwrap();
        assert_eq!((s.hold_duration, s.signup_rate_per_minute), (Duration::from_secs(60), None));
        let e = parse(&["t", "--hold-secs", "0"]).unwrap_err();
        assert_eq!(e.name, "HOLD_SECS");
    }

    #[test]
    fn environment_overrides_defaults_and_rejects_nonsense() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let s = Settings::from_lookup(env(&[("HOLD_SECS", "60"), ("ADMISSION_BATCH", "7")])).unwrap();
        assert_eq!(s.hold_duration, Duration::from_secs(60));
        assert_eq!(s.admission_batch, 7);
        assert!(s.redis_url.is_none());
        assert_eq!(s.queue_entry_rate_limit, None, "no rate limit unless asked");
        let s = Settings::from_lookup(env(&[("QUEUE_ENTRY_RATE_LIMIT", "200")])).unwrap();
        assert_eq!(s.queue_entry_rate_limit, Some(200));
        assert!(Settings::from_lookup(env(&[("QUEUE_ENTRY_RATE_LIMIT", "0")])).is_err());
        let err = Settings::from_lookup(env(&[("HOLD_SECS", "0")])).unwrap_err();
        assert_eq!(err.name, "HOLD_SECS");
        assert!(Settings::from_lookup(env(&[("BOOKING_LISTEN", "nope")])).is_err());
    }

    /// A fresh 64-character secret: no value written in the repository
    /// may pass the guard.
    fn strong() -> String {
        format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
    }

    fn public(admin: &str, token: &str) -> Settings {
        Settings {
            listen: "0.0.0.0:8080".parse().unwrap(),
            admin_key: Secret::new(admin),
            token_secret: Secret::new(token),
            ..Settings::default()
        }
    }

    #[test]
    fn development_secrets_are_refused_off_loopback() {
        let s = Settings { listen: "0.0.0.0:8080".parse().unwrap(), ..Settings::default() };
        assert_eq!(s.validate().unwrap_err().name, "ADMIN_KEY");
        assert!(format!("{:?}", s.token_secret).contains("***"));
        assert!(Settings::default().validate().is_ok(), "loopback keeps the dev defaults");
    }

    #[test]
    fn off_loopback_every_secret_is_long_and_unpublished() {
        let (a, b) = (strong(), strong());
        assert!(public(&a, &b).validate().is_ok());
        for placeholder in PUBLIC_SECRETS {
            let err = public(placeholder, &b).validate().unwrap_err();
            assert_eq!(err.name, "ADMIN_KEY", "{placeholder}");
            let err = public(&a, placeholder).validate().unwrap_err();
            assert_eq!(err.name, "TOKEN_SECRET", "{placeholder}");
            assert!(err.problem.contains("published"), "{}", err.problem);
        }
        let short = public("change-me-please-0123456789", &b).validate().unwrap_err();
        assert_eq!(short.name, "ADMIN_KEY");
        assert!(
            short.problem.contains("at least 32 bytes") && !short.problem.contains("change-me"),
            "{}",
            short.problem
        );
        let rotated = Settings { token_secret_previous: Some(Secret::new("old")), ..public(&a, &b) };
        assert_eq!(rotated.validate().unwrap_err().name, "TOKEN_SECRET_PREVIOUS");
    }

    #[test]
    fn a_redacted_url_keeps_everything_but_the_password() {
        let cases = [
            ("postgres://postgres:s3cr%40t@127.0.0.1:5432/booking", "postgres://postgres:***@127.0.0.1:5432/booking"),
            ("postgres://postgres@127.0.0.1:5432/booking", "postgres://postgres@127.0.0.1:5432/booking"),
            ("postgres://u:p@h/db?sslmode=require&password=x", "postgres://u:***@h/db?sslmode=require&password=***"),
            ("redis://:hunter2@127.0.0.1:6379", "redis://:***@127.0.0.1:6379"),
            (
                "redis+cluster://:hunter2@127.0.0.1:7001,127.0.0.1:7002",
                "redis+cluster://:***@127.0.0.1:7001,127.0.0.1:7002",
            ),
            ("sqlite://booking.db?mode=rwc", "sqlite://booking.db?mode=rwc"),
            ("sqlite::memory:", "sqlite::memory:"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn the_body_deadline_must_come_before_the_request_deadline() {
        let s = Settings { request_timeout: Duration::from_secs(5), ..Settings::default() };
        assert_eq!(s.validate().unwrap_err().name, "HTTP_BODY_READ_TIMEOUT_SECS");
    }

    #[test]
    fn a_read_replica_and_a_cluster_url_are_checked_at_start() {
        let sqlite_replica =
            Settings { database_read_url: Some(Secret::new("postgres://h/db")), ..Settings::default() };
        assert_eq!(sqlite_replica.validate().unwrap_err().name, "DATABASE_READ_URL", "SQLite has no replica");
        let pg = || Settings { database_url: Secret::new("postgres://p/db"), ..Settings::default() };
        assert!(Settings { database_read_url: Some(Secret::new("postgres://r/db")), ..pg() }.validate().is_ok());
        assert!(Settings { database_read_url: Some(Secret::new("sqlite://x.db")), ..pg() }.validate().is_err());
        let cluster = |url: &str| Settings { redis_url: Some(Secret::new(url)), ..Settings::default() }.validate();
        assert!(cluster("redis+cluster://127.0.0.1:7001,127.0.0.1:7002").is_ok());
        let err = cluster("redis+cluster://127.0.0.1:7001,nohost").unwrap_err();
        assert_eq!(err.name, "REDIS_URL");
        assert!(err.problem.contains("`nohost`"), "{}", err.problem);
        let s = Settings::from_lookup(|k: &str| (k == "DATABASE_READ_MAX_LAG_SECS").then(|| "2".to_owned())).unwrap();
        assert_eq!(s.database_read_max_lag, Duration::from_secs(2));
    }
}
