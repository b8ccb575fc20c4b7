//! Booking's Prometheus metrics. Labels take values from small fixed sets
//! only: route templates, methods, status codes, operation and outcome
//! names. The HTTP server metrics, exemplars and the exposition are the
//! platform's ([`telemetry::metrics`]).

use prometheus::{Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};
use telemetry::metrics::{HttpMetrics, LATENCY_BUCKETS, counter, counter_vec, gauge, histogram_vec, register_common};

/// The read replica's health, as the last probe saw it.
#[derive(Clone)]
pub struct ReplicaMetrics {
    pub lag: Gauge,
    pub up: IntGauge,
    pub in_use: IntGauge,
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
    pub http: HttpMetrics,
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
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            http: HttpMetrics::new(),
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
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
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
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        // Every label value shows from the start, so a rate over it is 0,
        // not absent: the alert rules must not read a fresh instance as
        // "no data".
        m.http.register(&m.registry).expect("metric names are unique");
        register_common(&m.registry).expect("metric names are unique");
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
    pub fn set_limits(&self, limits: &crate::limits::Limits) {
        self.cpu_limit_cores.set(limits.cpu_cores);
        self.memory_limit_bytes.set(i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX));
    }

    /// The exposition: Prometheus text 0.0.4, or OpenMetrics 1.0 with
    /// exemplars when `openmetrics` is true. Returns the body and its type.
    pub fn render(&self, openmetrics: bool) -> (String, &'static str) {
        self.http.render(&self.registry, openmetrics)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
