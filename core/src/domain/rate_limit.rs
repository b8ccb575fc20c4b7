//! The token bucket behind the queue-entry rate limit.

use super::clock::Millis;

/// Up to `per_second` requests at once, refilled at `per_second` a second.
/// Whole tokens are counted in thousandths so the refill stays exact in
/// integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    per_second: u32,
    /// Thousandths of a token.
    milli_tokens: u64,
    refilled_at: Millis,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: u32, now: Millis) -> Self {
        let per_second = per_second.max(1);
        Self { per_second, milli_tokens: u64::from(per_second) * 1000, refilled_at: now }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Takes one token. When none is left, returns the whole seconds until
    /// one is (at least 1), for `Retry-After`.
    pub fn take(&mut self, now: Millis) -> Result<(), u32> {
        // A clock that steps back refills nothing rather than panicking.
        let elapsed = u64::try_from(now - self.refilled_at).unwrap_or(0);
        let capacity = u64::from(self.per_second) * 1000;
        self.milli_tokens = capacity.min(self.milli_tokens.saturating_add(elapsed.saturating_mul(u64::from(self.per_second))));
        self.refilled_at = self.refilled_at.max(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Ok(());
        }
        let missing_ms = (1000 - self.milli_tokens).div_ceil(u64::from(self.per_second));
        Err(missing_ms.div_ceil(1000).max(1) as u32)
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
    fn a_clock_stepping_back_refills_nothing() {
        let mut b = TokenBucket::new(1, 10_000);
        b.take(10_000).unwrap();
        assert_eq!(b.take(5_000), Err(1));
        assert_eq!(b.take(10_999), Err(1));
        assert_eq!(b.take(11_000), Ok(()));
    }
}
