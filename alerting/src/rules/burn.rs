//! SLO burn-rate alerts the Google SRE workbook way (chapter 5, "Alerting on
//! SLOs", multiwindow multi-burn-rate): an alert fires when the error budget
//! burns `factor` times faster than sustainable over a long window *and* a
//! short one. The long window makes the alert significant (2 % of a 30-day
//! budget gone in an hour), the short one makes it reset soon after the
//! errors stop.
//!
//! Pure functions: the rule file ([`super::file`]) picks the windows and the
//! SLO, this module turns them into [`Level`]s the engine evaluates.

use std::time::Duration;

use super::{
    model::{Condition, Level, Op, Severity},
    sli,
};

/// One window pair of a burn-rate alert, with its hysteresis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnWindow {
    pub long: Duration,
    pub short: Duration,
    /// Fire when the error ratio over both windows exceeds `factor` × budget.
    pub factor: f64,
    pub for_: Duration,
    /// Resolve when the burn rate over `clear_window` is below
    /// `clear_factor`: the long window would keep the alert up for an hour
    /// after a fix, and even the short one for its whole length.
    pub clear_factor: f64,
    pub clear_window: Duration,
    pub clear_for: Duration,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Page: 2 % of a 30-day budget in one hour.
///
/// The short window already rides out a single bad scrape, so `for` is short:
/// 2m, the same as the error-rate page. It resolves on the last minute's burn
/// rate held below 10× for 2m: about three minutes after a fix.
pub const PAGE_FAST: BurnWindow = BurnWindow {
    long: Duration::from_secs(HOUR),
    short: Duration::from_secs(5 * MINUTE),
    factor: 14.4,
    for_: Duration::from_secs(2 * MINUTE),
    clear_factor: 10.0,
    clear_window: Duration::from_secs(MINUTE),
    clear_for: Duration::from_secs(2 * MINUTE),
};

/// Page: 5 % of a 30-day budget in six hours.
pub const PAGE_SLOW: BurnWindow = BurnWindow {
    long: Duration::from_secs(6 * HOUR),
    short: Duration::from_secs(30 * MINUTE),
    factor: 6.0,
    for_: Duration::from_secs(5 * MINUTE),
    clear_factor: 4.0,
    clear_window: Duration::from_secs(5 * MINUTE),
    clear_for: Duration::from_secs(5 * MINUTE),
};

/// Ticket: the budget runs out before the period ends (10 % in three days).
pub const TICKET: BurnWindow = BurnWindow {
    long: Duration::from_secs(3 * DAY),
    short: Duration::from_secs(6 * HOUR),
    factor: 1.0,
    for_: Duration::from_secs(30 * MINUTE),
    clear_factor: 0.75,
    clear_window: Duration::from_secs(6 * HOUR),
    clear_for: Duration::from_secs(30 * MINUTE),
};

/// The SLO period the budget is spent over, unless the file says otherwise.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * DAY);

/// User requests the long window must hold before a burn rate counts: one
/// failed request out of three is a 33 % error ratio, not an outage.
pub const DEFAULT_MIN_REQUESTS: f64 = 100.0;

/// The fraction of requests allowed to fail: 1 − SLO.
pub fn error_budget(slo: f64) -> f64 {
    tidy(1.0 - slo)
}

/// How many times faster than sustainable the budget burns at this error ratio.
pub fn burn_rate(error_ratio: f64, slo: f64) -> f64 {
    error_ratio / error_budget(slo)
}

/// The error ratio at which the budget burns `factor` times too fast:
/// factor × (1 − SLO). Above 1 no error ratio can reach it.
pub fn ratio_threshold(factor: f64, slo: f64) -> f64 {
    tidy(factor * error_budget(slo))
}

/// The share of the period's budget spent while burning at `factor` for `window`.
pub fn budget_spent(factor: f64, window: Duration, period: Duration) -> f64 {
    tidy(factor * window.as_secs_f64() / period.as_secs_f64())
}

/// The level for one window pair: the error ratio over the long and the short
/// window above the threshold, and at least `min_requests` user requests in
/// the long window (so a quiet hour cannot page).
pub fn level(severity: Severity, window: &BurnWindow, slo: f64, min_requests: f64) -> Level {
    let threshold = ratio_threshold(window.factor, slo);
    let above = |expr: String| Condition { expr, op: Op::Above, threshold };
    Level {
        severity,
        fire: vec![
            above(sli::error_ratio(window.long)),
            above(sli::error_ratio(window.short)),
            Condition { expr: sli::requests(window.long), op: Op::Above, threshold: min_requests },
        ],
        for_: window.for_,
        clear: vec![Condition {
            expr: sli::error_ratio(window.clear_window),
            op: Op::Below,
            threshold: ratio_threshold(window.clear_factor, slo),
        }],
        clear_for: window.clear_for,
    }
}

/// Rounds away float noise (14.4 × (1 − 0.999) is 0.014400000000000013) so
/// thresholds read in exported rules and messages as they were meant.
pub fn tidy(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 12 - x.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_the_factor_times_the_error_budget() {
        assert_eq!(error_budget(0.999), 0.001);
        assert_eq!(ratio_threshold(14.4, 0.999), 0.0144);
        assert_eq!(ratio_threshold(6.0, 0.999), 0.006);
        assert_eq!(ratio_threshold(1.0, 0.999), 0.001);
        assert_eq!(ratio_threshold(14.4, 0.995), 0.072);
        assert_eq!(ratio_threshold(6.0, 0.995), 0.03);
    }

    #[test]
    fn burn_rate_is_the_error_ratio_over_the_budget() {
        assert_eq!(tidy(burn_rate(0.0144, 0.999)), 14.4);
        assert_eq!(tidy(burn_rate(0.005, 0.995)), 1.0);
    }

    #[test]
    fn workbook_windows_spend_the_documented_share_of_a_30_day_budget() {
        assert_eq!(budget_spent(PAGE_FAST.factor, PAGE_FAST.long, DEFAULT_PERIOD), 0.02);
        assert_eq!(budget_spent(PAGE_SLOW.factor, PAGE_SLOW.long, DEFAULT_PERIOD), 0.05);
        assert_eq!(budget_spent(TICKET.factor, TICKET.long, DEFAULT_PERIOD), 0.1);
    }

    #[test]
    fn a_level_needs_both_windows_and_enough_traffic_and_clears_on_its_clear_window() {
        let level = level(Severity::Critical, &PAGE_FAST, 0.999, 100.0);
        assert_eq!(level.fire.len(), 3);
        assert!(level.fire[0].expr.contains("[1h]"));
        assert!(level.fire[1].expr.contains("[5m]"));
        assert!(level.fire[0..2].iter().all(|c| c.op == Op::Above && c.threshold == 0.0144));
        assert!(level.fire[2].expr.starts_with("(sum(increase(http_server_requests_total[1h]))"));
        assert_eq!(level.fire[2].threshold, 100.0);
        assert_eq!(level.clear.len(), 1);
        assert!(level.clear[0].expr.contains("[1m]"));
        assert_eq!((level.clear[0].op, level.clear[0].threshold), (Op::Below, 0.01));
    }

    #[test]
    fn tidy_removes_float_noise_only() {
        assert_eq!(tidy(14.4 * (1.0 - 0.999)), 0.0144);
        assert_eq!(tidy(0.1 + 0.2), 0.3);
        assert_eq!(tidy(123456.789), 123456.789);
        assert_eq!(tidy(0.0), 0.0);
    }
}
