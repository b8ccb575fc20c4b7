//! The fixed set of things a runbook step can do.
//!
//! A step names an action (`postgres.long_queries`) and gives it arguments;
//! both are checked when the runbook is parsed, against this registry and
//! the action's typed arguments, so an unknown action or a misspelt
//! argument fails `runbook list` rather than a run. Every action is safe to
//! re-run: reads change nothing, and each change reads the state first and
//! does nothing when it is already in place.

pub(crate) mod alerting;
mod booking;
mod postgres;
mod prometheus;
mod redis;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::target::{Ctx, Target, TargetError};

/// What an action does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads; the target must be reachable.
    Read,
    /// Reads whether the target is reachable at all: an unreachable target
    /// is its finding, not its failure.
    Probe,
    /// Changes the target; only in the mitigate phase, after confirmation.
    Change,
}

/// One entry of the registry.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub target: Target,
    pub effect: Effect,
    pub summary: &'static str,
    /// Argument names, for `--set` and the README.
    pub args: &'static [&'static str],
    /// Top-level output fields, which `problem_if` may read.
    pub outputs: &'static [&'static str],
}

impl Spec {
    /// Whether it calls booking's admin API (and so needs the admin key).
    pub fn uses_admin_api(&self) -> bool {
        self.target == Target::Booking && !matches!(self.name, "booking.health" | "booking.scrape" | "booking.metrics")
    }
}

use Effect::{Change, Probe, Read};

/// Declares every action once: its registry entry (name, target, effect,
/// summary, argument and output names), its variant of [`Action`] with
/// the typed arguments, how its arguments are checked, and what it runs.
/// [`REGISTRY`], [`Action::parse`], [`Action::name`] and [`Action::run`]
/// are derived from that one list.
macro_rules! actions {
    ($(
        $(#[$doc:meta])*
        $variant:ident $(($ty:ty))? = $name:literal {
            target: $target:ident,
            effect: $effect:ident,
            summary: $summary:expr,
            args: [$($arg:literal),* $(,)?],
            outputs: [$($out:literal),* $(,)?],
            parse: |$args:ident| $parse:expr,
            run: |$ctx:ident $(, $a:ident)?| $run:expr,
        },
    )*) => {
        /// Every action there is. A unit test checks each parses with its args.
        pub const REGISTRY: &[Spec] = &[$(
            Spec {
                name: $name,
                target: Target::$target,
                effect: $effect,
                summary: $summary,
                args: &[$($arg),*],
                outputs: &[$($out),*],
            },
        )*];

        /// An action with its arguments checked.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Action {
            $($(#[$doc])* $variant $(($ty))?,)*
        }

        impl Action {
            /// Checks `name` against the registry and `args` against its arguments.
            pub fn parse(name: &str, args: &Map<String, Value>) -> Result<Self, String> {
                match name {
                    $($name => {
                        let $args = args;
                        Ok($parse)
                    })*
                    other => {
                        let known: Vec<&str> = REGISTRY.iter().map(|s| s.name).collect();
                        Err(format!("unknown action `{other}` (known: {})", known.join(", ")))
                    }
                }
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Action::$variant { .. } => $name,)*
                }
            }

            /// Runs the action. Changes read the state first and report `changed`.
            pub async fn run(&self, ctx: &mut Ctx) -> Result<Finding, TargetError> {
                match self {
                    $(Action::$variant { $(0: $a,)? .. } => {
                        let $ctx = ctx;
                        $run
                    })*
                }
            }
        }
    };
}

actions! {
    PgConnections(postgres::Scope) = "postgres.connections" {
        target: Postgres,
        effect: Read,
        summary: "Client connections by state (active, idle, idle in transaction) against max_connections",
        args: ["database"],
        outputs: ["total", "server_total", "max_connections", "ratio", "by_state", "by_application"],
        parse: |args| Action::PgConnections(typed(args)?),
        run: |ctx, a| postgres::connections(ctx, a).await,
    },
    PgLongQueries(postgres::LongQueries) = "postgres.long_queries" {
        target: Postgres,
        effect: Read,
        summary: "Client queries active for longer than min_seconds, oldest first (SQL text for booking's sessions only)",
        args: ["min_seconds", "database", "application_name", "limit"],
        outputs: ["count", "queries", "min_seconds"],
        parse: |args| Action::PgLongQueries(typed::<postgres::LongQueries>(args)?.checked()?),
        run: |ctx, a| postgres::long_queries(ctx, a).await,
    },
    PgLockWaits(postgres::LockWaits) = "postgres.lock_waits" {
        target: Postgres,
        effect: Read,
        summary: "Sessions waiting on a lock, with the sessions blocking them (SQL text for booking's sessions only)",
        args: ["database", "limit"],
        outputs: ["count", "waits", "blockers"],
        parse: |args| Action::PgLockWaits(typed(args)?),
        run: |ctx, a| postgres::lock_waits(ctx, a).await,
    },
    PgTerminate(postgres::Terminate) = "postgres.terminate_long_queries" {
        target: Postgres,
        effect: Change,
        summary: "pg_terminate_backend on booking's own queries (application_name booking) active for longer than min_seconds; never another application's, a system, replication or autovacuum process, or its own session",
        args: ["min_seconds", "database", "limit"],
        outputs: ["count", "terminated", "min_seconds", "application_name", "other_applications"],
        parse: |args| Action::PgTerminate(postgres::Terminate::try_from(typed::<postgres::LongQueries>(args)?)?),
        run: |ctx, a| postgres::terminate(ctx, a).await,
    },
    RedisMemory = "redis.memory" {
        target: Redis,
        effect: Read,
        summary: "used_memory, maxmemory and their ratio (null when maxmemory is 0: no limit)",
        args: [],
        outputs: [
            "used_bytes",
            "maxmemory_bytes",
            "ratio",
            "peak_bytes",
            "rss_bytes",
            "used_human",
            "maxmemory_human",
        ],
        parse: |args| none(args).map(|_| Action::RedisMemory)?,
        run: |ctx| redis::memory(ctx).await,
    },
    RedisFragmentation = "redis.fragmentation" {
        target: Redis,
        effect: Read,
        summary: "mem_fragmentation_ratio and the RSS it costs",
        args: [],
        outputs: ["fragmentation_ratio", "fragmentation_bytes", "rss_bytes", "used_bytes", "active_defrag"],
        parse: |args| none(args).map(|_| Action::RedisFragmentation)?,
        run: |ctx| redis::fragmentation(ctx).await,
    },
    RedisEvictionPolicy = "redis.eviction_policy" {
        target: Redis,
        effect: Read,
        summary: "maxmemory-policy and keys evicted so far",
        args: [],
        outputs: ["policy", "evicted_keys", "evicts_keys_without_ttl"],
        parse: |args| none(args).map(|_| Action::RedisEvictionPolicy)?,
        run: |ctx| redis::eviction_policy(ctx).await,
    },
    RedisLargestKeys(redis::LargestKeys) = "redis.largest_keys" {
        target: Redis,
        effect: Read,
        summary: "The largest keys among a bounded SCAN sample (MEMORY USAGE), optionally under a prefix",
        args: ["sample", "prefix", "top"],
        outputs: ["sampled", "complete", "sampled_bytes", "keys"],
        parse: |args| Action::RedisLargestKeys(typed::<redis::LargestKeys>(args)?.checked()?),
        run: |ctx, a| redis::largest_keys(ctx, a).await,
    },
    RedisSetPolicy(redis::SetPolicy) = "redis.set_eviction_policy" {
        target: Redis,
        effect: Change,
        summary: "CONFIG SET maxmemory-policy",
        args: ["policy"],
        outputs: ["before", "after", "changed"],
        parse: |args| Action::RedisSetPolicy(typed::<redis::SetPolicy>(args)?.checked()?),
        run: |ctx, a| redis::set_policy(ctx, a).await,
    },
    RedisSetMaxmemory(redis::SetMaxmemory) = "redis.set_maxmemory" {
        target: Redis,
        effect: Change,
        summary: "CONFIG SET maxmemory; never below used memory, and only raises unless allow_lower",
        args: ["bytes", "allow_lower"],
        outputs: ["before", "after", "changed", "used_bytes"],
        parse: |args| Action::RedisSetMaxmemory(typed::<redis::SetMaxmemory>(args)?.checked()?),
        run: |ctx, a| redis::set_maxmemory(ctx, a).await,
    },
    PromQuery(prometheus::Query) = "prometheus.query" {
        target: Prometheus,
        effect: Read,
        summary: "Any instant PromQL query; without Prometheus, answered by the alerting service's state of the rules in `alerts`, else skipped",
        args: ["query", "top", "alerts"],
        outputs: ["source", "count", "max", "min", "series"],
        parse: |args| Action::PromQuery(typed::<prometheus::Query>(args)?.checked()?),
        run: |ctx, a| prometheus::query(ctx, a).await,
    },
    PromTopFailingRoutes(prometheus::Routes) = "prometheus.top_failing_routes" {
        target: Prometheus,
        effect: Read,
        summary: "Routes by 5xx ratio over a window; without Prometheus, from two scrapes of booking's /metrics",
        args: ["window", "top", "fallback_sample_secs"],
        outputs: ["source", "routes", "count", "max_error_ratio"],
        parse: |args| Action::PromTopFailingRoutes(typed::<prometheus::Routes>(args)?.checked(false)?),
        run: |ctx, a| prometheus::top_failing_routes(ctx, a).await,
    },
    PromP95ByRoute(prometheus::Routes) = "prometheus.p95_by_route" {
        target: Prometheus,
        effect: Read,
        summary: "Latency quantile (default P95) by route; without Prometheus, from two scrapes of booking's /metrics",
        args: ["window", "top", "quantile", "fallback_sample_secs"],
        outputs: ["source", "routes", "max_seconds"],
        parse: |args| Action::PromP95ByRoute(typed::<prometheus::Routes>(args)?.checked(true)?),
        run: |ctx, a| prometheus::quantile_by_route(ctx, a).await,
    },
    PromTargets(prometheus::Targets) = "prometheus.targets" {
        target: Prometheus,
        effect: Read,
        summary: "Prometheus's scrape targets (optionally one job): health and last error",
        args: ["job"],
        outputs: ["count", "down", "targets"],
        parse: |args| Action::PromTargets(typed(args)?),
        run: |ctx, a| prometheus::targets(ctx, a).await,
    },
    BookingHealth = "booking.health" {
        target: Booking,
        effect: Probe,
        summary: "GET /readyz: is the service up, is it ready, and if not why (chaos, database, queue); whether the chaos switch is on",
        args: [],
        outputs: ["up", "ready", "reasons", "chaos", "database", "queue", "seconds", "error"],
        parse: |args| none(args).map(|_| Action::BookingHealth)?,
        run: |ctx| booking::health(ctx).await,
    },
    BookingScrape = "booking.scrape" {
        target: Booking,
        effect: Probe,
        summary: "GET /metrics as a scraper would: status, time, size, series",
        args: [],
        outputs: ["ok", "status", "seconds", "bytes", "series", "error"],
        parse: |args| none(args).map(|_| Action::BookingScrape)?,
        run: |ctx| booking::scrape(ctx).await,
    },
    BookingMetrics(booking::Metrics) = "booking.metrics" {
        target: Booking,
        effect: Read,
        summary: "Sums of named series from /metrics (gauges such as booking_queue_waiting), an optional ratio, and rates over sample_secs",
        args: ["metrics", "ratio", "sample_secs"],
        outputs: ["values", "missing", "ratio", "rates"],
        parse: |args| Action::BookingMetrics(typed::<booking::Metrics>(args)?.checked()?),
        run: |ctx, a| booking::metrics(ctx, a).await,
    },
    BookingAdmission = "booking.admission" {
        target: Booking,
        effect: Read,
        summary: "GET /v1/admin/queue/admission: batch, interval_ms, active window, admissions per minute",
        args: [],
        outputs: ["batch", "interval_ms", "active_window_secs", "admitted_per_minute"],
        parse: |args| none(args).map(|_| Action::BookingAdmission)?,
        run: |ctx| booking::admission(ctx).await,
    },
    BookingSetAdmission(booking::SetAdmission) = "booking.set_admission" {
        target: Booking,
        effect: Change,
        summary: "PUT /v1/admin/queue/admission {batch, interval_ms} (either)",
        args: ["batch", "interval_ms"],
        outputs: ["before", "after", "changed"],
        parse: |args| Action::BookingSetAdmission(typed::<booking::SetAdmission>(args)?.checked()?),
        run: |ctx, a| booking::set_admission(ctx, a).await,
    },
    BookingRateLimit = "booking.rate_limit" {
        target: Booking,
        effect: Read,
        summary: "GET /v1/admin/rate-limit: the queue-entry rate limit",
        args: [],
        outputs: ["enabled", "per_second"],
        parse: |args| none(args).map(|_| Action::BookingRateLimit)?,
        run: |ctx| booking::rate_limit(ctx).await,
    },
    BookingSetRateLimit(booking::SetRateLimit) = "booking.set_rate_limit" {
        target: Booking,
        effect: Change,
        summary: "PUT /v1/admin/rate-limit {enabled, per_second}",
        args: ["enabled", "per_second"],
        outputs: ["before", "after", "changed"],
        parse: |args| Action::BookingSetRateLimit(typed::<booking::SetRateLimit>(args)?.checked()?),
        run: |ctx, a| booking::set_rate_limit(ctx, a).await,
    },
    BookingFlushCaches = "booking.flush_caches" {
        target: Booking,
        effect: Change,
        summary: "POST /v1/admin/caches/flush: drop the in-process caches",
        args: [],
        outputs: ["flushed"],
        parse: |args| none(args).map(|_| Action::BookingFlushCaches)?,
        run: |ctx| booking::flush_caches(ctx).await,
    },
    BookingChaos = "booking.chaos" {
        target: Booking,
        effect: Read,
        summary: "GET /v1/admin/chaos: is a fault-injection drill on",
        args: [],
        outputs: ["enabled", "routes", "error_ratio", "latency_ms"],
        parse: |args| none(args).map(|_| Action::BookingChaos)?,
        run: |ctx| booking::chaos(ctx).await,
    },
    BookingClearChaos = "booking.clear_chaos" {
        target: Booking,
        effect: Change,
        summary: "DELETE /v1/admin/chaos: turn the chaos switch off",
        args: [],
        outputs: ["before", "after", "changed"],
        parse: |args| none(args).map(|_| Action::BookingClearChaos)?,
        run: |ctx| booking::clear_chaos(ctx).await,
    },
}

pub fn spec(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// What a step found or did: a one-line summary and the full output.
#[derive(Debug, Clone)]
pub struct Finding {
    pub summary: String,
    pub output: Value,
}

/// Deserializes `args` into `T`, rejecting unknown fields.
fn typed<T: DeserializeOwned>(args: &Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(args.clone())).map_err(|e| e.to_string())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Checks that an action without arguments was given none.
fn none(args: &Map<String, Value>) -> Result<(), String> {
    typed::<NoArgs>(args).map(drop)
}

impl Action {
    pub fn spec(&self) -> &'static Spec {
        spec(self.name()).expect("every action is in the registry")
    }

    /// What applying the action would do, in words, where its call alone
    /// (`postgres.terminate_long_queries min_seconds=60`) would hide a
    /// limit the operator should see before saying yes.
    pub fn plan(&self) -> Option<String> {
        match self {
            Action::PgTerminate(a) => Some(a.plan()),
            _ => None,
        }
    }

    /// Where a Prometheus action gets its answer when no Prometheus is
    /// configured: booking's /metrics (the route actions compute the same
    /// figures from two scrapes), or the alerting service (a query naming
    /// `alerts`: their state answers it). `None`: it is skipped.
    pub fn fallback(&self) -> Option<Target> {
        match self {
            Action::PromTopFailingRoutes(_) | Action::PromP95ByRoute(_) => Some(Target::Booking),
            Action::PromQuery(q) if !q.alerts.is_empty() => Some(Target::Alerting),
            _ => None,
        }
    }

    /// The alerting rules whose state answers this action without Prometheus.
    pub fn alert_rules(&self) -> &[String] {
        match self {
            Action::PromQuery(q) => &q.alerts,
            _ => &[],
        }
    }
}

/// Rounds for output without changing what a threshold sees: 4
/// significant digits below 1000 (a 0.0014/s rate stays above 0.001),
/// 3 decimals above (byte counts stay exact).
pub(crate) fn round(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let decimals = if x.abs() >= 1000.0 { 3 } else { 3 - x.abs().log10().floor() as i32 };
    let factor = 10f64.powi(decimals);
    (x * factor).round() / factor
}

/// A float as JSON: an integer when it is one (gauges are), `null` when it
/// is not finite (NaN, ±Inf).
pub(crate) fn num(x: f64) -> Value {
    let x = round(x);
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
        return Value::from(x as i64);
    }
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A plausible value per argument name, to check each declared name is
    /// one the action's parser accepts.
    fn sample(arg: &str) -> Value {
        match arg {
            "database" | "application_name" | "prefix" | "job" => json!("x"),
            "policy" => json!("volatile-lru"),
            "bytes" => json!("2gb"),
            "query" => json!("up"),
            "window" => json!("5m"),
            "metrics" => json!(["booking_queue_waiting"]),
            "alerts" => json!(["error-budget-burn-fast"]),
            "ratio" => json!(["db_pool_connections_in_use", "db_pool_connections_max"]),
            "allow_lower" | "enabled" => json!(true),
            "per_second" => json!(100),
            "quantile" => json!(0.95),
            "interval_ms" => json!(15_000),
            _ => json!(5),
        }
    }

    #[test]
    fn every_registered_action_parses_with_each_of_its_arguments() {
        for spec in REGISTRY {
            // The smallest valid arguments of each action.
            let base: Map<String, Value> = match spec.name {
                "postgres.terminate_long_queries" => json!({"min_seconds": 60}),
                "redis.set_eviction_policy" => json!({"policy": "volatile-lru"}),
                "redis.set_maxmemory" => json!({"bytes": "2gb"}),
                "prometheus.query" => json!({"query": "up"}),
                "booking.metrics" => json!({"metrics": ["up"]}),
                "booking.set_admission" => json!({"batch": 500}),
                "booking.set_rate_limit" => json!({"enabled": true, "per_second": 200}),
                _ => json!({}),
            }
            .as_object()
            .cloned()
            .unwrap_or_default();
            assert!(Action::parse(spec.name, &base).is_ok(), "{}: {:?}", spec.name, Action::parse(spec.name, &base));
            assert_eq!(Action::parse(spec.name, &base).unwrap().name(), spec.name);
            for arg in spec.args {
                let mut args = base.clone();
                args.insert(arg.to_string(), sample(arg));
                let parsed = Action::parse(spec.name, &args);
                assert!(parsed.is_ok(), "{} {arg}: {:?}", spec.name, parsed);
            }
            let mut unknown = base.clone();
            unknown.insert("no_such_arg".into(), json!(1));
            let err = Action::parse(spec.name, &unknown).unwrap_err();
            assert!(err.contains("unknown field"), "{}: {err}", spec.name);
        }
    }

    #[test]
    fn numbers_keep_four_significant_digits_and_integers_stay_integers() {
        assert_eq!(num(0.0014321), json!(0.001432));
        assert_eq!(num(2.0 / 3.0), json!(0.6667));
        assert_eq!(num(123_456_789.0), json!(123_456_789));
        assert_eq!(num(1234.56789), json!(1234.568));
        assert_eq!(num(-0.5), json!(-0.5));
        assert_eq!(num(f64::NAN), Value::Null);
        assert_eq!(num(f64::INFINITY), Value::Null);
    }

    #[test]
    fn unknown_actions_are_rejected_with_the_known_list() {
        let err = Action::parse("postgres.drop_database", &Map::new()).unwrap_err();
        assert!(
            err.contains("unknown action `postgres.drop_database`") && err.contains("postgres.long_queries"),
            "{err}"
        );
    }

    #[test]
    fn changes_are_marked_as_changes_and_reads_are_not() {
        for spec in REGISTRY {
            let changes = spec.name.contains(".set_")
                || spec.name.contains("terminate")
                || spec.name.contains("flush")
                || spec.name.contains("clear");
            assert_eq!(spec.effect == Effect::Change, changes, "{}", spec.name);
        }
    }
}
