//! The waiting queue, admission passes, and the fast-path seat state.
//!
//! Two backends with one behaviour: Redis in production (every instance sees
//! the same queue, admission runs once per tick across instances) and an
//! in-process queue as the embedded default. Nothing here is a source of
//! truth for seats: the seat flags only let a request for a taken seat be
//! refused without a database round trip. They never grant a seat.

mod conn;
mod fallback;
mod flags;
mod keys;
mod memory;
mod redis;

use std::sync::Arc;

pub use conn::cluster_seeds;
pub use memory::MemoryQueue;
pub use redis::RedisQueue;

use crate::{
    domain::{clock::Millis, tokens::QueueClaims},
    metrics::RedisMetrics,
};

/// Where a queue place stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceStatus {
    /// `position` is 1-based: 1 is next in line. `last_tick` is the start
    /// of the last tick the queue admitted (`None`: none yet), read with the
    /// position, so the wait estimate knows whether this tick's batch is
    /// still to come.
    Waiting {
        position: i64,
        last_tick: Option<Millis>,
    },
    Active {
        until: Millis,
    },
    /// Admitted and timed out, finished by a payment, or replaced by a newer place.
    Expired,
}

/// A place in line, as returned on entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub seq: i64,
    pub status: PlaceStatus,
    /// False when the user already had this place.
    pub created: bool,
}

/// A place's status, and whether the asked-for seat is known to be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub status: PlaceStatus,
    pub seat_taken: bool,
}

/// How many are let in, how often, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPolicy {
    pub batch: i64,
    pub interval_ms: i64,
    pub max_active: i64,
    pub window_ms: i64,
}

/// The part of the admission policy operators may change while the service
/// runs (`PUT /v1/admin/queue/admission`), per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionTuning {
    pub batch: i64,
    pub interval_ms: i64,
}

/// What the fast path remembers of a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatFlag {
    HeldUntil(Millis),
    Sold,
}

impl SeatFlag {
    pub fn is_taken(self, now: Millis) -> bool {
        match self {
            SeatFlag::Sold => true,
            SeatFlag::HeldUntil(until) => until > now,
        }
    }
}

/// Queue sizes, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub waiting: i64,
    pub active: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
}

impl From<::redis::RedisError> for QueueError {
    fn from(e: ::redis::RedisError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

pub type QueueResult<T> = Result<T, QueueError>;

#[derive(Clone, Debug)]
pub enum Queue {
    Memory(Arc<MemoryQueue>),
    Redis(Arc<RedisQueue>),
}

impl Queue {
    pub fn memory() -> Self {
        Queue::Memory(Arc::new(MemoryQueue::default()))
    }

    pub async fn redis(url: &str, prefix: &str, metrics: Option<RedisMetrics>) -> QueueResult<Self> {
        Ok(Queue::Redis(Arc::new(RedisQueue::connect(url, prefix, metrics).await?)))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Queue::Memory(_) => "memory",
            Queue::Redis(q) if q.is_cluster() => "redis-cluster",
            Queue::Redis(_) => "redis",
        }
    }

    /// Joins the concert's line, or returns the user's current place in it.
    /// `tick` is the start of the current admission tick: a line new to
    /// Redis counts as admitted at it (the in-process queue has one tick for
    /// all lines already).
    pub async fn enter(&self, concert_id: i64, user_id: i64, now: Millis, tick: Millis) -> QueueResult<Place> {
        match self {
            Queue::Memory(q) => Ok(q.enter(concert_id, user_id, now)),
            Queue::Redis(q) => q.enter(concert_id, user_id, now, tick).await,
        }
    }

    /// The place's status and, when `seat_id` is given, the seat's flag, in
    /// one round trip.
    pub async fn gate(&self, place: QueueClaims, seat_id: Option<i64>, now: Millis) -> QueueResult<Gate> {
        match self {
            Queue::Memory(q) => Ok(q.gate(place, seat_id, now)),
            Queue::Redis(q) => q.gate(place, seat_id, now).await,
        }
    }

    /// Admits the next batch of every concert's line, once per tick and
    /// line however many instances call it. Returns how many were admitted,
    /// or `None` when other callers already ran this tick for every line.
    pub async fn admit(&self, policy: AdmissionPolicy, now: Millis) -> QueueResult<Option<u64>> {
        match self {
            Queue::Memory(q) => Ok(q.admit(policy, now)),
            Queue::Redis(q) => q.admit(policy, now).await,
        }
    }

    /// Ends an active place, after its payment.
    pub async fn finish(&self, place: QueueClaims) -> QueueResult<()> {
        match self {
            Queue::Memory(q) => {
                q.finish(place);
                Ok(())
            }
            Queue::Redis(q) => q.finish(place).await,
        }
    }

    /// Tells the fast path about a seat, off the request's critical path;
    /// writes for one seat land in the order they were made (see
    /// `flags.rs`). A lost write only costs a later request one database
    /// round trip.
    pub fn remember_seat(&self, concert_id: i64, seat_id: i64, flag: SeatFlag, now: Millis) {
        match self {
            Queue::Memory(q) => q.flag_seat(seat_id, flag),
            Queue::Redis(q) => q.remember_seat(concert_id, seat_id, flag, now),
        }
    }

    /// Clears a seat's flag (after a release), after any write queued before.
    pub async fn forget_seat(&self, concert_id: i64, seat_id: i64) {
        match self {
            Queue::Memory(q) => q.unflag_seat(seat_id),
            Queue::Redis(q) => q.forget_seat(concert_id, seat_id).await,
        }
    }

    /// Waits until the seat-flag writes queued so far have landed (at most
    /// `within`): on shutdown, and in tests that read the flags.
    pub async fn settle(&self, within: std::time::Duration) {
        if let Queue::Redis(q) = self {
            q.settle(within).await;
        }
    }

    /// Per-user entries the queue holds (see `MemoryQueue::entries`).
    pub async fn entries(&self) -> QueueResult<usize> {
        match self {
            Queue::Memory(q) => Ok(q.entries()),
            Queue::Redis(q) => q.entries().await,
        }
    }

    pub async fn depth(&self, now: Millis) -> QueueResult<QueueDepth> {
        match self {
            Queue::Memory(q) => Ok(q.depth(now)),
            Queue::Redis(q) => q.depth(now).await,
        }
    }

    /// Samples the backend's own figures into the metrics (Redis `INFO`).
    pub async fn sample(&self) {
        if let Queue::Redis(q) = self {
            q.sample().await;
        }
    }

    pub async fn ping(&self) -> QueueResult<()> {
        match self {
            Queue::Memory(_) => Ok(()),
            Queue::Redis(q) => q.ping().await,
        }
    }
}
