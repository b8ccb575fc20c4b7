//! Read caches that spare the database the hottest reads of a sale: every
//! admitted user opens the concert's performance list (whose seat counts
//! read every seat of the concert) and then a date's seat map.
//!
//! Each entry is kept as data for [`SEAT_MAP_TTL`] and rendered to JSON
//! when asked. This instance's own holds, releases and sales **patch** the
//! entries in place (the seat's status, the date's count), so they show at
//! once without a trip to the database; another instance's changes show
//! within the TTL. Dropping the entries instead, as an earlier version did,
//! left them cold for most of a sale: at a few dozen holds and payments a
//! second every list was dropped before anyone read it, and the 20,000-user
//! sale read the concert's 20,000 seats for nearly every listing.
//!
//! Both views are for choosing a seat; every hold is decided by the
//! database, never by them.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use axum::body::Bytes;
use serde::Serialize;
use serde_json::json;

use super::ts;
use crate::store::{PerformanceSummary, SeatStatus, SeatView};

/// How stale a seat map or a performance list may be when another
/// instance changed it.
pub const SEAT_MAP_TTL: Duration = Duration::from_secs(1);

/// One cached view: the data as read, and its JSON once rendered (`None`
/// after a patch, until the next read renders it).
struct Entry<T> {
    fetched_at: Instant,
    data: T,
    body: Option<Bytes>,
}

impl<T> Entry<T> {
    fn new(data: T) -> Self {
        Entry { fetched_at: Instant::now(), data, body: None }
    }

    fn fresh(&self) -> bool {
        self.fetched_at.elapsed() < SEAT_MAP_TTL
    }

    /// The JSON, rendered now if a patch made it stale.
    fn body(&mut self, render: impl FnOnce(&T) -> Bytes) -> Bytes {
        self.body.get_or_insert_with(|| render(&self.data)).clone()
    }
}

struct SeatMapData {
    performance_id: i64,
    concert_id: i64,
    /// In `seat_id` order, as the store lists them.
    seats: Vec<SeatView>,
}

struct PerformanceList {
    concert_id: i64,
    performances: Vec<PerformanceSummary>,
}

/// A rendered seat map and the concert it belongs to (a map is only shown
/// to holders of a place in its own concert).
pub struct SeatMap {
    pub concert_id: i64,
    pub body: Bytes,
}

#[derive(Default)]
pub struct Caches {
    /// Concerts never disappear, so a concert seen once exists.
    pub known_concerts: RwLock<HashSet<i64>>,
    seat_maps: Mutex<HashMap<i64, Entry<SeatMapData>>>,
    performance_lists: Mutex<HashMap<i64, Entry<PerformanceList>>>,
}

/// What [`Caches::flush`] dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flushed {
    pub seat_maps: usize,
    pub known_concerts: usize,
    pub performance_lists: usize,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn render_seat_map(map: &SeatMapData) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        performance_id: i64,
        seats: &'a [SeatView],
    }
    serde_json::to_vec(&Body { performance_id: map.performance_id, seats: &map.seats })
        .expect("a seat map serialises")
        .into()
}

fn render_performance_list(list: &PerformanceList) -> Bytes {
    let performances: Vec<_> = list
        .performances
        .iter()
        .map(|p| {
            json!({
                "performance_id": p.performance_id,
                "starts_at": ts(p.starts_at),
                "total_seats": p.total_seats,
                "available_seats": p.available_seats,
            })
        })
        .collect();
    json!({ "concert_id": list.concert_id, "performances": performances }).to_string().into()
}

impl Caches {
    /// A performance's seat map, if one younger than the TTL is cached.
    pub fn seat_map(&self, performance_id: i64) -> Option<SeatMap> {
        let mut maps = locked(&self.seat_maps);
        let entry = maps.get_mut(&performance_id).filter(|e| e.fresh())?;
        Some(SeatMap { concert_id: entry.data.concert_id, body: entry.body(render_seat_map) })
    }

    /// Caches a seat map just read (`seats` in `seat_id` order) and renders it.
    pub fn put_seat_map(&self, performance_id: i64, concert_id: i64, seats: Vec<SeatView>) -> SeatMap {
        let mut entry = Entry::new(SeatMapData { performance_id, concert_id, seats });
        let body = entry.body(render_seat_map);
        locked(&self.seat_maps).insert(performance_id, entry);
        SeatMap { concert_id, body }
    }

    /// A concert's performance list, if one younger than the TTL is cached.
    pub fn performance_list(&self, concert_id: i64) -> Option<Bytes> {
        let mut lists = locked(&self.performance_lists);
        Some(lists.get_mut(&concert_id).filter(|e| e.fresh())?.body(render_performance_list))
    }

    /// Caches a performance list just read and renders it.
    pub fn put_performance_list(&self, concert_id: i64, performances: Vec<PerformanceSummary>) -> Bytes {
        let mut entry = Entry::new(PerformanceList { concert_id, performances });
        let body = entry.body(render_performance_list);
        locked(&self.performance_lists).insert(concert_id, entry);
        body
    }

    /// This instance just changed a seat: a hold (`Held`), a release
    /// (`Available`) or a sale (`Sold`, always of a seat this user held).
    /// Its seat map shows the new status and its date's count of available
    /// seats moves with it, at once; the entries keep their age.
    pub fn seat_changed(&self, concert_id: i64, performance_id: i64, seat_id: i64, status: SeatStatus) {
        if let Some(entry) = locked(&self.seat_maps).get_mut(&performance_id)
            && let Ok(i) = entry.data.seats.binary_search_by_key(&seat_id, |s| s.seat_id)
        {
            entry.data.seats[i].status = status;
            entry.body = None;
        }
        let delta = match status {
            SeatStatus::Held => -1,
            SeatStatus::Available => 1,
            SeatStatus::Sold => 0, // held → sold: it was not available already
        };
        if delta == 0 {
            return;
        }
        if let Some(entry) = locked(&self.performance_lists).get_mut(&concert_id)
            && let Some(p) = entry.data.performances.iter_mut().find(|p| p.performance_id == performance_id)
        {
            p.available_seats = (p.available_seats + delta).clamp(0, p.total_seats);
            entry.body = None;
        }
    }

    /// Empties every cache, for an operator who suspects a stale one.
    /// Returns how many entries each held.
    pub fn flush(&self) -> Flushed {
        let seat_maps = std::mem::take(&mut *locked(&self.seat_maps)).len();
        let known_concerts = std::mem::take(&mut *self.known_concerts.write().unwrap_or_else(|p| p.into_inner())).len();
        let performance_lists = std::mem::take(&mut *locked(&self.performance_lists)).len();
        Flushed { seat_maps, known_concerts, performance_lists }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(seat_id: i64, status: SeatStatus) -> SeatView {
        SeatView { seat_id, seat_no: format!("A-{seat_id}"), grade: "R".into(), price: 100, status }
    }

    fn statuses(body: &Bytes) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["seats"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap().to_owned()).collect()
    }

    fn available(body: &Bytes) -> Vec<i64> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["performances"].as_array().unwrap().iter().map(|p| p["available_seats"].as_i64().unwrap()).collect()
    }

    fn list(available: &[i64]) -> Vec<PerformanceSummary> {
        available
            .iter()
            .enumerate()
            .map(|(i, a)| PerformanceSummary {
                performance_id: 10 + i as i64,
                starts_at: 0,
                total_seats: 3,
                available_seats: *a,
            })
            .collect()
    }

    #[test]
    fn own_changes_patch_the_cached_views_in_place() {
        let c = Caches::default();
        c.put_seat_map(
            10,
            1,
            vec![seat(5, SeatStatus::Available), seat(7, SeatStatus::Available), seat(9, SeatStatus::Sold)],
        );
        c.put_performance_list(1, list(&[2, 3]));

        c.seat_changed(1, 10, 7, SeatStatus::Held);
        assert_eq!(statuses(&c.seat_map(10).unwrap().body), ["AVAILABLE", "HELD", "SOLD"]);
        assert_eq!(available(&c.performance_list(1).unwrap()), [1, 3]);

        c.seat_changed(1, 10, 7, SeatStatus::Sold);
        assert_eq!(statuses(&c.seat_map(10).unwrap().body), ["AVAILABLE", "SOLD", "SOLD"]);
        assert_eq!(available(&c.performance_list(1).unwrap()), [1, 3], "a sale of a held seat changes no count");

        c.seat_changed(1, 10, 5, SeatStatus::Held);
        c.seat_changed(1, 10, 5, SeatStatus::Available);
        assert_eq!(statuses(&c.seat_map(10).unwrap().body), ["AVAILABLE", "SOLD", "SOLD"]);
        assert_eq!(available(&c.performance_list(1).unwrap()), [1, 3]);
    }

    #[test]
    fn changes_elsewhere_touch_nothing_and_counts_stay_in_range() {
        let c = Caches::default();
        c.put_seat_map(10, 1, vec![seat(5, SeatStatus::Available)]);
        c.put_performance_list(1, list(&[0, 3]));
        c.seat_changed(1, 11, 5, SeatStatus::Held); // another date
        c.seat_changed(1, 10, 6, SeatStatus::Held); // a seat the map does not have
        c.seat_changed(2, 12, 5, SeatStatus::Held); // another concert
        assert_eq!(statuses(&c.seat_map(10).unwrap().body), ["AVAILABLE"]);
        assert_eq!(available(&c.performance_list(1).unwrap()), [0, 2]);
        c.seat_changed(1, 10, 5, SeatStatus::Held);
        c.seat_changed(1, 11, 1, SeatStatus::Available);
        c.seat_changed(1, 11, 2, SeatStatus::Available);
        assert_eq!(available(&c.performance_list(1).unwrap()), [0, 3], "never below 0 nor above the seats");
    }

    #[test]
    fn flushing_empties_every_cache() {
        let c = Caches::default();
        c.put_seat_map(10, 1, vec![]);
        c.put_performance_list(1, list(&[1]));
        c.known_concerts.write().unwrap().insert(1);
        let f = c.flush();
        assert_eq!((f.seat_maps, f.performance_lists, f.known_concerts), (1, 1, 1));
        assert!(c.seat_map(10).is_none() && c.performance_list(1).is_none());
    }
}
