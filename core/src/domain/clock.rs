//! The time every rule is judged by.
//!
//! Holds, active windows and admission ticks all take `now` from one `Clock`,
//! passed down explicitly, so tests can move time instead of sleeping.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Clone, Debug)]
pub struct Clock {
    /// Added to the system time; only tests change it.
    offset_ms: Arc<AtomicI64>,
    /// When not `NOT_FROZEN`, the time this clock stands still at.
    frozen_at: Arc<AtomicI64>,
}

const NOT_FROZEN: i64 = i64::MIN;

impl Default for Clock {
    fn default() -> Self {
        Self { offset_ms: Arc::default(), frozen_at: Arc::new(AtomicI64::new(NOT_FROZEN)) }
    }
}

impl Clock {
    pub fn now_ms(&self) -> Millis {
        let frozen = self.frozen_at.load(Ordering::Relaxed);
        if frozen != NOT_FROZEN {
            return frozen;
        }
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        system + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        let by = by.as_millis() as i64;
        self.offset_ms.fetch_add(by, Ordering::Relaxed);
        let _ =
            self.frozen_at.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| (f != NOT_FROZEN).then_some(f + by));
    }

    /// Stops this clock (and every clone) at `at`, so racing requests all
    /// judge by the same instant. Only tests do this.
    pub fn freeze_at(&self, at: Millis) {
        self.frozen_at.store(at, Ordering::Relaxed);
    }
}

/// RFC 3339 in UTC with millisecond precision, the only time format the API emits.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_a_clone_moves_every_clone() {
        let a = Clock::default();
        let b = a.clone();
        let before = b.now_ms();
        a.advance(std::time::Duration::from_secs(3600));
        assert!(b.now_ms() - before >= 3_600_000);
    }

    #[test]
    fn a_frozen_clock_stands_still_until_advanced() {
        let c = Clock::default();
        c.freeze_at(1_000);
        assert_eq!(c.clone().now_ms(), 1_000);
        c.advance(std::time::Duration::from_millis(5));
        assert_eq!(c.now_ms(), 1_005);
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_790_000_000_123;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
