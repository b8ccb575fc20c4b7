//! Per-client limits: sign-ups, and wrong admin keys.
//!
//! The client is the peer address, or the address a trusted proxy names in
//! `X-Forwarded-For` (see [`crate::domain::client_ip`]). A request that did
//! not come over a socket (a test driving the router in process) has no
//! client and no per-client limit.

use std::{net::IpAddr, sync::Mutex};

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{AppState, error::ApiError};
use crate::domain::{
    client_ip::{TrustedProxies, limit_key},
    clock::Millis,
    rate_limit::KeyedBuckets,
};

/// The most clients each table remembers (see [`KeyedBuckets`]).
const MAX_CLIENTS: usize = 100_000;

/// Wrong `X-Admin-Key`s a client may send per minute; beyond that its admin
/// requests get 429 until the minute has passed, the right key included, so
/// the key cannot be guessed at network speed.
pub const ADMIN_FAILURES_PER_MINUTE: u32 = 10;

pub struct ClientLimits {
    signup: Option<Mutex<KeyedBuckets<IpAddr>>>,
    admin_failures: Mutex<KeyedBuckets<IpAddr>>,
}

impl ClientLimits {
    pub fn new(signups_per_minute: Option<u32>) -> Self {
        Self {
            signup: signups_per_minute.map(|n| Mutex::new(KeyedBuckets::new(n, 60_000, MAX_CLIENTS))),
            admin_failures: Mutex::new(KeyedBuckets::new(ADMIN_FAILURES_PER_MINUTE, 60_000, MAX_CLIENTS)),
        }
    }

    /// Counts one sign-up of `client`, or refuses it.
    pub fn signup(&self, client: ClientIp, now: Millis) -> Result<(), ApiError> {
        let (Some(ip), Some(table)) = (client.0, &self.signup) else { return Ok(()) };
        table.lock().unwrap_or_else(|p| p.into_inner()).take(limit_key(ip), now).map_err(|retry_after| {
            ApiError::RateLimited {
                message: format!("too many sign-ups from your address; retry in {retry_after} s"),
                retry_after,
            }
        })
    }

    /// Refuses a client that sent too many wrong admin keys lately.
    pub fn admin_allowed(&self, client: ClientIp, now: Millis) -> Result<(), ApiError> {
        let Some(ip) = client.0 else { return Ok(()) };
        self.admin_failures.lock().unwrap_or_else(|p| p.into_inner()).check(limit_key(ip), now).map_err(|retry_after| {
            ApiError::RateLimited {
                message: format!("too many wrong admin keys from your address; retry in {retry_after} s"),
                retry_after,
            }
        })
    }

    /// Counts a wrong admin key against `client`.
    pub fn admin_failed(&self, client: ClientIp, now: Millis) {
        if let Some(ip) = client.0 {
            let _ = self.admin_failures.lock().unwrap_or_else(|p| p.into_inner()).take(limit_key(ip), now);
        }
    }
}

/// The request's client, when it came over a socket.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    pub fn of(parts: &Parts, trusted: &TrustedProxies) -> Self {
        let Some(peer) = serving::peer(parts) else { return Self(None) };
        let mut forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).peekable();
        let chain = forwarded.peek().is_some().then(|| forwarded.collect::<Vec<_>>().join(","));
        Self(Some(trusted.client(peer.ip(), chain.as_deref())))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &state.settings.trusted_proxies))
    }
}
