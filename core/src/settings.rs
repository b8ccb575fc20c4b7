//! Service settings: laptop defaults, overridden by environment variables.
//!
//! Every knob an operator may need during a sale is here, so that nothing is
//! hidden in code. `Settings::from_env` is the only place that reads the
//! environment; everything else receives a `Settings`.

use std::{fmt, net::SocketAddr, time::Duration};

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

#[derive(Debug, Clone)]
pub struct Settings {
    /// `BOOKING_LISTEN`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `DATABASE_URL`; `sqlite://booking.db` (a file next to the process) when unset.
    pub database_url: Secret,
    /// Pool size for PostgreSQL (`DATABASE_MAX_CONNECTIONS`, default 16).
    /// SQLite always uses one connection: it has one writer anyway.
    pub database_max_connections: u32,
    /// `REDIS_URL`; the in-process queue when unset.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key (`REDIS_KEY_PREFIX`, default `booking`).
    pub redis_key_prefix: String,
    /// `ADMIN_KEY`, header `X-Admin-Key` for `/v1/admin/*`.
    pub admin_key: Secret,
    /// `TOKEN_SECRET`, the HMAC key for user and queue tokens.
    pub token_secret: Secret,
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
}

/// The development defaults are public knowledge, so a server refuses to use
/// them outside `127.0.0.1` (see `Settings::validate`).
pub const DEV_ADMIN_KEY: &str = "dev-admin-key";
pub const DEV_TOKEN_SECRET: &str = "dev-token-secret-change-me";

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            database_url: Secret::new("sqlite://booking.db"),
            database_max_connections: 16,
            redis_url: None,
            redis_key_prefix: "booking".into(),
            admin_key: Secret::new(DEV_ADMIN_KEY),
            token_secret: Secret::new(DEV_TOKEN_SECRET),
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("setting {name}: {problem}")]
pub struct SettingsError {
    pub name: &'static str,
    pub problem: String,
}

impl Settings {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
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
        let secs = |name: &'static str, into: &mut Duration| -> Result<(), SettingsError> {
            if let Some(v) = get(name) {
                *into = Duration::from_secs(positive::<u64>(&v, name)?);
            }
            Ok(())
        };
        secs("USER_TOKEN_TTL_SECS", &mut s.user_token_ttl)?;
        secs("HOLD_SECS", &mut s.hold_duration)?;
        secs("ADMISSION_INTERVAL_SECS", &mut s.admission_interval)?;
        secs("ACTIVE_WINDOW_SECS", &mut s.active_window)?;
        secs("SWEEP_INTERVAL_SECS", &mut s.sweep_interval)?;
        secs("SHUTDOWN_GRACE_SECS", &mut s.shutdown_grace)?;
        secs("REQUEST_TIMEOUT_SECS", &mut s.request_timeout)?;
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

    /// Refuses the published development secrets on a non-loopback address.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.listen.ip().is_loopback() {
            if self.admin_key.expose() == DEV_ADMIN_KEY {
                return Err(SettingsError { name: "ADMIN_KEY", problem: "must be set when listening beyond loopback".into() });
            }
            if self.token_secret.expose() == DEV_TOKEN_SECRET {
                return Err(SettingsError { name: "TOKEN_SECRET", problem: "must be set when listening beyond loopback".into() });
            }
        }
        Ok(())
    }
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

    #[test]
    fn development_secrets_are_refused_off_loopback() {
        let s = Settings { listen: "0.0.0.0:8080".parse().unwrap(), ..Settings::default() };
        assert_eq!(s.validate().unwrap_err().name, "ADMIN_KEY");
        assert!(format!("{:?}", s.token_secret).contains("***"));
    }
}
