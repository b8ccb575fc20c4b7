//! What an instance remembers of active places, for a Redis outage.
//!
//! While Redis is away, a place this instance has seen active stays active
//! until its window ends, so admitted users keep booking and paying (the
//! database still decides every seat). The memory is bounded: when it is
//! full, places whose window has ended make room; live places are never
//! evicted for newer ones (a new place that finds the memory full of live
//! ones is simply not remembered, and waits for Redis like before).

use std::collections::HashMap;

use crate::domain::clock::Millis;

/// A place: (concert, user) → (place number, active until).
#[derive(Debug)]
pub struct Remembered {
    capacity: usize,
    places: HashMap<(i64, i64), (i64, Millis)>,
}

impl Remembered {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), places: HashMap::new() }
    }

    /// Remembers that `key`'s place `seq` is active until `until`, as seen at `now`.
    pub fn remember(&mut self, key: (i64, i64), seq: i64, until: Millis, now: Millis) {
        if self.places.get(&key) == Some(&(seq, until)) {
            return;
        }
        if !self.places.contains_key(&key) && self.places.len() >= self.capacity {
            self.forget_lapsed(now);
            if self.places.len() >= self.capacity {
                return;
            }
        }
        self.places.insert(key, (seq, until));
    }

    /// The window end of `key`'s place `seq`, if it is remembered and live at `now`.
    pub fn active_until(&self, key: (i64, i64), seq: i64, now: Millis) -> Option<Millis> {
        self.places.get(&key).filter(|(s, until)| *s == seq && *until > now).map(|(_, until)| *until)
    }

    pub fn forget(&mut self, key: (i64, i64)) {
        self.places.remove(&key);
    }

    /// Drops places whose window has ended by `now`.
    pub fn forget_lapsed(&mut self, now: Millis) {
        self.places.retain(|_, (_, until)| *until > now);
    }

    pub fn len(&self) -> usize {
        self.places.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_memory_makes_room_only_from_lapsed_places() {
        let mut memory = Remembered::new(3);
        // Admitted at 0, 100 and 200 with ten-minute windows.
        memory.remember((1, 1), 11, 600_000, 0);
        memory.remember((1, 2), 12, 600_100, 100);
        memory.remember((1, 3), 13, 600_200, 200);
        // A fourth at 300: every place is still live, none is evicted.
        memory.remember((1, 4), 14, 600_300, 300);
        for (user, seq) in [(1, 11), (2, 12), (3, 13)] {
            assert!(memory.active_until((1, user), seq, 300).is_some(), "user {user} kept");
        }
        assert_eq!(memory.active_until((1, 4), 14, 300), None, "no room for the newest");
        // Once the first window has ended, it makes room.
        memory.remember((1, 4), 14, 1_200_000, 600_050);
        assert_eq!(memory.active_until((1, 1), 11, 600_050), None);
        assert_eq!(memory.active_until((1, 4), 14, 600_050), Some(1_200_000));
        assert_eq!(memory.len(), 3);
    }

    #[test]
    fn only_the_remembered_place_number_counts_and_only_until_its_window_ends() {
        let mut memory = Remembered::new(10);
        memory.remember((7, 1), 5, 1_000, 0);
        assert_eq!(memory.active_until((7, 1), 5, 999), Some(1_000));
        assert_eq!(memory.active_until((7, 1), 5, 1_000), None);
        assert_eq!(memory.active_until((7, 1), 6, 0), None, "a newer place is not the remembered one");
        memory.forget((7, 1));
        assert_eq!(memory.len(), 0);
    }
}
