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

/// Seconds until a user at 1-based `position` is admitted, when `batch`
/// users are admitted at every tick of `interval_ms` and the queue's last
/// admission was the tick starting at `last_tick` (`None`: none yet).
///
/// A tick is admitted shortly after it starts, whenever the admission loop
/// next asks, so between a tick's start and its admission the current
/// tick's batch is still to come: the next admission is due now, not one
/// interval away. Reading `now` modulo the interval alone got that moment
/// wrong, and the estimate jumped from 1 s back up to a full interval just
/// before admission. Counted from the queue's own last tick, the estimate
/// for a fixed position only falls as time passes, and an admission that
/// moves the user a batch forward lowers it too. (It assumes full batches:
/// when `ADMISSION_MAX_ACTIVE` holds admissions back, it rises, as the wait
/// does.) It is early by at most the loop's lag, never late.
pub fn estimated_wait_seconds(
    position: i64,
    batch: i64,
    interval_ms: i64,
    last_tick: Option<Millis>,
    now: Millis,
) -> i64 {
    if position <= 0 {
        return 0;
    }
    let interval_ms = interval_ms.max(1);
    let ticks_needed = (position + batch.max(1) - 1) / batch.max(1);
    let current = tick_of(now, interval_ms);
    let until_next_admission = match last_tick {
        Some(last) if current > last => 0,
        _ => current + interval_ms - now,
    };
    let ms = until_next_admission + (ticks_needed - 1) * interval_ms;
    (ms + 999) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_grows_one_interval_per_batch() {
        // Just after a tick was admitted, the first batch waits a full interval.
        let admitted = Some(0);
        assert_eq!(estimated_wait_seconds(1, 500, 15_000, admitted, 0), 15);
        assert_eq!(estimated_wait_seconds(500, 500, 15_000, admitted, 0), 15);
        assert_eq!(estimated_wait_seconds(501, 500, 15_000, admitted, 0), 30);
        assert_eq!(estimated_wait_seconds(1, 500, 15_000, admitted, 14_000), 1);
        assert_eq!(estimated_wait_seconds(0, 500, 15_000, admitted, 0), 0);
        assert_eq!(estimated_wait_seconds(1, 500, 15_000, None, 14_000), 1, "before any tick: the next one");
    }

    #[test]
    fn the_estimate_of_a_tick_that_has_started_but_not_been_admitted_is_now_not_an_interval_away() {
        // The reported sequence: 3 s, 1 s, then 15 s just before admission.
        let (interval, tick) = (15_000, 1_790_000_010_000);
        let last = Some(tick - interval);
        let polls = [tick - 3_000, tick - 1_000, tick + 200, tick + 900]
            .map(|now| estimated_wait_seconds(1, 500, interval, last, now));
        assert_eq!(polls, [3, 1, 0, 0]);
        assert_eq!(
            estimated_wait_seconds(501, 500, interval, last, tick + 200),
            15,
            "the second batch: one interval after this one"
        );
        assert_eq!(
            estimated_wait_seconds(1, 500, interval, Some(tick), tick + 200),
            15,
            "once admitted, the next tick counts"
        );
    }

    #[test]
    fn for_a_fixed_position_and_last_tick_the_estimate_never_rises() {
        for (interval, batch, position) in
            [(15_000, 500, 1), (15_000, 500, 501), (1_000, 2, 5), (5_000, 1, 3), (1, 1, 1)]
        {
            let last = 1_790_000_010_000 / interval * interval;
            let mut before = i64::MAX;
            for now in (last..last + 4 * interval).step_by((interval as usize / 97).max(1)) {
                let estimate = estimated_wait_seconds(position, batch, interval, Some(last), now);
                assert!(
                    estimate <= before,
                    "rose to {estimate} s at {now} ({interval} ms, batch {batch}, position {position})"
                );
                before = estimate;
            }
        }
    }

    /// xorshift64*: reproducible randomness without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: i64) -> i64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as i64
        }
    }

    /// A simulated queue: every tick admits `batch` users, a random lag
    /// (up to the loop's one-second pace) after it starts. One user polls
    /// at random instants from entry to admission. Their estimate never
    /// rises, and their real wait is never shorter than it (beyond
    /// rounding) nor longer than it plus the lag.
    #[test]
    fn a_waiting_users_estimate_never_rises_and_brackets_the_real_wait() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2_000 {
            let interval = [1, 50, 1_000, 5_000, 15_000][rng.below(5) as usize];
            let batch = [1, 2, 3, 500][rng.below(4) as usize];
            let max_lag = (interval / 5).clamp(1, 1_000);
            let lags: Vec<i64> = (0..64).map(|_| rng.below(max_lag)).collect();
            let start = 1_790_000_000_000 / interval * interval;
            // Tick j starts at start + j * interval and is admitted `lags[j]` later.
            let admitted_at = |j: i64| start + j * interval + lags[j as usize];
            // After the first admission: before any, the estimate is not meant to be early.
            let entered = admitted_at(0) + rng.below(interval * 2);
            let position_at_entry = 1 + rng.below(batch * 4);
            let admissions_between = |from: Millis, to: Millis| {
                (0..64).filter(|&j| admitted_at(j) > from && admitted_at(j) <= to).count() as i64
            };
            let last_tick_at =
                |now: Millis| (0..64).filter(|&j| admitted_at(j) <= now).max().map(|j| start + j * interval);
            let ticks_to_wait = (position_at_entry + batch - 1) / batch;
            let admission =
                (0..64).filter(|&j| admitted_at(j) > entered).nth(ticks_to_wait as usize - 1).map(admitted_at).unwrap();

            let (mut now, mut before) = (entered, i64::MAX);
            while now < admission {
                let position = position_at_entry - batch * admissions_between(entered, now);
                assert!(position > 0, "still waiting");
                let estimate = estimated_wait_seconds(position, batch, interval, last_tick_at(now), now);
                let context = format!(
                    "interval {interval} ms, batch {batch}, entered at {position_at_entry}, now {now}, admitted at {admission}"
                );
                assert!(estimate <= before, "rose from {before} s to {estimate} s: {context}");
                let real = admission - now;
                assert!(
                    real > estimate * 1_000 - 1_000 && real <= estimate * 1_000 + max_lag,
                    "estimate {estimate} s, real {real} ms: {context}"
                );
                before = estimate;
                now += 1 + rng.below(interval / 3);
            }
        }
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
