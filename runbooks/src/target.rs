//! The systems steps act on, where they are, and the connections to them.
//!
//! Targets come from flags or from the environment variables the platform
//! already uses (`DATABASE_URL`, `REDIS_URL`, ...). A target that is not
//! configured skips its steps; one that is configured but unreachable fails
//! them. The alerting service is only ever a fallback source (for a
//! Prometheus step when no Prometheus is configured), so it is not checked
//! before the run: when it cannot answer, the step is skipped and says why. Credentials never leave this module unredacted: [`Redactor`] masks
//! them in everything printed or recorded.
//!
//! The HTTP client ([`http_client`]) speaks http and https (rustls on
//! ring, Mozilla's roots) and follows a redirect only within the origin it
//! was sent to, so the admin key never travels to another host.

use std::{fmt, time::Duration};

use reqwest_tls::{Method, StatusCode, Url, header::LOCATION, redirect};
use serde_json::Value;
use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};

/// The kinds of system a step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Postgres,
    Redis,
    Prometheus,
    Booking,
    Alerting,
}

impl Target {
    pub const ALL: [Target; 5] =
        [Target::Postgres, Target::Redis, Target::Prometheus, Target::Booking, Target::Alerting];

    pub fn name(self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Redis => "redis",
            Target::Prometheus => "prometheus",
            Target::Booking => "booking",
            Target::Alerting => "alerting",
        }
    }

    /// Every target's name, for usage messages: `postgres, redis, ...`.
    pub fn names() -> String {
        Target::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
    }

    /// How to configure it, for "not configured" messages.
    pub fn hint(self) -> &'static str {
        match self {
            Target::Postgres => "set DATABASE_URL or --database-url to a postgres:// URL",
            Target::Redis => "set REDIS_URL or --redis-url",
            Target::Prometheus => "set PROMETHEUS_URL or --prometheus-url",
            Target::Booking => "set BOOKING_URL or --booking-url",
            Target::Alerting => "set ALERTING_URL or --alerting-url",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the targets are. Empty strings count as unset.
#[derive(Clone, Default)]
pub struct Endpoints {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub prometheus_url: Option<String>,
    pub booking_url: String,
    pub admin_key: String,
    pub alerting_url: String,
    pub alerting_api_key: Option<String>,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("prometheus_url", &self.prometheus_url.as_deref().map(redact_url))
            .field("booking_url", &redact_url(&self.booking_url))
            .field("admin_key", &"***")
            .field("alerting_url", &redact_url(&self.alerting_url))
            .field("alerting_api_key", &self.alerting_api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// An optional URL setting as it may be shown, or why `target` has none.
fn configured(url: &Option<String>, target: Target) -> Result<String, String> {
    url.as_deref().filter(|u| !u.is_empty()).map(redact_url).ok_or_else(|| format!("not configured; {}", target.hint()))
}

impl Endpoints {
    /// The URL of `target` as it may be shown, or why it is not configured.
    pub fn describe(&self, target: Target) -> Result<String, String> {
        match target {
            Target::Postgres => match self.database_url.as_deref().filter(|u| !u.is_empty()) {
                Some(url) if is_postgres(url) => Ok(redact_url(url)),
                Some(url) => Err(format!(
                    "DATABASE_URL is not PostgreSQL ({}); {}",
                    url.split(':').next().unwrap_or(""),
                    target.hint()
                )),
                None => Err(format!("not configured; {}", target.hint())),
            },
            Target::Redis => configured(&self.redis_url, target),
            Target::Prometheus => configured(&self.prometheus_url, target),
            Target::Booking => Ok(redact_url(&self.booking_url)),
            Target::Alerting => Ok(redact_url(&self.alerting_url)),
        }
    }

    /// Every secret in the configuration, for [`Redactor`].
    pub fn secrets(&self) -> Vec<String> {
        let mut out = vec![self.admin_key.clone()];
        out.extend(self.alerting_api_key.clone());
        for url in [&self.database_url, &self.redis_url, &self.prometheus_url]
            .into_iter()
            .flatten()
            .chain([&self.booking_url, &self.alerting_url])
        {
            out.extend(url_secrets(url));
        }
        out
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn is_http(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// The password and any `password=` query value of a URL; for http(s), the
/// user name too when it is the only credential (`https://TOKEN@host`).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Ok(parsed) = Url::parse(url) else { return Vec::new() };
    let mut out: Vec<String> = parsed.password().map(|p| p.to_string()).into_iter().collect();
    if is_http(&parsed) && parsed.password().is_none() && !parsed.username().is_empty() {
        out.push(parsed.username().to_string());
        out.push(percent_decode(parsed.username()));
    }
    out.extend(parsed.query_pairs().filter(|(k, _)| is_secret_param(k)).map(|(_, v)| v.into_owned()));
    // Decoded too: that is what a driver's error message would quote.
    if let Some(p) = parsed.password() {
        out.push(percent_decode(p));
    }
    out.retain(|s| !s.is_empty());
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_secret_param(key: &str) -> bool {
    matches!(key.to_ascii_lowercase().as_str(), "password" | "pass" | "sslpassword" | "token" | "key")
}

/// A URL with its password (and password-like query values) replaced by
/// `***`. For http(s) the whole user-info goes (`https://***@host/`): both
/// halves are the Basic credential there, and a token is often the user
/// name. Elsewhere the user stays, since a database role is what an
/// operator needs to see (`postgres://booking:***@db/booking`).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        // Not a URL we can parse: show the scheme only, it may hold anything.
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => "***".into(),
        };
    };
    if is_http(&parsed) && (!parsed.username().is_empty() || parsed.password().is_some()) {
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("***");
    } else if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) { "***".to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Masks known secrets in any text about to be printed or recorded: the
/// backstop for error messages that quote what they were given.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Secrets shorter than 4 characters are not masked by substring (they
    /// would mask ordinary words); URLs are redacted structurally anyway.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.chars().count() >= 4).collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    pub fn value(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (self.text(k), self.value(v))).collect()),
            other => other.clone(),
        }
    }
}

/// Why a step could not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    /// The step's target is not configured: the step is skipped, not failed.
    #[error("{target} {message}")]
    NotConfigured { target: Target, message: String },
    #[error("{target} at {url} is unreachable: {message}")]
    Unreachable { target: Target, url: String, message: String },
    /// The target answered, but not with what the step needs.
    #[error("{0}")]
    Failed(String),
}

impl TargetError {
    pub fn failed(message: impl fmt::Display) -> Self {
        TargetError::Failed(message.to_string())
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// reqwest's own default limit, which a custom policy must enforce itself.
const MAX_REDIRECTS: usize = 10;

/// How long an idle connection may wait for reuse: well under the servers'
/// keep-alive, so a request never races the server closing it.
pub const IDLE_REUSE: Duration = Duration::from_secs(5);

/// The crate's HTTP client, for the targets and for the alerting API.
///
/// A redirect is followed only when it stays on the origin (scheme, host,
/// port) the request was first sent to. One that leaves it is not followed,
/// rather than followed with the credentials stripped: a booking URL that
/// sends us elsewhere is a misconfiguration (an http→https upgrade, a
/// proxy, a moved host), and a runbook that carried on would read state
/// from, or change, a service nobody chose; saying so lets the operator fix
/// the URL. reqwest drops `Authorization` across hosts, but not our
/// `X-Admin-Key`. Callers see the 3xx and report it ([`left_origin`]).
pub fn http_client(connect_timeout: Duration, timeout: Duration) -> Result<reqwest_tls::Client, String> {
    let policy = redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest_tls::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        // Booking closes a kept-alive connection after 10 s idle
        // (HTTP_HEADER_READ_TIMEOUT_SECS): reusing one at that instant, as
        // the second of two samples 10 s apart did, meets a reset.
        .pool_idle_timeout(IDLE_REUSE)
        .redirect(policy)
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", plain(e)))
}

/// For a redirect [`http_client`] did not follow: where it pointed, as an
/// origin only (a Location may carry user-info or a token in its query).
pub fn left_origin(response: &reqwest_tls::Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(LOCATION).and_then(|l| l.to_str().ok());
    Some(match location.and_then(|l| response.url().join(l).ok()) {
        Some(next) => next.origin().ascii_serialization(),
        None => "no usable Location".into(),
    })
}

/// Open connections, made on first use and reused by later steps.
pub struct Ctx {
    pub endpoints: Endpoints,
    http: reqwest_tls::Client,
    pg: Option<sqlx::PgConnection>,
    redis: Option<redis::aio::MultiplexedConnection>,
}

impl Ctx {
    pub fn new(endpoints: Endpoints) -> Result<Self, String> {
        let http = http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT)?;
        Ok(Self { endpoints, http, pg: None, redis: None })
    }

    fn unreachable(&self, target: Target, message: impl fmt::Display) -> TargetError {
        let url = self.endpoints.describe(target).unwrap_or_default();
        TargetError::Unreachable { target, url, message: message.to_string() }
    }

    fn configured(&self, target: Target) -> Result<(), TargetError> {
        self.endpoints.describe(target).map(drop).map_err(|message| TargetError::NotConfigured { target, message })
    }

    /// The PostgreSQL connection, as application `runbook`, with a statement
    /// timeout so a diagnosis query cannot hang behind the locks it looks at.
    pub async fn pg(&mut self) -> Result<&mut sqlx::PgConnection, TargetError> {
        self.configured(Target::Postgres)?;
        if self.pg.is_none() {
            let url = self.endpoints.database_url.clone().unwrap_or_default();
            let options: PgConnectOptions =
                url.parse().map_err(|e| self.unreachable(Target::Postgres, format!("bad URL: {e}")))?;
            let options = options
                .application_name("runbook")
                .options([("statement_timeout", "15s"), ("lock_timeout", "5s")])
                .disable_statement_logging();
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| self.unreachable(Target::Postgres, "timed out connecting"))?
                .map_err(|e| self.unreachable(Target::Postgres, e))?;
            self.pg = Some(conn);
        }
        Ok(self.pg.as_mut().expect("set above"))
    }

    pub async fn redis(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, TargetError> {
        self.configured(Target::Redis)?;
        if self.redis.is_none() {
            let url = self.endpoints.redis_url.clone().unwrap_or_default();
            let client = redis::Client::open(url.as_str())
                .map_err(|e| self.unreachable(Target::Redis, format!("bad URL: {e}")))?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(REQUEST_TIMEOUT));
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| self.unreachable(Target::Redis, e))?;
            self.redis = Some(conn);
        }
        Ok(self.redis.as_mut().expect("set above"))
    }

    /// Prometheus's HTTP API: an instant query's `data.result`, or any other
    /// API path's `data`.
    pub async fn prometheus(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, TargetError> {
        self.configured(Target::Prometheus)?;
        let base = self.endpoints.prometheus_url.clone().unwrap_or_default();
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let response = self.send(Target::Prometheus, self.http.get(&url).query(query)).await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["status"] != "success" {
            let error = body["error"].as_str().unwrap_or("no JSON answer");
            return Err(TargetError::failed(format!("Prometheus answered {status}: {error}")));
        }
        Ok(body["data"].clone())
    }

    /// A plain GET on the booking service (no admin key): status and body.
    pub async fn booking_get(&self, path: &str) -> Result<(StatusCode, String), TargetError> {
        self.get(Target::Booking, &self.endpoints.booking_url, path, None).await
    }

    /// A GET on the alerting service, with `Authorization: Bearer` when an
    /// API key is set: status and body.
    pub async fn alerting_get(&self, path: &str) -> Result<(StatusCode, String), TargetError> {
        self.get(Target::Alerting, &self.endpoints.alerting_url, path, self.endpoints.alerting_api_key.as_deref()).await
    }

    async fn get(
        &self,
        target: Target,
        base: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, String), TargetError> {
        let mut request = self.http.get(format!("{}{path}", base.trim_end_matches('/')));
        if let Some(key) = bearer {
            request = request.bearer_auth(key);
        }
        let response = self.send(target, request).await?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.unreachable(target, plain(e)))?;
        Ok((status, body))
    }

    /// Sends `request` to `target`; a redirect off its origin is an error
    /// that says where it pointed.
    async fn send(
        &self,
        target: Target,
        request: reqwest_tls::RequestBuilder,
    ) -> Result<reqwest_tls::Response, TargetError> {
        // The called service's spans join the step's trace.
        let request = match telemetry::spans::current_context() {
            Some(cx) => request.header("traceparent", cx.traceparent()),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.unreachable(target, plain(e)))?;
        match left_origin(&response) {
            None => Ok(response),
            Some(to) => Err(TargetError::failed(format!(
                "{target} at {} redirected ({}) to another origin, {to}; not followed, so no credentials went there: {} to the service's own address",
                self.endpoints.describe(target).unwrap_or_default(),
                response.status(),
                target.hint()
            ))),
        }
    }

    /// A call to booking's admin API with `X-Admin-Key`; the JSON answer.
    pub async fn booking_admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, TargetError> {
        let url = format!("{}{path}", self.endpoints.booking_url.trim_end_matches('/'));
        let mut request = self.http.request(method.clone(), &url).header("X-Admin-Key", &self.endpoints.admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(Target::Booking, request).await?;
        let status = response.status();
        let json: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            s if s.is_success() => Ok(json),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(TargetError::failed(format!(
                "booking refused the admin key ({status}): set BOOKING_ADMIN_KEY (the service's ADMIN_KEY) or --admin-key"
            ))),
            _ => {
                let message = json["error"]["message"].as_str().unwrap_or("no message");
                Err(TargetError::failed(format!("{method} {path} answered {status}: {message}")))
            }
        }
    }

    /// Checks a target works before anything runs: connects (PostgreSQL,
    /// Redis), asks a trivial query (Prometheus), or — for booking —
    /// checks the admin key when `admin` steps will use it.
    pub async fn check(&mut self, target: Target, admin: bool) -> Result<(), TargetError> {
        match target {
            Target::Postgres => {
                let conn = self.pg().await?;
                let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(conn).await.map_err(TargetError::failed)?;
            }
            Target::Redis => {
                let conn = self.redis().await?;
                let _: String = redis::cmd("PING")
                    .query_async(conn)
                    .await
                    .map_err(|e| TargetError::failed(format!("redis PING: {e}")))?;
            }
            Target::Prometheus => {
                self.prometheus("/api/v1/query", &[("query", "vector(1)")]).await?;
            }
            Target::Booking if admin => {
                self.booking_admin(Method::GET, "/v1/admin/queue/admission", None).await?;
            }
            Target::Booking => {
                let (status, _) = self.booking_get("/healthz").await?;
                if !status.is_success() {
                    return Err(self.unreachable(Target::Booking, format!("/healthz answered {status}")));
                }
            }
            Target::Alerting => {
                let (status, _) = self.alerting_get("/healthz").await?;
                if !status.is_success() {
                    return Err(self.unreachable(Target::Alerting, format!("/healthz answered {status}")));
                }
            }
        }
        Ok(())
    }
}

/// A reqwest error without the URL it carries (the target is named anyway,
/// redacted), so user-info in it cannot reach the output.
pub(crate) fn plain(e: reqwest_tls::Error) -> String {
    let e = e.without_url();
    let mut source = std::error::Error::source(&e);
    let mut detail = String::new();
    // Connecting over plain TCP reads nothing, so bad or missing data while
    // connecting is the TLS handshake (rustls reports through io::Error).
    let mut handshake = false;
    while let Some(s) = source {
        detail = s.to_string();
        handshake |= s.downcast_ref::<std::io::Error>().is_some_and(bad_data);
        source = s.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() && handshake {
        "connection failed: TLS handshake failed"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "answer did not decode"
    } else {
        "request failed"
    };
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}

/// Whether an I/O error is, or wraps, bad or missing data. An io::Error
/// wrapping another is skipped by `source()`, hence the walk by hand.
fn bad_data(io: &std::io::Error) -> bool {
    matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        || io.get_ref().and_then(|inner| inner.downcast_ref::<std::io::Error>()).is_some_and(bad_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_password_parameters() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/booking"), "postgres://app:***@db:5432/booking");
        assert_eq!(redact_url("redis://:hunter22@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(
            redact_url("postgres://db/booking?user=a&password=xyz1"),
            "postgres://db/booking?user=a&password=***"
        );
        assert_eq!(redact_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080/");
        assert_eq!(redact_url("https://ops:pa55word@booking:8443/x"), "https://***@booking:8443/x");
        assert_eq!(redact_url("https://tok3n-abc@booking/"), "https://***@booking/");
        assert_eq!(redact_url("weird://user:pa ss@[bad"), "weird://***");
    }

    #[test]
    fn the_redactor_masks_every_configured_secret_in_text_and_json() {
        let endpoints = Endpoints {
            database_url: Some("postgres://app:s3cret@db/booking".into()),
            redis_url: Some("redis://:r3dispass@cache".into()),
            prometheus_url: None,
            booking_url: "http://b".into(),
            admin_key: "admin-key-123".into(),
            alerting_url: "http://pager:al3rt-pass@a".into(),
            alerting_api_key: Some("alerting-token-9".into()),
        };
        let r = Redactor::new(endpoints.secrets());
        assert_eq!(r.text("auth s3cret failed for admin-key-123"), "auth *** failed for ***");
        assert_eq!(r.text("al3rt-pass alerting-token-9"), "*** ***");
        let v = r.value(&serde_json::json!({"e": ["r3dispass"], "n": 1}));
        assert_eq!(v, serde_json::json!({"e": ["***"], "n": 1}));
        assert!(!format!("{endpoints:?}").contains("s3cret"));
        assert!(!format!("{endpoints:?}").contains("admin-key-123"));
        assert!(url_secrets("https://tok3n-abc@booking/").contains(&"tok3n-abc".to_string()));
        assert!(
            !url_secrets("https://ops:pa55word@booking/").contains(&"ops".to_string()),
            "a user beside a password is a name"
        );
    }

    #[test]
    fn a_non_postgres_database_url_is_not_a_postgres_target() {
        let endpoints = Endpoints { database_url: Some("sqlite://booking.db".into()), ..Endpoints::default() };
        let err = endpoints.describe(Target::Postgres).unwrap_err();
        assert!(err.contains("not PostgreSQL (sqlite)"), "{err}");
    }
}
