//! The Redis queue: shared by every instance, on one node or a cluster.
//!
//! Each concert's keys share one hash tag (see `keys.rs`), so each
//! operation is one script call on one node: one round trip, atomic. On a
//! cluster, concerts spread over the masters and admission runs line by
//! line, each line guarded by its own tick.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use futures::{StreamExt, stream};
use redis::{AsyncTypedCommands, Script};

use super::{
    AdmissionPolicy, Gate, Place, PlaceStatus, QueueDepth, QueueResult, SeatFlag, conn::Conn, fallback::Remembered,
    flags::FlagLanes, keys::Keys,
};
use crate::{
    domain::{clock::Millis, queue::tick_of, tokens::QueueClaims},
    metrics::RedisMetrics,
};

/// Bounds the fallback memory of admitted places.
const FALLBACK_CAPACITY: usize = 200_000;
/// Lines asked at once in an admission pass or a count.
const LINES_IN_FLIGHT: usize = 16;

pub struct RedisQueue {
    conn: Conn,
    keys: Keys,
    enter: Script,
    gate: Script,
    admit: Script,
    depth: Script,
    metrics: Option<RedisMetrics>,
    /// Last INFO counters per master, to turn them into counter increments.
    last_info: Mutex<HashMap<(String, &'static str), u64>>,
    /// Places this instance has seen active, kept so that admitted users can
    /// still book and pay while Redis is away. Only read when Redis fails.
    admitted: Mutex<Remembered>,
    /// Seat-flag writes, in order per seat.
    flags: FlagLanes,
    /// Cluster only: the lines as the last admission pass read them, so a
    /// place in a line missing from the set puts it back (see `note_line`).
    known_lines: Mutex<HashSet<i64>>,
    /// The tick each line was last seen admitted at (by anyone), so a pass
    /// does not ask again within the same tick. Holds only current lines.
    admitted_ticks: Mutex<HashMap<i64, i64>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("keys", &self.keys)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    pub async fn connect(url: &str, prefix: &str, metrics: Option<RedisMetrics>) -> QueueResult<Self> {
        let conn = Conn::open(url).await?;
        let keys = Keys::new(prefix);
        Ok(Self {
            flags: FlagLanes::start(conn.clone(), keys.clone(), metrics.clone()),
            conn,
            keys,
            enter: Script::new(include_str!("lua/enter.lua")),
            gate: Script::new(include_str!("lua/gate.lua")),
            admit: Script::new(include_str!("lua/admit.lua")),
            depth: Script::new(include_str!("lua/depth.lua")),
            admitted: Mutex::new(Remembered::new(FALLBACK_CAPACITY)),
            metrics,
            last_info: Mutex::new(HashMap::new()),
            known_lines: Mutex::new(HashSet::new()),
            admitted_ticks: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// Runs one Redis call inside a client span, timing it.
    async fn timed<T>(&self, command: &'static str, fut: impl Future<Output = T>) -> T {
        let histogram = self.metrics.as_ref().map(|m| &m.command_duration);
        telemetry::client_call("redis", command, histogram, fut).await
    }

    /// Reads `INFO` of every master into the metrics: up, memory against the
    /// limit in effect, clients, commands processed and keyspace hits and
    /// misses, summed over the masters (a cluster's masters each hold part
    /// of the data, so their sums are the whole's).
    pub async fn sample(&self) {
        let Some(m) = &self.metrics else { return };
        let Ok(infos) = self.conn.clone().info_per_master().await else {
            m.up.set(0);
            return;
        };
        m.up.set(1);
        let mut sums: HashMap<&'static str, u64> = HashMap::new();
        let mut limit_sum = Some(0u64);
        let mut last = self.last_info.lock().unwrap_or_else(|p| p.into_inner());
        for (node, info) in &infos {
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            for name in ["used_memory", "connected_clients"] {
                *sums.entry(name).or_default() += field(name).unwrap_or(0);
            }
            limit_sum = match (limit_sum, effective_memory_limit(field("maxmemory"), field("total_system_memory"))) {
                (Some(sum), Some(limit)) => Some(sum.saturating_add(limit)),
                _ => None,
            };
            for name in ["total_commands_processed", "keyspace_hits", "keyspace_misses"] {
                if let Some(v) = field(name) {
                    let before = last.insert((node.clone(), name), v).unwrap_or(0);
                    // A restarted Redis starts again from zero.
                    let delta = if v >= before { v - before } else { v };
                    *sums.entry(name).or_default() += delta;
                    if name == "total_commands_processed" {
                        m.node_commands.with_label_values(&[node.as_str()]).inc_by(delta);
                    }
                }
            }
        }
        m.memory_used.set(sums.get("used_memory").copied().unwrap_or(0) as i64);
        m.clients.set(sums.get("connected_clients").copied().unwrap_or(0) as i64);
        if let Some(limit) = limit_sum.filter(|l| *l > 0) {
            m.memory_max.set(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let counters = [
            (&m.commands_processed, "total_commands_processed"),
            (&m.keyspace_hits, "keyspace_hits"),
            (&m.keyspace_misses, "keyspace_misses"),
        ];
        for (counter, name) in counters {
            counter.inc_by(sums.get(name).copied().unwrap_or(0));
        }
    }

    fn line(&self, concert_id: i64, part: &str) -> String {
        self.keys.line(concert_id, part)
    }

    pub async fn enter(&self, concert_id: i64, user_id: i64, now: Millis, tick: Millis) -> QueueResult<Place> {
        let mut conn = self.conn.clone();
        if self.is_cluster() {
            self.note_line(concert_id).await?;
        }
        let mut invocation = self.enter.key(self.line(concert_id, "current"));
        invocation
            .key(self.line(concert_id, "waiting"))
            .key(self.line(concert_id, "active"))
            .key(self.line(concert_id, "seq"))
            .key(self.line(concert_id, "tick"));
        if !self.is_cluster() {
            invocation.key(self.keys.lines());
        }
        let call = invocation.arg(user_id).arg(concert_id).arg(now).arg(tick).invoke_async(&mut conn);
        let (seq, created, position, until, last_tick): (i64, i64, i64, i64, i64) = self.timed("enter", call).await?;
        if created == 1 {
            self.replicated(&mut conn, concert_id).await;
        }
        let status = if until > 0 {
            PlaceStatus::Active { until }
        } else {
            PlaceStatus::Waiting { position, last_tick: tick_read(last_tick) }
        };
        Ok(Place { seq, status, created: created == 1 })
    }

    /// Cluster only: makes sure the concert is in the set of lines before a
    /// place joins it (the set lives in another slot, so the enter script
    /// cannot add it). Known lines cost nothing; the set is read afresh by
    /// every admission pass, so a set lost with a failed node is rebuilt.
    async fn note_line(&self, concert_id: i64) -> QueueResult<()> {
        if self.lines_known().contains(&concert_id) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        self.timed("lines", conn.sadd(self.keys.lines(), concert_id)).await?;
        self.lines_known().insert(concert_id);
        Ok(())
    }

    /// Waits for a replica to confirm the line's latest write (see
    /// [`Conn::replicated`]), counting the writes none confirmed.
    async fn replicated(&self, conn: &mut Conn, concert_id: i64) {
        if !conn.replicated(&self.keys.tag(concert_id)).await
            && let Some(m) = &self.metrics
        {
            m.replication_unconfirmed.inc();
        }
    }

    fn lines_known(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.known_lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn gate(&self, place: QueueClaims, seat_id: Option<i64>, now: Millis) -> QueueResult<Gate> {
        let mut call = self.gate.key(self.line(place.concert_id, "current"));
        call.key(self.line(place.concert_id, "waiting"))
            .key(self.line(place.concert_id, "active"))
            .key(self.line(place.concert_id, "tick"));
        if let Some(seat_id) = seat_id {
            call.key(self.keys.seat(place.concert_id, seat_id));
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
                if self.is_cluster() && !self.lines_known().contains(&place.concert_id) {
                    // Someone waits in a line the set lost: put it back.
                    let _ = self.note_line(place.concert_id).await;
                }
                Ok(Gate {
                    status: PlaceStatus::Waiting { position, last_tick: tick_read(last_tick) },
                    seat_taken: false,
                })
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

    /// The concerts with a line.
    async fn concerts(&self) -> QueueResult<Vec<i64>> {
        let mut conn = self.conn.clone();
        let members = self.timed("lines", conn.smembers(self.keys.lines())).await?;
        Ok(members.iter().filter_map(|c| c.parse().ok()).collect())
    }

    /// One admission pass: each line admits its batch once per tick,
    /// whichever instance gets there first (`admit.lua`'s guard). Lines are
    /// asked a few at a time; a line seen admitted this tick is not asked
    /// again. `None` when no line was left to admit this tick. A line whose
    /// node is away is skipped and tried again next pass; the pass fails
    /// only when every line it asked failed.
    pub async fn admit(&self, policy: AdmissionPolicy, now: Millis) -> QueueResult<Option<u64>> {
        self.fallback().forget_lapsed(now);
        let tick = tick_of(now, policy.interval_ms);
        let concerts = self.concerts().await?;
        if self.is_cluster() {
            *self.lines_known() = concerts.iter().copied().collect();
        }
        let due: Vec<i64> = {
            let mut seen = self.admitted_ticks.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|concert, _| concerts.contains(concert));
            concerts.iter().copied().filter(|c| seen.get(c).is_none_or(|t| *t < tick)).collect()
        };
        if due.is_empty() {
            return Ok(None);
        }
        let results: Vec<(i64, QueueResult<i64>)> = stream::iter(due)
            .map(|concert| async move { (concert, self.admit_line(concert, tick, policy, now).await) })
            .buffer_unordered(LINES_IN_FLIGHT)
            .collect()
            .await;
        let (mut admitted, mut ran, mut failed, mut last_error) = (0u64, false, 0usize, None);
        let mut seen = self.admitted_ticks.lock().unwrap_or_else(|p| p.into_inner());
        for (concert, result) in results.iter() {
            match result {
                Ok(n) => {
                    seen.insert(*concert, tick);
                    if *n >= 0 {
                        ran = true;
                        admitted += *n as u64;
                    }
                }
                Err(e) => {
                    failed += 1;
                    last_error = Some(e.to_string());
                }
            }
        }
        if failed == results.len() {
            return Err(super::QueueError::Unavailable(last_error.unwrap_or_default()));
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                error = last_error.as_deref().unwrap_or(""),
                "admission skipped lines whose Redis node is away"
            );
        }
        Ok(ran.then_some(admitted))
    }

    async fn admit_line(&self, concert_id: i64, tick: i64, policy: AdmissionPolicy, now: Millis) -> QueueResult<i64> {
        let mut conn = self.conn.clone();
        let mut invocation = self.admit.key(self.line(concert_id, "tick"));
        invocation
            .key(self.line(concert_id, "waiting"))
            .key(self.line(concert_id, "active"))
            .key(self.line(concert_id, "current"))
            .arg(tick)
            .arg(now)
            .arg(policy.batch)
            .arg(policy.max_active)
            .arg(policy.window_ms);
        let admitted: i64 = self.timed("admit", invocation.invoke_async(&mut conn)).await?;
        if admitted > 0 {
            self.replicated(&mut conn, concert_id).await;
        }
        Ok(admitted)
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
    pub fn remember_seat(&self, concert_id: i64, seat_id: i64, flag: SeatFlag, now: Millis) {
        self.flags.set(concert_id, seat_id, flag, now);
    }

    /// Queues the clearing of a seat's flag.
    pub async fn forget_seat(&self, concert_id: i64, seat_id: i64) {
        self.flags.clear(concert_id, seat_id).await;
    }

    /// Waits until queued flag writes have landed, for at most `within`.
    pub async fn settle(&self, within: Duration) {
        self.flags.settle(within).await;
    }

    /// Per-user entries held across every line (place numbers, waiting and
    /// active places) plus the fallback memory: the figure that must not
    /// grow with users who have paid or lapsed.
    pub async fn entries(&self) -> QueueResult<usize> {
        let per_line = self.per_line(|concert| {
            let mut pipe = redis::pipe();
            pipe.hlen(self.line(concert, "current"))
                .zcard(self.line(concert, "waiting"))
                .zcard(self.line(concert, "active"));
            pipe
        });
        let counts: Vec<(usize, usize, usize)> = per_line.await?;
        Ok(self.fallback().len() + counts.iter().map(|(a, b, c)| a + b + c).sum::<usize>())
    }

    pub async fn depth(&self, now: Millis) -> QueueResult<QueueDepth> {
        let concerts = self.concerts().await?;
        let counts: Vec<QueueResult<(i64, i64)>> = stream::iter(concerts)
            .map(|concert| async move {
                let mut invocation = self.depth.key(self.line(concert, "waiting"));
                invocation.key(self.line(concert, "active")).arg(now);
                let counts: (i64, i64) = self.timed("depth", invocation.invoke_async(&mut self.conn.clone())).await?;
                Ok(counts)
            })
            .buffer_unordered(LINES_IN_FLIGHT)
            .collect()
            .await;
        let mut depth = QueueDepth::default();
        for count in counts {
            let (waiting, active) = count?;
            depth.waiting += waiting;
            depth.active += active;
        }
        Ok(depth)
    }

    /// Runs one pipeline per line (all of one line's keys, so one node).
    async fn per_line<T: redis::FromRedisValue>(
        &self,
        pipeline: impl Fn(i64) -> redis::Pipeline,
    ) -> QueueResult<Vec<T>> {
        let concerts = self.concerts().await?;
        let results: Vec<QueueResult<T>> = stream::iter(concerts)
            .map(|concert| {
                let pipe = pipeline(concert);
                async move { Ok(pipe.query_async(&mut self.conn.clone()).await?) }
            })
            .buffer_unordered(LINES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    pub async fn ping(&self) -> QueueResult<()> {
        // On a cluster PING goes to every master: ready means every slot answers.
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Deletes every key under this queue's prefix (on every master of a
    /// cluster); tests clean up with it.
    pub async fn purge(&self) -> QueueResult<()> {
        let mut conn = self.conn.clone();
        for pattern in self.keys.patterns() {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await?;
            // One DEL per key (a cluster refuses keys of several slots in
            // one), pipelined: the client splits a pipeline by node.
            for chunk in keys.chunks(500) {
                let mut pipe = redis::pipe();
                for key in chunk {
                    pipe.del(key).ignore();
                }
                pipe.exec_async(&mut conn).await?;
            }
        }
        Ok(())
    }

    /// Which master holds a concert's line: its address, as the cluster's
    /// slot map says (`None` on a single node). For tests and capacity checks.
    pub async fn node_of(&self, concert_id: i64) -> QueueResult<Option<String>> {
        if !self.is_cluster() {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let slot = i64::from(super::conn::key_slot(self.keys.tag(concert_id).as_bytes()));
        let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
        Ok(master_of_slot(&slots, slot))
    }
}

/// The master's `host:port` for `slot` in a `CLUSTER SLOTS` reply.
fn master_of_slot(slots: &redis::Value, slot: i64) -> Option<String> {
    let redis::Value::Array(ranges) = slots else { return None };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(parts) = range else { return None };
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => Some(*i),
            _ => None,
        };
        let (start, end) = (int(parts.first()?)?, int(parts.get(1)?)?);
        if !(start..=end).contains(&slot) {
            return None;
        }
        let redis::Value::Array(master) = parts.get(2)? else { return None };
        let host = match master.first()? {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        Some(format!("{host}:{}", int(master.get(1)?)?))
    })
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
