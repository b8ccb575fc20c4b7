//! Prometheus metrics. Labels take values from small fixed sets only: route
//! templates, methods, status codes, operation and outcome names.
//!
//! The `prometheus` crate has no exemplars, which link a latency bucket to a
//! trace. Rather than run a second metrics library beside it, [`Exemplars`]
//! keeps the latest trace id per latency bucket and [`Metrics::render`] adds
//! them when the scraper asks for OpenMetrics, the only format that carries
//! exemplars.

use std::{collections::HashMap, sync::Mutex};

use super::spans::TraceId;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Fine low edges for the fast paths, and edges at the alert thresholds
/// (0.5 s warning, 1 s critical) so those quantiles are exact.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const HTTP_DURATION: &str = "http_server_request_duration_seconds";

/// The read replica's health, as the last probe saw it.
#[derive(Clone)]
pub struct ReplicaMetrics {
    pub lag: Gauge,
    pub up: IntGauge,
    pub in_use: IntGauge,
}

impl ReplicaMetrics {
    pub fn record(&self, health: crate::store::ReplicaHealth) {
        self.lag.set(health.lag_seconds);
        self.up.set(i64::from(health.up));
        self.in_use.set(i64::from(health.in_use));
    }
}

/// Metrics the database layer records.
#[derive(Clone)]
pub struct StoreMetrics {
    pub operation_duration: HistogramVec,
    pub acquire: Histogram,
    pub waiting: IntGauge,
}

/// Metrics the Redis queue records.
#[derive(Clone)]
pub struct RedisMetrics {
    pub command_duration: HistogramVec,
    pub up: IntGauge,
    pub memory_used: IntGauge,
    pub memory_max: IntGauge,
    pub clients: IntGauge,
    pub commands_processed: IntCounter,
    /// Commands processed per master (`node` = its address; one series per
    /// node of the cluster, `single` on one node): the spread of the load.
    pub node_commands: IntCounterVec,
    pub keyspace_hits: IntCounter,
    pub keyspace_misses: IntCounter,
    /// Cluster writes that no replica confirmed within the wait (`WAIT 1
    /// 50`): a failover in that window could lose them.
    pub replication_unconfirmed: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub holds: IntCounterVec,
    pub payments: IntCounterVec,
    pub charges: IntCounter,
    pub expirations: IntCounter,
    pub admitted: IntCounter,
    pub queue_waiting: IntGauge,
    pub queue_active: IntGauge,
    pub db_pool_max: IntGauge,
    pub db_pool_open: IntGauge,
    pub db_pool_idle: IntGauge,
    pub db_pool_in_use: IntGauge,
    /// Faults injected by the chaos switch, by kind (`error`, `latency`).
    pub chaos_injected: IntCounterVec,
    /// Lapsed holds the sweeper has not expired yet, past a grace period.
    pub holds_overdue: IntGauge,
    /// CPU cores this process may use (cgroup quota, else the machine's).
    pub cpu_limit_cores: Gauge,
    /// Memory this process may use (cgroup limit, else the machine's).
    pub memory_limit_bytes: IntGauge,
    pub store: StoreMetrics,
    pub redis: RedisMetrics,
    /// Registered only with a read replica (`register_replica`).
    pub replica: ReplicaMetrics,
    /// The listener's connections and the limits it enforced.
    pub connections: serving::ConnectionMetrics,
    /// Requests refused by a per-client limit, by which: `signup`, `admin_key`.
    pub client_limited: IntCounterVec,
    exemplars: Exemplars,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}
fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}
fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}
fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            http_requests: counter_vec(
                "http_server_requests_total",
                "HTTP requests by method, route template and status",
                &["method", "route", "status"],
            ),
            http_duration: histogram_vec(HTTP_DURATION, "HTTP request latency", &["method", "route"]),
            holds: counter_vec("booking_hold_attempts_total", "Seat hold attempts by outcome", &["outcome"]),
            payments: counter_vec("booking_payments_total", "Payments by outcome", &["outcome"]),
            charges: counter("booking_balance_charges_total", "Balance charges"),
            expirations: counter("booking_hold_expirations_total", "Holds expired by the sweeper"),
            admitted: counter("booking_queue_admitted_total", "Users admitted from the waiting queue"),
            queue_waiting: gauge("booking_queue_waiting", "Users waiting in line"),
            queue_active: gauge("booking_queue_active", "Admitted users inside their window"),
            db_pool_max: gauge("db_pool_connections_max", "Database pool size limit"),
            db_pool_open: gauge("db_pool_connections_open", "Open database connections"),
            db_pool_idle: gauge("db_pool_connections_idle", "Idle database connections"),
            db_pool_in_use: gauge("db_pool_connections_in_use", "Database connections lent out"),
            chaos_injected: counter_vec(
                "booking_chaos_injected_total",
                "Faults injected by the chaos switch (/v1/admin/chaos), by kind: error or latency",
                &["kind"],
            ),
            holds_overdue: gauge(
                "booking_holds_overdue",
                "Reservations still HELD more than 30 s after their expiry: the hold sweeper is behind (same value on every instance)",
            ),
            cpu_limit_cores: Gauge::new(
                "booking_cpu_limit_cores",
                "CPU cores this process may use: cgroup v2 cpu.max quota/period, else available parallelism",
            )
            .expect("valid metric"),
            memory_limit_bytes: gauge(
                "booking_memory_limit_bytes",
                "Memory this process may use: cgroup v2 memory.max, else MemTotal of /proc/meminfo",
            ),
            store: StoreMetrics {
                operation_duration: histogram_vec(
                    "db_operation_duration_seconds",
                    "Database operations (one transaction or query each) by name",
                    &["operation"],
                ),
                acquire: Histogram::with_opts(
                    HistogramOpts::new("db_pool_acquire_seconds", "Time spent waiting for a pooled connection")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
                waiting: gauge("db_pool_waiting", "Tasks waiting for a pooled connection"),
            },
            redis: RedisMetrics {
                command_duration: histogram_vec("redis_command_duration_seconds", "Redis calls by kind", &["command"]),
                up: gauge("redis_up", "1 when the last Redis sample succeeded"),
                memory_used: gauge("redis_memory_used_bytes", "Redis used_memory"),
                memory_max: gauge(
                    "redis_memory_max_bytes",
                    "Redis memory limit in effect: maxmemory, or total_system_memory when maxmemory is 0 (no limit set)",
                ),
                clients: gauge("redis_connected_clients", "Redis connected_clients"),
                commands_processed: counter("redis_commands_processed_total", "Redis total_commands_processed"),
                node_commands: counter_vec(
                    "redis_node_commands_processed_total",
                    "Redis total_commands_processed per master (node: its address), as this instance saw it grow",
                    &["node"],
                ),
                keyspace_hits: counter("redis_keyspace_hits_total", "Redis keyspace_hits"),
                keyspace_misses: counter("redis_keyspace_misses_total", "Redis keyspace_misses"),
                replication_unconfirmed: counter(
                    "redis_replication_unconfirmed_total",
                    "Redis Cluster writes (a new place, an admitted batch) that no replica confirmed within 50 ms (WAIT 1 50 answered 0 or failed); 0 on a single node",
                ),
            },
            replica: ReplicaMetrics {
                lag: Gauge::new(
                    "db_replica_lag_seconds",
                    "How far the read replica is behind the primary, at most (one probe a second; see store/replica.rs); 0 without DATABASE_READ_URL",
                )
                .expect("valid metric"),
                up: gauge("db_replica_up", "1 when the last probe reached the read replica"),
                in_use: gauge("db_replica_in_use", "1 while catalogue reads go to the replica, 0 while the breaker sends them to the primary"),
            },
            connections: serving::ConnectionMetrics::new(),
            client_limited: counter_vec(
                "booking_client_limited_total",
                "Requests refused with 429 by a per-client limit: signup (POST /v1/users) or admin_key (too many wrong X-Admin-Key)",
                &["limit"],
            ),
            exemplars: Exemplars::default(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.holds.clone()),
            Box::new(m.payments.clone()),
            Box::new(m.charges.clone()),
            Box::new(m.expirations.clone()),
            Box::new(m.admitted.clone()),
            Box::new(m.queue_waiting.clone()),
            Box::new(m.queue_active.clone()),
            Box::new(m.db_pool_max.clone()),
            Box::new(m.db_pool_open.clone()),
            Box::new(m.db_pool_idle.clone()),
            Box::new(m.db_pool_in_use.clone()),
            Box::new(m.chaos_injected.clone()),
            Box::new(m.holds_overdue.clone()),
            Box::new(m.cpu_limit_cores.clone()),
            Box::new(m.memory_limit_bytes.clone()),
            Box::new(m.store.operation_duration.clone()),
            Box::new(m.store.acquire.clone()),
            Box::new(m.store.waiting.clone()),
            Box::new(m.replica.lag.clone()),
            Box::new(m.redis.command_duration.clone()),
            Box::new(m.redis.up.clone()),
            Box::new(m.redis.memory_used.clone()),
            Box::new(m.redis.memory_max.clone()),
            Box::new(m.redis.clients.clone()),
            Box::new(m.redis.commands_processed.clone()),
            Box::new(m.redis.node_commands.clone()),
            Box::new(m.redis.keyspace_hits.clone()),
            Box::new(m.redis.keyspace_misses.clone()),
            Box::new(m.redis.replication_unconfirmed.clone()),
            Box::new(m.client_limited.clone()),
            Box::new(super::DROPPED.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        // Every label value shows from the start, so a rate over it is 0,
        // not absent: the alert rules must not read a fresh instance as
        // "no data".
        m.connections.register(&m.registry).expect("metric names are unique");
        for kind in ["error", "latency"] {
            m.chaos_injected.with_label_values(&[kind]);
        }
        for limit in ["signup", "admin_key"] {
            m.client_limited.with_label_values(&[limit]);
        }
        for outcome in ["paid", "replayed", "insufficient_balance", "hold_expired", "refused", "error"] {
            m.payments.with_label_values(&[outcome]);
        }
        for signal in ["spans", "logs", "stdout", super::loki::SIGNAL] {
            super::DROPPED.with_label_values(&[signal]);
        }
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");
        m
    }

    /// Adds the read replica's up and in-use gauges (`DATABASE_READ_URL` is
    /// set). Its lag is always exported, 0 without a replica, so the lag
    /// alert reads a value rather than "no data" where there is none.
    pub fn register_replica(&self) {
        for c in [
            Box::new(self.replica.up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.replica.in_use.clone()),
        ] {
            // Registered once per registry; a second call is a no-op.
            let _ = self.registry.register(c);
        }
    }

    /// Records the limits found at start-up.
    pub fn set_limits(&self, limits: &super::limits::Limits) {
        self.cpu_limit_cores.set(limits.cpu_cores);
        self.memory_limit_bytes.set(i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX));
    }

    /// Counts one request and observes its latency; a sampled trace id
    /// becomes the exemplar of its latency bucket.
    pub fn observe_http(&self, method: &str, route: &str, status: &str, seconds: f64, trace_id: Option<TraceId>) {
        self.http_requests.with_label_values(&[method, route, status]).inc();
        self.http_duration.with_label_values(&[method, route]).observe(seconds);
        if let Some(trace_id) = trace_id {
            self.exemplars.record(method, route, seconds, trace_id);
        }
    }

    /// The exposition: Prometheus text 0.0.4, or OpenMetrics 1.0 with
    /// exemplars when `openmetrics` is true. Returns the body and its type.
    pub fn render(&self, openmetrics: bool) -> (String, &'static str) {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        let text = String::from_utf8(buf).unwrap_or_default();
        if openmetrics {
            (self.exemplars.to_openmetrics(&text), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        } else {
            (text, "text/plain; version=0.0.4; charset=utf-8")
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: TraceId,
    value: f64,
    at: f64,
}

/// Per route, per method: the latest exemplar of each latency bucket.
type Slots = Vec<(String, Vec<Option<Exemplar>>)>;

/// The latest exemplar per (method, route, bucket). Looked up by borrowed
/// route on every request, so only a route's first request allocates.
#[derive(Default)]
struct Exemplars(Mutex<HashMap<String, Slots>>);

impl Exemplars {
    fn record(&self, method: &str, route: &str, value: f64, trace_id: TraceId) {
        let bucket = LATENCY_BUCKETS.iter().position(|le| value <= *le).unwrap_or(LATENCY_BUCKETS.len());
        let at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let exemplar = Exemplar { trace_id, value, at };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(route) {
            map.insert(route.to_owned(), Vec::new());
        }
        let by_method = map.get_mut(route).expect("inserted above");
        match by_method.iter_mut().find(|(m, _)| m == method) {
            Some((_, slots)) => slots[bucket] = Some(exemplar),
            None => {
                let mut slots = vec![None; LATENCY_BUCKETS.len() + 1];
                slots[bucket] = Some(exemplar);
                by_method.push((method.to_owned(), slots));
            }
        }
    }

    /// Rewrites Prometheus text as OpenMetrics: counter families lose their
    /// `_total` in `# TYPE`/`# HELP`, latency buckets gain exemplars, and the
    /// document ends with `# EOF`.
    fn to_openmetrics(&self, text: &str) -> String {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::with_capacity(text.len() + 1024);
        let mut counters: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ")
                && let Some((name, kind)) = rest.split_once(' ')
                && kind == "counter"
                && let Some(base) = name.strip_suffix("_total")
            {
                counters.push(name.to_owned());
                out.push_str(&format!("# TYPE {base} counter\n"));
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ")
                && let Some((name, help)) = rest.split_once(' ')
                && counters.iter().any(|c| c == name)
            {
                out.push_str(&format!("# HELP {} {help}\n", name.trim_end_matches("_total")));
                continue;
            }
            out.push_str(line);
            if let Some(exemplar) = exemplar_for(line, &map) {
                out.push_str(&format!(
                    " # {{trace_id=\"{}\"}} {} {:.3}",
                    exemplar.trace_id, exemplar.value, exemplar.at
                ));
            }
            out.push('\n');
        }
        // A HELP line can precede its TYPE line; fix up any left behind.
        for name in &counters {
            out = out.replace(&format!("# HELP {name} "), &format!("# HELP {} ", name.trim_end_matches("_total")));
        }
        out.push_str("# EOF\n");
        out
    }
}

fn exemplar_for<'m>(line: &str, map: &'m HashMap<String, Slots>) -> Option<&'m Exemplar> {
    let labels = line.strip_prefix(HTTP_DURATION)?.strip_prefix("_bucket{")?;
    let (labels, _) = labels.split_once('}')?;
    let label = |name: &str| {
        labels.split("\",").find_map(|kv| kv.strip_prefix(&format!("{name}=\"")).map(|v| v.trim_end_matches('"')))
    };
    let le = label("le")?;
    let bucket = if le == "+Inf" {
        LATENCY_BUCKETS.len()
    } else {
        let le: f64 = le.parse().ok()?;
        LATENCY_BUCKETS.iter().position(|b| (*b - le).abs() < 1e-12)?
    };
    let method = label("method")?;
    let (_, slots) = map.get(label("route")?)?.iter().find(|(m, _)| m == method)?;
    slots.get(bucket)?.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_carries_the_latest_trace_of_a_bucket_and_renames_counter_families() {
        let m = Metrics::new();
        let trace = TraceId(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        m.observe_http("GET", "/v1/x", "200", 0.003, Some(trace));
        let (text, kind) = m.render(true);
        assert!(kind.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE http_server_requests counter"));
        assert!(text.contains("http_server_requests_total{method=\"GET\",route=\"/v1/x\",status=\"200\"} 1"));
        let bucket = text
            .lines()
            .find(|l| l.starts_with("http_server_request_duration_seconds_bucket") && l.contains("le=\"0.005\""))
            .unwrap();
        assert!(bucket.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.003"), "{bucket}");
        let smaller = text.lines().find(|l| l.contains("_bucket") && l.contains("le=\"0.001\"")).unwrap();
        assert!(!smaller.contains("trace_id"), "{smaller}");
        let (plain, _) = m.render(false);
        assert!(!plain.contains("# EOF") && !plain.contains("trace_id"));
    }
}
