//! The in-process queue: the embedded default, for one instance.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use super::{AdmissionPolicy, Gate, Place, PlaceStatus, QueueDepth, SeatFlag};
use crate::domain::{clock::Millis, queue::tick_of, tokens::QueueClaims};

#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    lines: HashMap<i64, Line>,
    last_tick: Option<i64>,
    seats: HashMap<i64, SeatFlag>,
}

/// One concert's line. Places are numbered in arrival order; only the front
/// leaves the waiting set, so the waiting numbers are always contiguous and
/// a position is a subtraction.
#[derive(Debug, Default)]
struct Line {
    next_seq: i64,
    waiting: BTreeMap<i64, i64>,
    /// The user's current place number, waiting or not.
    current: HashMap<i64, i64>,
    active: HashMap<i64, Millis>,
}

impl Line {
    fn status(&self, user_id: i64, seq: i64, now: Millis, last_tick: Option<Millis>) -> PlaceStatus {
        if self.current.get(&user_id) != Some(&seq) {
            return PlaceStatus::Expired;
        }
        if self.waiting.contains_key(&seq) {
            let front = self.waiting.keys().next().copied().unwrap_or(seq);
            return PlaceStatus::Waiting { position: seq - front + 1, last_tick };
        }
        match self.active.get(&user_id) {
            Some(&until) if until > now => PlaceStatus::Active { until },
            _ => PlaceStatus::Expired,
        }
    }
}

impl Line {
    /// Drops the places whose window has ended, and with them what the line
    /// remembered of their users: a user who has left costs nothing.
    fn forget_lapsed(&mut self, now: Millis) {
        let Self { active, current, waiting, .. } = self;
        active.retain(|user, until| {
            let live = *until > now;
            if !live && current.get(user).is_some_and(|seq| !waiting.contains_key(seq)) {
                current.remove(user);
            }
            live
        });
    }
}

impl MemoryQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-changed
        // in a way later calls trip over, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enter(&self, concert_id: i64, user_id: i64, now: Millis) -> Place {
        let mut state = self.state();
        let last_tick = state.last_tick;
        let line = state.lines.entry(concert_id).or_default();
        if let Some(&seq) = line.current.get(&user_id) {
            let status = line.status(user_id, seq, now, last_tick);
            if status != PlaceStatus::Expired {
                return Place { seq, status, created: false };
            }
        }
        line.next_seq += 1;
        let seq = line.next_seq;
        line.current.insert(user_id, seq);
        line.active.remove(&user_id);
        line.waiting.insert(seq, user_id);
        Place { seq, status: line.status(user_id, seq, now, last_tick), created: true }
    }

    pub fn gate(&self, place: QueueClaims, seat_id: Option<i64>, now: Millis) -> Gate {
        let state = self.state();
        let status = state
            .lines
            .get(&place.concert_id)
            .map_or(PlaceStatus::Expired, |l| l.status(place.user_id, place.seq, now, state.last_tick));
        let seat_taken = matches!(status, PlaceStatus::Active { .. })
            && seat_id.and_then(|s| state.seats.get(&s)).is_some_and(|f| f.is_taken(now));
        Gate { status, seat_taken }
    }

    pub fn admit(&self, policy: AdmissionPolicy, now: Millis) -> Option<u64> {
        let mut state = self.state();
        let tick = tick_of(now, policy.interval_ms);
        if state.last_tick.is_some_and(|last| tick <= last) {
            return None;
        }
        state.last_tick = Some(tick);
        state.seats.retain(|_, flag| flag.is_taken(now));
        let mut admitted = 0;
        for line in state.lines.values_mut() {
            line.forget_lapsed(now);
            let room = policy.batch.min(policy.max_active - line.active.len() as i64);
            for _ in 0..room.max(0) {
                let Some((_, user_id)) = line.waiting.pop_first() else { break };
                line.active.insert(user_id, now + policy.window_ms);
                admitted += 1;
            }
        }
        Some(admitted)
    }

    pub fn finish(&self, place: QueueClaims) {
        let mut state = self.state();
        if let Some(line) = state.lines.get_mut(&place.concert_id)
            && line.current.get(&place.user_id) == Some(&place.seq)
        {
            line.current.remove(&place.user_id);
            line.active.remove(&place.user_id);
        }
    }

    pub fn flag_seat(&self, seat_id: i64, flag: SeatFlag) {
        self.state().seats.insert(seat_id, flag);
    }

    pub fn unflag_seat(&self, seat_id: i64) {
        self.state().seats.remove(&seat_id);
    }

    /// Per-user entries held (places, admissions, place numbers): the figure
    /// that must not grow with users who have paid or lapsed.
    pub fn entries(&self) -> usize {
        let state = self.state();
        state.lines.values().map(|l| l.waiting.len() + l.active.len() + l.current.len()).sum()
    }

    pub fn depth(&self, now: Millis) -> QueueDepth {
        let state = self.state();
        state.lines.values().fold(QueueDepth::default(), |d, l| QueueDepth {
            waiting: d.waiting + l.waiting.len() as i64,
            active: d.active + l.active.values().filter(|until| **until > now).count() as i64,
        })
    }
}
