//! Seat-flag writes to Redis, in the order they were decided.
//!
//! A hold writes its seat's flag after the database granted it, and a
//! release clears it; neither waits for Redis (a missing flag only costs a
//! later request one database round trip). Spawned as tasks of their own,
//! two writes for one seat could land in either order, and a clear that
//! lands before its set leaves a stale flag that refuses a free seat until
//! the hold's time is up. So every write for a seat goes through the same
//! lane, and a lane applies its writes one after another. Seats are spread
//! over a few lanes, so writes for different seats still overlap.
//!
//! Each write still gets its client span under the request that decided
//! it. Within one instance the order is exact; two instances writing the
//! same seat at once are ordered by Redis alone.

use std::time::Duration;

use redis::AsyncTypedCommands;
use tokio::sync::{mpsc, oneshot};

use super::{SeatFlag, conn::Conn, keys::Keys};
use telemetry::spans::{self, SpanContext};

use crate::{domain::clock::Millis, metrics::RedisMetrics};

/// How long a held seat's flag outlives the hold, before Redis drops it.
const FLAG_SLACK_MS: i64 = 60_000;
const LANES: usize = 8;
/// Writes waiting per lane. Past it a set is dropped (harmless, see above)
/// and a clear waits for room (a lost clear would refuse a free seat).
const LANE_DEPTH: usize = 4096;

enum Op {
    Set(SeatFlag, Millis),
    Clear,
    /// Answers once every write queued before it has been applied.
    Settle(oneshot::Sender<()>),
}

struct Write {
    concert_id: i64,
    seat_id: i64,
    op: Op,
    request: Option<SpanContext>,
}

/// Where flags are written.
#[derive(Clone)]
struct Target {
    conn: Conn,
    keys: Keys,
    metrics: Option<RedisMetrics>,
}

impl Target {
    async fn apply(&self, concert_id: i64, seat_id: i64, op: Op) {
        let mut conn = self.conn.clone();
        let key = self.keys.seat(concert_id, seat_id);
        let histogram = self.metrics.as_ref().map(|m| &m.command_duration);
        let result = match op {
            Op::Set(SeatFlag::Sold, _) => {
                telemetry::client_call("redis", "flag", histogram, conn.set(key, "S")).await.map(drop)
            }
            Op::Set(SeatFlag::HeldUntil(until), now) => {
                let ttl = (until - now + FLAG_SLACK_MS).max(1) as u64;
                telemetry::client_call("redis", "flag", histogram, conn.pset_ex(key, until, ttl)).await.map(drop)
            }
            Op::Clear => telemetry::client_call("redis", "flag", histogram, conn.del(key)).await.map(drop),
            Op::Settle(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, seat_id, "seat flag not written");
        }
    }
}

/// The lanes of one Redis queue; dropping it ends their tasks once they
/// have applied what was queued.
pub struct FlagLanes {
    lanes: Vec<mpsc::Sender<Write>>,
}

impl FlagLanes {
    pub fn start(conn: Conn, keys: Keys, metrics: Option<RedisMetrics>) -> Self {
        let target = Target { conn, keys, metrics };
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Write>(LANE_DEPTH);
                let target = target.clone();
                tokio::spawn(async move {
                    while let Some(Write { concert_id, seat_id, op, request }) = rx.recv().await {
                        spans::in_request(request, target.apply(concert_id, seat_id, op)).await;
                    }
                });
                tx
            })
            .collect();
        Self { lanes }
    }

    fn lane(&self, seat_id: i64) -> &mpsc::Sender<Write> {
        &self.lanes[seat_id.rem_euclid(LANES as i64) as usize]
    }

    /// Queues a seat's flag; never waits.
    pub fn set(&self, concert_id: i64, seat_id: i64, flag: SeatFlag, now: Millis) {
        let write = Write { concert_id, seat_id, op: Op::Set(flag, now), request: spans::current_request() };
        if self.lane(seat_id).try_send(write).is_err() {
            tracing::debug!(seat_id, "seat flag lane full; flag not written");
        }
    }

    /// Queues the clearing of a seat's flag, waiting for room if need be.
    pub async fn clear(&self, concert_id: i64, seat_id: i64) {
        let write = Write { concert_id, seat_id, op: Op::Clear, request: spans::current_request() };
        let _ = self.lane(seat_id).send(write).await;
    }

    /// Waits until every write queued so far has been applied (at most
    /// `within`): for shutdown, and for tests that read the flags.
    pub async fn settle(&self, within: Duration) {
        let mut acks = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let (done, ack) = oneshot::channel();
            if lane.send(Write { concert_id: 0, seat_id: 0, op: Op::Settle(done), request: None }).await.is_ok() {
                acks.push(ack);
            }
        }
        let _ = tokio::time::timeout(within, futures::future::join_all(acks)).await;
    }
}
