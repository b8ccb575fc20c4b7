//! The Redis queue: shared by every instance.
//!
//! Every key lives under one hash tag (`{prefix}`), so the scripts stay
//! valid on a Redis Cluster too. Each operation is one script call: one
//! round trip, atomic.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::Duration,
};

use redis::{AsyncTypedCommands, Script, aio::ConnectionManager, aio::ConnectionManagerConfig};

use super::{AdmissionPolicy, Gate, Place, PlaceStatus, QueueDepth, QueueResult, SeatFlag, fallback::Remembered, flags::FlagLanes};
use crate::{
    domain::{clock::Millis, queue::tick_of, tokens::QueueClaims},
    telemetry::metrics::RedisMetrics,
};

/// Bounds the fallback memory of admitted places.
const FALLBACK_CAPACITY: usize = 200_000;

pub struct RedisQueue {
    conn: ConnectionManager,
    base: String,
    enter: Script,
    gate: Script,
    admit: Script,
    depth: Script,
    metrics: Option<RedisMetrics>,
    /// Last INFO counters, to turn them into counter increments.
    last_info: Mutex<HashMap<&'static str, u64>>,
    /// Places this instance has seen active, kept so that admitted users can
    /// still book and pay while Redis is away. Only read when Redis fails.
    admitted: Mutex<Remembered>,
    /// Seat-flag writes, in order per seat.
    flags: FlagLanes,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("base", &self.base).finish_non_exhaustive()
    }
}

impl RedisQueue {
    pub async fn connect(url: &str, prefix: &str, metrics: Option<RedisMetrics>) -> QueueResult<Self> {
        let client = redis::Client::open(url)?;
        // Fail fast while Redis is away instead of queueing requests behind
        // reconnect attempts; the manager reconnects by itself afterwards.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let base = format!("{{{prefix}}}");
        Ok(Self {
            flags: FlagLanes::start(conn.clone(), base.clone(), metrics.clone()),
            conn,
            base,
            enter: Script::new(include_str!("lua/enter.lua")),
            gate: Script::new(include_str!("lua/gate.lua")),
            admit: Script::new(include_str!("lua/admit.lua")),
            depth: Script::new(include_str!("lua/depth.lua")),
            admitted: Mutex::new(Remembered::new(FALLBACK_CAPACITY)),
            metrics,
            last_info: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one Redis call inside a client span, timing it.
    async fn timed<T>(&self, command: &'static str, fut: impl Future<Output = T>) -> T {
        let histogram = self.metrics.as_ref().map(|m| &m.command_duration);
        crate::telemetry::client_call("redis", command, histogram, fut).await
    }

    /// Reads `INFO` into the metrics: up, memory against the limit in effect,
    /// clients, commands processed and keyspace hits and misses.
    pub async fn sample(&self) {
        let Some(m) = &self.metrics else { return };
        let info: Result<String, _> = redis::cmd("INFO").query_async(&mut self.conn.clone()).await;
        let Ok(info) = info else {
            m.up.set(0);
            return;
        };
        m.up.set(1);
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let gauges = [(&m.memory_used, "used_memory"), (&m.clients, "connected_clients")];
        for (gauge, name) in gauges {
            if let Some(v) = field(name) {
                gauge.set(v as i64);
            }
        }
        if let Some(limit) = effective_memory_limit(field("maxmemory"), field("total_system_memory")) {
            m.memory_max.set(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let mut last = self.last_info.lock().unwrap_or_else(|p| p.into_inner());
        let counters =
            [(&m.commands_processed, "total_commands_processed"), (&m.keyspace_hits, "keyspace_hits"), (&m.keyspace_misses, "keyspace_misses")];
        for (counter, name) in counters {
            if let Some(v) = field(name) {
                let before = last.insert(name, v).unwrap_or(0);
                // A restarted Redis starts again from zero.
                counter.inc_by(if v >= before { v - before } else { v });
            }
        }
    }

    fn line(&self, concert_id: i64, part: &str) -> String {
        format!("{}:q:{concert_id}:{part}", self.base)
    }

    fn seat(&self, seat_id: i64) -> String {
        format!("{}:seat:{seat_id}", self.base)
    }

    /// The start of the last admitted tick (see `admit.lua`).
    fn tick(&self) -> String {
        format!("{}:tick", self.base)
    }

    fn lines(&self) -> String {
        format!("{}:lines", self.base)
    }

    pub async fn enter(&self, concert_id: i64, user_id: i64, now: Millis) -> QueueResult<Place> {
        let mut conn = self.conn.clone();
        let mut invocation = self.enter.key(self.line(concert_id, "current"));
        let call = invocation
            .key(self.line(concert_id, "waiting"))
            .key(self.line(concert_id, "active"))
            .key(self.line(concert_id, "seq"))
            .key(self.lines())
            .key(self.tick())
            .arg(user_id)
            .arg(concert_id)
            .arg(now)
            .invoke_async(&mut conn);
        let (seq, created, position, until, last_tick): (i64, i64, i64, i64, i64) = self.timed("enter", call).await?;
        let status = if until > 0 { PlaceStatus::Active { until } } else { PlaceStatus::Waiting { position, last_tick: tick_read(last_tick) } };
        Ok(Place { seq, status, created: created == 1 })
    }

    pub async fn gate(&self, place: QueueClaims, seat_id: Option<i64>, now: Millis) -> QueueResult<Gate> {
        let mut call = self.gate.key(self.line(place.concert_id, "current"));
        call.key(self.line(place.concert_id, "waiting")).key(self.line(place.concert_id, "active")).key(self.tick());
        if let Some(seat_id) = seat_id {
            call.key(self.seat(seat_id));
        }
        call.arg(place.user_id).arg(place.seq).arg(now);
        let mut conn = self.conn.clone();
        let result: Result<(i64, i64, i64), _> = self.timed("gate", call.invoke_async(&mut conn)).await;
        let key = (place.concert_id, place.user_id);
        match result {
            Ok((1, until, taken)) => {
                self.fallback().remember(key, place.seq, until, now);
                Ok(Gate { status: PlaceStatus::Active { until }, seat_taken: taken == 1 })
            }
            Ok((0, position, last_tick)) => {
                Ok(Gate { status: PlaceStatus::Waiting { position, last_tick: tick_read(last_tick) }, seat_taken: false })
            }
            Ok(_) => Ok(Gate { status: PlaceStatus::Expired, seat_taken: false }),
            Err(e) => {
                // Redis is away: a place this instance saw active stays
                // active until its window ends. The database still decides
                // every seat, so correctness does not depend on this.
                match self.fallback().active_until(key, place.seq, now) {
                    Some(until) => Ok(Gate { status: PlaceStatus::Active { until }, seat_taken: false }),
                    None => Err(e.into()),
                }
            }
        }
    }

    fn fallback(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn admit(&self, policy: AdmissionPolicy, now: Millis) -> QueueResult<Option<u64>> {
        self.fallback().forget_lapsed(now);
        let mut conn = self.conn.clone();
        let mut invocation = self.admit.key(self.tick());
        invocation
            .key(self.lines())
            .arg(tick_of(now, policy.interval_ms))
            .arg(now)
            .arg(policy.batch)
            .arg(policy.max_active)
            .arg(policy.window_ms)
            .arg(format!("{}:q:", self.base));
        let admitted: i64 = self.timed("admit", invocation.invoke_async(&mut conn)).await?;
        Ok((admitted >= 0).then_some(admitted as u64))
    }

    pub async fn finish(&self, place: QueueClaims) -> QueueResult<()> {
        self.fallback().forget((place.concert_id, place.user_id));
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(self.line(place.concert_id, "current"), place.user_id)
            .zrem(self.line(place.concert_id, "active"), place.user_id);
        self.timed("finish", pipe.exec_async(&mut conn)).await?;
        Ok(())
    }

    /// Queues a seat's flag (see [`FlagLanes`]).
    pub fn remember_seat(&self, seat_id: i64, flag: SeatFlag, now: Millis) {
        self.flags.set(seat_id, flag, now);
    }

    /// Queues the clearing of a seat's flag.
    pub async fn forget_seat(&self, seat_id: i64) {
        self.flags.clear(seat_id).await;
    }

    /// Waits until queued flag writes have landed, for at most `within`.
    pub async fn settle(&self, within: Duration) {
        self.flags.settle(within).await;
    }

    /// Per-user entries held across every line (place numbers, waiting and
    /// active places) plus the fallback memory: the figure that must not
    /// grow with users who have paid or lapsed.
    pub async fn entries(&self) -> QueueResult<usize> {
        let mut conn = self.conn.clone();
        let concerts: Vec<i64> = conn.smembers(self.lines()).await?.iter().filter_map(|c| c.parse().ok()).collect();
        let mut total = self.fallback().len();
        for concert in concerts {
            total += conn.hlen(self.line(concert, "current")).await?;
            total += conn.zcard(self.line(concert, "waiting")).await?;
            total += conn.zcard(self.line(concert, "active")).await?;
        }
        Ok(total)
    }

    pub async fn depth(&self, now: Millis) -> QueueResult<QueueDepth> {
        let mut conn = self.conn.clone();
        let mut invocation = self.depth.key(self.lines());
        invocation.arg(format!("{}:q:", self.base)).arg(now);
        let (waiting, active): (i64, i64) = self.timed("depth", invocation.invoke_async(&mut conn)).await?;
        Ok(QueueDepth { waiting, active })
    }

    pub async fn ping(&self) -> QueueResult<()> {
        self.conn.clone().ping().await?;
        Ok(())
    }

    /// Deletes every key under this queue's prefix; tests clean up with it.
    pub async fn purge(&self) -> QueueResult<()> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn.keys(format!("{}:*", self.base)).await?;
        if !keys.is_empty() {
            conn.del(keys).await?;
        }
        Ok(())
    }
}

/// A last tick as the scripts return it: -1 for none yet.
fn tick_read(tick: i64) -> Option<Millis> {
    (tick >= 0).then_some(tick)
}

/// The memory Redis can really use: `maxmemory`, or with no limit set
/// (`maxmemory` 0) the machine's memory, which is where it runs out.
pub fn effective_memory_limit(maxmemory: Option<u64>, total_system_memory: Option<u64>) -> Option<u64> {
    match maxmemory {
        Some(0) | None => total_system_memory.filter(|t| *t > 0),
        limit => limit,
    }
}

#[cfg(test)]
mod tests {
    use super::effective_memory_limit;

    #[test]
    fn without_maxmemory_the_limit_is_the_machines_memory() {
        assert_eq!(effective_memory_limit(Some(1 << 30), Some(16 << 30)), Some(1 << 30));
        assert_eq!(effective_memory_limit(Some(0), Some(16 << 30)), Some(16 << 30));
        assert_eq!(effective_memory_limit(Some(0), None), None);
        assert_eq!(effective_memory_limit(None, Some(0)), None);
    }
}
