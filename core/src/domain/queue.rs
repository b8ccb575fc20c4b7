//! Waiting-queue rules: ticks and the wait estimate.

use super::clock::Millis;

/// The start of the admission tick `now` falls in, in milliseconds: all
/// instances agree on it, so a tick's batch is admitted once however many
/// instances race for it. Being a time rather than a tick count, it keeps
/// growing when the interval is changed, so admission never stalls on a
/// stored tick from the old interval.
pub fn tick_of(now: Millis, interval_ms: i64) -> Millis {
    let interval_ms = interval_ms.max(1);
    now.div_euclid(interval_ms) * interval_ms
}

/// Seconds until a user at 1-based `position` is admitted, when `batch` users
/// are admitted at every tick of `interval_ms`, the next tick being at the
/// next multiple of `interval_ms` after `now`.
pub fn estimated_wait_seconds(position: i64, batch: i64, interval_ms: i64, now: Millis) -> i64 {
    if position <= 0 {
        return 0;
    }
    let interval_ms = interval_ms.max(1);
    let ticks_needed = (position + batch.max(1) - 1) / batch.max(1);
    let until_next_tick = interval_ms - now.rem_euclid(interval_ms);
    let ms = until_next_tick + (ticks_needed - 1) * interval_ms;
    (ms + 999) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_grows_one_interval_per_batch() {
        // At a tick boundary, the first batch waits a full interval.
        assert_eq!(estimated_wait_seconds(1, 500, 15_000, 0), 15);
        assert_eq!(estimated_wait_seconds(500, 500, 15_000, 0), 15);
        assert_eq!(estimated_wait_seconds(501, 500, 15_000, 0), 30);
        assert_eq!(estimated_wait_seconds(1, 500, 15_000, 14_000), 1);
        assert_eq!(estimated_wait_seconds(0, 500, 15_000, 0), 0);
    }

    #[test]
    fn ticks_are_shared_by_everyone_in_the_same_interval() {
        assert_eq!(tick_of(14_999, 15_000), 0);
        assert_eq!(tick_of(15_000, 15_000), 15_000);
        assert_eq!(tick_of(29_999, 15_000), 15_000);
    }

    #[test]
    fn a_longer_interval_keeps_ticks_moving_forward() {
        // Last tick under a 1 s interval, then the interval becomes 5 s.
        let last = tick_of(1_790_000_003_500, 1_000);
        let later = tick_of(1_790_000_006_000, 5_000);
        assert!(later > last, "admission resumes within one new interval");
    }
}
