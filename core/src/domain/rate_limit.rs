//! Token buckets: the queue-entry rate limit, sign-ups per client, and
//! wrong admin keys per client.

use std::{collections::HashMap, hash::Hash};

use super::clock::Millis;

/// Up to `capacity` requests at once, refilled at `capacity` per window.
/// Counted in units of 1/`window_ms` of a token, so a refill of `capacity`
/// units per millisecond is exact in integers whatever the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u32,
    window_ms: u64,
    units: u64,
    refilled_at: Millis,
}

impl TokenBucket {
    /// A full bucket of `per_second`, refilled each second.
    pub fn new(per_second: u32, now: Millis) -> Self {
        Self::per_window(per_second, 1000, now)
    }

    /// A full bucket of `capacity`, refilled over `window_ms`.
    pub fn per_window(capacity: u32, window_ms: u64, now: Millis) -> Self {
        let capacity = capacity.max(1);
        let window_ms = window_ms.max(1);
        Self { capacity, window_ms, units: u64::from(capacity) * window_ms, refilled_at: now }
    }

    /// The bucket's size, which is also its rate per window.
    pub fn per_second(&self) -> u32 {
        self.capacity
    }

    fn refill(&mut self, now: Millis) {
        // A clock that steps back refills nothing rather than panicking.
        let elapsed = u64::try_from(now - self.refilled_at).unwrap_or(0);
        let full = u64::from(self.capacity) * self.window_ms;
        self.units = full.min(self.units.saturating_add(elapsed.saturating_mul(u64::from(self.capacity))));
        self.refilled_at = self.refilled_at.max(now);
    }

    fn is_full(&self, now: Millis) -> bool {
        let mut probe = *self;
        probe.refill(now);
        probe.units == u64::from(self.capacity) * self.window_ms
    }

    /// Whether a token is there, without taking it: `Err` carries the whole
    /// seconds until one is (at least 1), for `Retry-After`.
    pub fn check(&mut self, now: Millis) -> Result<(), u32> {
        self.refill(now);
        if self.units >= self.window_ms {
            return Ok(());
        }
        let missing_ms = (self.window_ms - self.units).div_ceil(u64::from(self.capacity));
        Err(u32::try_from(missing_ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1))
    }

    /// Takes one token, or says how many seconds until one is there.
    pub fn take(&mut self, now: Millis) -> Result<(), u32> {
        self.check(now)?;
        self.units -= self.window_ms;
        Ok(())
    }
}

/// One bucket per key (a client address), for at most `max_keys` keys.
///
/// A full bucket says nothing a fresh one would not, so when the table is
/// full the full buckets go first. If every key is mid-burst (a flood from
/// more distinct clients than the table holds) the table starts over: the
/// limit then fails open rather than refuse clients it has never seen.
#[derive(Debug, Clone)]
pub struct KeyedBuckets<K> {
    capacity: u32,
    window_ms: u64,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq> KeyedBuckets<K> {
    pub fn new(capacity: u32, window_ms: u64, max_keys: usize) -> Self {
        Self { capacity, window_ms, max_keys: max_keys.max(1), buckets: HashMap::new() }
    }

    fn bucket(&mut self, key: K, now: Millis) -> &mut TokenBucket {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max_keys {
                self.buckets.clear();
            }
        }
        let (capacity, window_ms) = (self.capacity, self.window_ms);
        self.buckets.entry(key).or_insert_with(|| TokenBucket::per_window(capacity, window_ms, now))
    }

    /// Takes one of `key`'s tokens, or says how many seconds until one is there.
    pub fn take(&mut self, key: K, now: Millis) -> Result<(), u32> {
        self.bucket(key, now).take(now)
    }

    /// Whether `key` has a token left, without taking it.
    pub fn check(&mut self, key: K, now: Millis) -> Result<(), u32> {
        match self.buckets.get_mut(&key) {
            Some(bucket) => bucket.check(now),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_serves_one_seconds_worth_then_refuses() {
        let mut b = TokenBucket::new(3, 0);
        assert_eq!((b.take(0), b.take(0), b.take(0)), (Ok(()), Ok(()), Ok(())));
        assert_eq!(b.take(0), Err(1));
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let mut b = TokenBucket::new(2, 0);
        b.take(0).unwrap();
        b.take(0).unwrap();
        assert_eq!(b.take(499), Err(1), "half a second refills 0.998 of a token");
        assert_eq!(b.take(500), Ok(()));
        assert_eq!(b.take(500), Err(1));
        // Long idle refills to capacity, not beyond.
        assert_eq!((b.take(60_000), b.take(60_000), b.take(60_000)), (Ok(()), Ok(()), Err(1)));
    }

    #[test]
    fn a_slow_bucket_refills_exactly_however_often_it_is_asked() {
        // 20 a minute: one token every 3 s, even when asked every millisecond.
        let mut b = TokenBucket::per_window(20, 60_000, 0);
        for _ in 0..20 {
            b.take(0).unwrap();
        }
        assert_eq!(b.take(0), Err(3));
        for t in 1..3_000 {
            assert!(b.check(t).is_err(), "at {t} ms");
        }
        assert_eq!(b.take(3_000), Ok(()));
        assert_eq!(b.check(3_000), Err(3));
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let mut b = TokenBucket::new(1, 10_000);
        b.take(10_000).unwrap();
        assert_eq!(b.take(5_000), Err(1));
        assert_eq!(b.take(10_999), Err(1));
        assert_eq!(b.take(11_000), Ok(()));
    }

    #[test]
    fn each_key_has_its_own_bucket_and_the_table_stays_bounded() {
        let mut keyed = KeyedBuckets::new(2, 60_000, 3);
        assert_eq!((keyed.take(1, 0), keyed.take(1, 0), keyed.take(1, 0)), (Ok(()), Ok(()), Err(30)));
        assert_eq!(keyed.take(2, 0), Ok(()), "another key is not limited by the first");
        assert_eq!(keyed.check(1, 0), Err(30));
        assert_eq!(keyed.check(9, 0), Ok(()), "an unseen key has its tokens");
        keyed.take(3, 0).unwrap();
        // Full table: after a minute every bucket is full again and makes room.
        keyed.take(4, 60_000).unwrap();
        assert_eq!(keyed.len(), 1);
        // Every bucket mid-burst: the table starts over instead of growing.
        for key in 5..8 {
            keyed.take(key, 60_000).unwrap();
        }
        assert!(keyed.len() <= 3);
    }
}
