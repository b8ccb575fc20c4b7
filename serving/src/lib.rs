//! Serves an axum `Router` on a listener that strangers can reach.
//!
//! `axum::serve` runs hyper without a timer and without a connection cap, so
//! a client that sends its headers one byte a minute, trickles a body, or
//! never reads its response holds a connection (and a task, and a file
//! descriptor) for as long as it likes, and enough of them exhaust the
//! server. [`serve`] is the same accept loop with the limits a public
//! listener needs:
//!
//! - **header-read timeout** (hyper's own, with a Tokio timer): the whole
//!   request head must arrive within it. hyper starts that clock when it
//!   begins waiting for a request, so it also bounds how long a kept-alive
//!   connection may sit idle between requests;
//! - **body-read timeout**: the whole body must arrive within it, counted
//!   from the moment the request head was read. A late body fails the
//!   extractor reading it, and [`BodyTimedOut`] tells the service to answer
//!   408 (a client's fault, never a 5xx that would count against the
//!   error-rate SLI and page someone);
//! - **idle timeout**: a connection on which no byte moves either way for
//!   this long is closed, whatever state it is in (a client that stops
//!   reading its response, for one);
//! - **connection cap**: past it, the listener stops accepting until a
//!   connection closes; new clients wait in the kernel's backlog instead of
//!   being refused. Each time the cap holds an accept back is counted.
//!
//! Only HTTP/1.1 is served: both services sit behind a proxy or are called
//! by CLIs, and an HTTP/2 server would need timeouts of its own.

mod body;
mod io;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;

pub use body::{BodyTimedOut, TimedBody};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request head must arrive within this (and a kept-alive
    /// connection may wait this long for its next request).
    pub header_read_timeout: Duration,
    /// The request body must arrive within this, from the end of the head.
    pub body_read_timeout: Duration,
    /// No byte in either direction for this long closes the connection.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// What the listener counts, registered in the service's own registry.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub active: IntGauge,
    /// The configured cap, so a dashboard can draw `active` against it.
    pub max: IntGauge,
    /// Accepts the cap held back: the cap was reached.
    pub limit_reached: IntCounter,
    /// Connections we closed, by reason: `header_timeout` (a new
    /// connection sent no complete request head in time: a slow or stalled
    /// client), `keepalive_timeout` (a kept-alive connection sent no next
    /// request in time: an idle client, usually harmless), `idle_timeout`
    /// (nothing moved either way, e.g. a client not reading its response).
    pub closed: IntCounterVec,
}

impl ConnectionMetrics {
    pub fn new() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "http_server_connections_closed_total",
                "Connections the server closed on a limit, by reason: header_timeout (no first request head in time), keepalive_timeout (no next request in time), idle_timeout (nothing moved)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in [CLOSED_HEADER_TIMEOUT, CLOSED_KEEPALIVE_TIMEOUT, CLOSED_IDLE_TIMEOUT] {
            closed.with_label_values(&[reason]);
        }
        Self {
            active: gauge("http_server_connections_active", "HTTP connections open now"),
            max: gauge("http_server_connections_max", "The cap on HTTP connections open at once"),
            limit_reached: IntCounter::new(
                "http_server_connections_limit_reached_total",
                "Times the connection cap held a new connection back until another closed",
            )
            .expect("valid metric"),
            closed,
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.active.clone()))?;
        registry.register(Box::new(self.max.clone()))?;
        registry.register(Box::new(self.limit_reached.clone()))?;
        registry.register(Box::new(self.closed.clone()))
    }
}

impl Default for ConnectionMetrics {
    fn default() -> Self {
        Self::new()
    }
}

const CLOSED_HEADER_TIMEOUT: &str = "header_timeout";
const CLOSED_KEEPALIVE_TIMEOUT: &str = "keepalive_timeout";
const CLOSED_IDLE_TIMEOUT: &str = "idle_timeout";

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, lets every open connection finish the request it is serving,
/// and returns once all are closed. Callers bound that drain themselves.
///
/// Each request carries `ConnectInfo<SocketAddr>` (the peer) and
/// [`BodyTimedOut`] in its extensions.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    metrics.max.set(i64::from(max));
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    // Set while the cap holds accepts back, so a saturated listener logs once
    // per episode rather than once per connection.
    let mut capped = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                capped = false;
                slot
            }
            Err(_) => {
                metrics.limit_reached.inc();
                if !std::mem::replace(&mut capped, true) {
                    tracing::warn!(max_connections = max, "connection cap reached; new connections wait");
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the condition
                    // passes by itself; spinning on it would not help.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (io, activity) = io::Watched::new(stream);
        let service = hyper::service::service_fn({
            let router = router.clone();
            let activity = activity.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                activity.request();
                let router = router.clone();
                let timed_out = BodyTimedOut::default();
                let mut req = req.map(|incoming| {
                    axum::body::Body::new(TimedBody::new(incoming, limits.body_read_timeout, timed_out.clone()))
                });
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(timed_out);
                async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|never| match never {})) }
            }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            metrics.active.inc();
            let mut connection = std::pin::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    done = connection.as_mut() => {
                        if let Err(e) = done {
                            if e.is_timeout() {
                                let reason = if activity.requests() == 0 { CLOSED_HEADER_TIMEOUT } else { CLOSED_KEEPALIVE_TIMEOUT };
                                metrics.closed.with_label_values(&[reason]).inc();
                            }
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    _ = activity.idle_for(limits.idle_timeout) => {
                        metrics.closed.with_label_values(&[CLOSED_IDLE_TIMEOUT]).inc();
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !draining => {
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            }
            metrics.active.dec();
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all of them back means all are closed.
    let _ = slots.acquire_many(max).await;
    Ok(())
}

/// The peer address of a request served by [`serve`]; `None` for requests
/// that did not come over a socket (a test's `oneshot`).
pub fn peer(req: &axum::http::request::Parts) -> Option<SocketAddr> {
    req.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Completes on SIGTERM or Ctrl-C: the shutdown signal of both services.
/// A SIGTERM handler that cannot be installed leaves only Ctrl-C, rather
/// than completing at once (which would stop the service as it starts).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `error` and its causes on one line, `a: b: c`, as both services' command
/// lines print them. A cause whose text the line already quotes is left out:
/// sqlx, for one, shows its cause in its own message and returns it as
/// `source()` too, which would print it twice.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}
