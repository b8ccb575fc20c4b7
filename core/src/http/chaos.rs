//! The chaos switch: injected errors and latency on chosen routes, so the
//! alerting chain (error-rate and latency alerts, their pages and their
//! resolution) can be drilled against a running service.
//!
//! Off by default, per process, and forgotten on restart. While off it costs
//! every request one atomic load. Injected errors are answered and counted
//! exactly like real ones (`http_server_requests_total` with status 503), so
//! alerts fire on them; `booking_chaos_injected_total{kind}` tells a drill
//! from an outage.
//!
//! `/readyz` is left alone unless the plan names it: a drill of the routes
//! must not read as a database or queue outage, nor take the instance out of
//! a load balancer. Named, it is a drill of the load balancer, and the
//! readiness handler injects the fault itself so its body says `chaos`.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    error::{ApiError, Result, error_response},
    extract::{Admin, ApiJson},
};
use crate::metrics::Metrics;

pub const ROUTES: &[(&str, &str)] =
    &[("GET", "/v1/admin/chaos"), ("PUT", "/v1/admin/chaos"), ("DELETE", "/v1/admin/chaos")];

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/chaos", get(show).put(start).delete(stop))
}

/// The longest latency that may be injected: a minute, well past any alert
/// threshold, and short enough that a forgotten drill does not hang clients.
const MAX_LATENCY_MS: i64 = 60_000;

/// The switch and what it injects.
#[derive(Debug, Default)]
pub struct Chaos {
    /// Read on every request; the plan is only read when this is set.
    on: AtomicBool,
    plan: RwLock<Arc<ChaosPlan>>,
}

/// What the switch injects, and where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChaosPlan {
    /// Route templates; empty means every route that is not exempt.
    pub routes: Vec<String>,
    /// The share of requests answered with 503 `CHAOS_INJECTED`, 0 to 1.
    pub error_ratio: f64,
    /// Delay added before each request on the routes is served.
    pub latency_ms: u64,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub latency: Duration,
    pub error: bool,
}

/// Routes chaos never touches: scrapes and liveness, so the drill is
/// observed, and the admin API, so it can always be stopped.
pub fn is_exempt(route: &str) -> bool {
    route == "/metrics" || route == "/healthz" || route.starts_with("/v1/admin/") || route == "unmatched"
}

/// The readiness probe: faulted only when a plan names it.
pub const READYZ: &str = "/readyz";

impl Chaos {
    /// The fault for one request on `route` (a route template), drawn at
    /// random by the error ratio; `None` when chaos is off or the route is
    /// not targeted. Never for `/readyz`, which asks [`Chaos::readiness_fault`].
    pub fn fault_for(&self, route: &str) -> Option<Fault> {
        if route == READYZ {
            return None;
        }
        self.draw(route, false)
    }

    /// The fault for one `/readyz` request: only when the plan names it.
    pub fn readiness_fault(&self) -> Option<Fault> {
        self.draw(READYZ, true)
    }

    fn draw(&self, route: &str, only_if_named: bool) -> Option<Fault> {
        if !self.on.load(Ordering::Acquire) || is_exempt(route) {
            return None;
        }
        let plan = self.plan.read().unwrap_or_else(|p| p.into_inner()).clone();
        let targeted = if plan.routes.is_empty() { !only_if_named } else { plan.routes.iter().any(|r| r == route) };
        if !targeted {
            return None;
        }
        // random() is in [0, 1): a ratio of 1 fails every request, 0 none.
        let error = plan.error_ratio > 0.0 && rand::random::<f64>() < plan.error_ratio;
        Some(Fault { latency: Duration::from_millis(plan.latency_ms), error })
    }

    /// The plan in force, if chaos is on.
    pub fn plan(&self) -> Option<Arc<ChaosPlan>> {
        self.on.load(Ordering::Acquire).then(|| self.plan.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Turns chaos on with `plan`, or off with `None`.
    pub fn set(&self, plan: Option<ChaosPlan>) {
        match plan {
            Some(plan) => {
                *self.plan.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(plan);
                self.on.store(true, Ordering::Release);
            }
            None => self.on.store(false, Ordering::Release),
        }
    }
}

/// Waits out `fault`'s latency and counts what it injects; whether the
/// request is to fail.
pub(super) async fn endure(fault: Fault, metrics: &Metrics) -> bool {
    if !fault.latency.is_zero() {
        metrics.chaos_injected.with_label_values(&["latency"]).inc();
        tokio::time::sleep(fault.latency).await;
    }
    if fault.error {
        metrics.chaos_injected.with_label_values(&["error"]).inc();
    }
    fault.error
}

/// Applies `fault` to a request: waits, then fails it or serves it.
pub(super) async fn inject(fault: Fault, metrics: &Metrics, req: Request, next: Next) -> Response {
    if endure(fault, metrics).await {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "CHAOS_INJECTED",
            "a fault was injected by the chaos switch",
        );
    }
    next.run(req).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosBody {
    #[serde(default)]
    routes: Option<Vec<String>>,
    #[serde(default)]
    error_ratio: f64,
    #[serde(default)]
    latency_ms: i64,
}

fn validate(body: ChaosBody) -> Result<ChaosPlan> {
    let bad = |msg: String| ApiError::bad_request("INVALID_CHAOS", msg);
    if !(0.0..=1.0).contains(&body.error_ratio) {
        return Err(bad("error_ratio must be between 0 and 1".into()));
    }
    if !(0..=MAX_LATENCY_MS).contains(&body.latency_ms) {
        return Err(bad(format!("latency_ms must be 0 to {MAX_LATENCY_MS}")));
    }
    if body.error_ratio == 0.0 && body.latency_ms == 0 {
        return Err(bad("nothing to inject: set error_ratio or latency_ms above 0 (DELETE turns chaos off)".into()));
    }
    let known = super::routes();
    let mut routes: Vec<String> = Vec::new();
    for route in body.routes.unwrap_or_default() {
        if is_exempt(&route) || !known.iter().any(|(_, path)| *path == route) {
            return Err(bad(format!(
                "{route:?} is not a route template chaos may target (/metrics, /healthz and /v1/admin/* are exempt)"
            )));
        }
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    Ok(ChaosPlan { routes, error_ratio: body.error_ratio, latency_ms: body.latency_ms as u64 })
}

fn view(plan: Option<&ChaosPlan>) -> Json<Value> {
    let off = ChaosPlan::default();
    let p = plan.unwrap_or(&off);
    Json(json!({
        "enabled": plan.is_some(),
        "routes": p.routes,
        "error_ratio": p.error_ratio,
        "latency_ms": p.latency_ms,
    }))
}

async fn show(State(s): State<AppState>, _: Admin) -> Json<Value> {
    view(s.chaos.plan().as_deref())
}

async fn start(State(s): State<AppState>, _: Admin, ApiJson(body): ApiJson<ChaosBody>) -> Result<Json<Value>> {
    let plan = validate(body)?;
    tracing::warn!(
        routes = ?plan.routes,
        error_ratio = plan.error_ratio,
        latency_ms = plan.latency_ms,
        "chaos switch on: injecting faults"
    );
    s.chaos.set(Some(plan));
    Ok(view(s.chaos.plan().as_deref()))
}

async fn stop(State(s): State<AppState>, _: Admin) -> Json<Value> {
    if s.chaos.plan().is_some() {
        tracing::warn!("chaos switch off");
    }
    s.chaos.set(None);
    view(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(routes: &[&str], error_ratio: f64, latency_ms: u64) -> ChaosPlan {
        ChaosPlan { routes: routes.iter().map(|r| r.to_string()).collect(), error_ratio, latency_ms }
    }

    #[test]
    fn off_injects_nothing_and_exempt_routes_are_never_touched() {
        let chaos = Chaos::default();
        assert_eq!(chaos.fault_for("/v1/concerts"), None);
        chaos.set(Some(plan(&[], 1.0, 0)));
        for exempt in ["/metrics", "/healthz", "/v1/admin/chaos", "/v1/admin/concerts", "unmatched"] {
            assert_eq!(chaos.fault_for(exempt), None, "{exempt}");
        }
        assert_eq!(chaos.fault_for("/v1/concerts"), Some(Fault { latency: Duration::ZERO, error: true }));
        assert_eq!(
            (chaos.fault_for(READYZ), chaos.readiness_fault()),
            (None, None),
            "a plan of every route leaves /readyz alone"
        );
        chaos.set(None);
        assert_eq!(chaos.fault_for("/v1/concerts"), None);
        assert_eq!(chaos.plan(), None);
    }

    #[test]
    fn only_the_named_routes_get_faults_and_ratio_zero_only_delays() {
        let chaos = Chaos::default();
        chaos.set(Some(plan(&["/v1/reservations"], 0.0, 200)));
        assert_eq!(chaos.fault_for("/v1/concerts"), None);
        for _ in 0..100 {
            assert_eq!(
                chaos.fault_for("/v1/reservations"),
                Some(Fault { latency: Duration::from_millis(200), error: false })
            );
        }
    }

    #[test]
    fn readyz_is_faulted_only_when_named_and_only_by_its_own_handler() {
        let chaos = Chaos::default();
        chaos.set(Some(plan(&[READYZ], 1.0, 0)));
        assert_eq!(chaos.readiness_fault(), Some(Fault { latency: Duration::ZERO, error: true }));
        assert_eq!(chaos.fault_for(READYZ), None, "the middleware leaves it to the handler");
        assert_eq!(chaos.fault_for("/v1/concerts"), None);
        assert!(validate(ChaosBody { routes: Some(vec![READYZ.into()]), error_ratio: 1.0, latency_ms: 0 }).is_ok());
    }

    #[test]
    fn bodies_out_of_range_or_naming_unknown_or_exempt_routes_are_refused() {
        let body = |routes: Option<Vec<&str>>, error_ratio: f64, latency_ms: i64| ChaosBody {
            routes: routes.map(|r| r.into_iter().map(str::to_owned).collect()),
            error_ratio,
            latency_ms,
        };
        assert!(validate(body(None, 1.5, 0)).is_err());
        assert!(validate(body(None, -0.1, 0)).is_err());
        assert!(validate(body(None, 0.5, -1)).is_err());
        assert!(validate(body(None, 0.5, 60_001)).is_err());
        assert!(validate(body(None, 0.0, 0)).is_err());
        assert!(validate(body(Some(vec!["/v1/nothing"]), 0.5, 0)).is_err());
        assert!(validate(body(Some(vec!["/metrics"]), 0.5, 0)).is_err());
        assert!(validate(body(Some(vec!["/v1/admin/chaos"]), 0.5, 0)).is_err());
        let ok = validate(body(Some(vec!["/v1/reservations", "/v1/reservations"]), 1.0, 60_000)).unwrap();
        assert_eq!(ok, plan(&["/v1/reservations"], 1.0, 60_000));
    }
}
