//! Weekly rotations that hand over at a local wall-clock time.
//!
//! People expect the handoff at "Monday 09:00" in their own zone, summer or
//! winter, so handoffs are computed in the rotation's IANA zone and only then
//! turned into UTC instants. A shift is therefore 167, 168 or 169 hours long
//! around DST changes, never a fixed 7 × 24 h.

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// Why a rotation cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("rotation has no members")]
    NoMembers,
    #[error("anchor {anchor} is a {actual:?}, but the handoff is on {handoff:?}")]
    AnchorWeekday { anchor: NaiveDate, actual: Weekday, handoff: Weekday },
}

/// A weekly rotation: `members[0]` is on call from the handoff on `anchor`,
/// `members[1]` from the handoff a week later, and so on, cycling. Weeks
/// before the anchor cycle backwards, so every instant has someone on call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    zone: Tz,
    weekday: Weekday,
    time: NaiveTime,
    anchor: NaiveDate,
    members: Vec<String>,
}

/// One person's turn: on call for `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Weeks since the anchor's handoff (negative before it).
    pub week: i64,
    /// Index into [`Rotation::members`].
    pub member: usize,
}

impl Rotation {
    /// The only constructor, so a rotation always has someone to page and an
    /// anchor that is itself a handoff day.
    pub fn new(
        zone: Tz,
        weekday: Weekday,
        time: NaiveTime,
        anchor: NaiveDate,
        members: Vec<String>,
    ) -> Result<Rotation, RotationError> {
        if members.is_empty() {
            return Err(RotationError::NoMembers);
        }
        if anchor.weekday() != weekday {
            return Err(RotationError::AnchorWeekday { anchor, actual: anchor.weekday(), handoff: weekday });
        }
        Ok(Rotation { zone, weekday, time, anchor, members })
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn weekday(&self) -> Weekday {
        self.weekday
    }

    pub fn time(&self) -> NaiveTime {
        self.time
    }

    pub fn anchor(&self) -> NaiveDate {
        self.anchor
    }

    /// Person ids, in rotation order.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The instant of the handoff scheduled at the local date `date`
    /// (any date; callers pass handoff weekdays). See [`resolve_local`] for
    /// wall times that DST skips or repeats.
    pub fn handoff_on(&self, date: NaiveDate) -> Option<DateTime<Utc>> {
        resolve_local(self.zone, date.and_time(self.time))
    }

    /// The shift that contains `at`. `None` only near the ends of chrono's
    /// representable range (hundreds of thousands of years away).
    pub fn shift_at(&self, at: DateTime<Utc>) -> Option<Shift> {
        let today = at.with_timezone(&self.zone).date_naive();
        let back = (7 + today.weekday().num_days_from_monday() - self.weekday.num_days_from_monday()) % 7;
        let mut day = today.checked_sub_days(Days::new(u64::from(back)))?;
        // This week's handoff may still be ahead (Monday 08:00 before a
        // 09:00 handoff); then the shift began a week earlier. A handoff on a
        // later local date is always later than `at`, so one step suffices.
        if self.handoff_on(day)? > at {
            day = day.checked_sub_days(Days::new(7))?;
        }
        let next = day.checked_add_days(Days::new(7))?;
        let week = (day - self.anchor).num_days().div_euclid(7);
        let len = i64::try_from(self.members.len()).ok()?;
        Some(Shift {
            start: self.handoff_on(day)?,
            end: self.handoff_on(next)?,
            week,
            member: usize::try_from(week.rem_euclid(len)).ok()?,
        })
    }

    /// Id of the person on call at `at`.
    pub fn on_call(&self, at: DateTime<Utc>) -> Option<&str> {
        let shift = self.shift_at(at)?;
        self.members.get(shift.member).map(String::as_str)
    }
}

/// A local wall time as an instant, deterministic across DST changes:
/// - a time repeated by a fall-back (02:30 twice) takes the earlier instant,
///   so the handoff happens as soon as the wall clock first shows it;
/// - a time skipped by a spring-forward (02:30 that never occurs) moves to
///   the first valid instant after the gap (03:00 new time), i.e. the moment
///   of the transition itself: the earliest moment the handoff "has passed".
///
/// The gap search walks whole minutes, which is exact for every zone whose
/// transitions fall on a minute (all current ones); gaps up to two days
/// (Samoa skipped a whole day in 2011) are covered.
pub fn resolve_local(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    const MAX_GAP_MINUTES: i64 = 2 * 24 * 60;
    let mut wall = local;
    for _ in 0..=MAX_GAP_MINUTES {
        match zone.from_local_datetime(&wall) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                return Some(a.min(b).with_timezone(&Utc));
            }
            LocalResult::None => {
                // Round down to the minute first so a handoff with seconds
                // lands on the same minute grid as the transition.
                let step = TimeDelta::seconds(60 - wall.and_utc().timestamp().rem_euclid(60));
                wall = wall.checked_add_signed(step)?;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Europe::Berlin};
    use proptest::prelude::*;

    fn members() -> Vec<String> {
        ["ana", "ben", "cho"].map(String::from).to_vec()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("valid test time")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid test instant").with_timezone(&Utc)
    }

    /// Monday 09:00 local, anchored on Monday 2024-01-01.
    fn monday_nine(zone: Tz) -> Rotation {
        Rotation::new(zone, Weekday::Mon, hm(9, 0), date(2024, 1, 1), members()).expect("valid rotation")
    }

    /// Sunday 02:30 in Berlin: skipped on spring-forward Sundays, repeated
    /// on fall-back Sundays.
    fn sunday_two_thirty() -> Rotation {
        Rotation::new(Berlin, Weekday::Sun, hm(2, 30), date(2024, 1, 7), members()).expect("valid rotation")
    }

    fn is_monday_nine_local(zone: Tz, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&zone).naive_local();
        local.weekday() == Weekday::Mon && local.time() == hm(9, 0)
    }

    #[test]
    fn the_first_member_is_on_call_from_the_anchor_handoff() {
        let r = monday_nine(Berlin);
        assert_eq!(r.on_call(utc("2024-01-01T08:00:00Z")), Some("ana"));
        assert_eq!(r.on_call(utc("2024-01-01T07:59:59Z")), Some("cho"));
        assert_eq!(r.on_call(utc("2024-01-08T08:00:00Z")), Some("ben"));
        assert_eq!(r.on_call(utc("2024-01-15T08:00:00Z")), Some("cho"));
        assert_eq!(r.on_call(utc("2024-01-22T08:00:00Z")), Some("ana"));
    }

    #[test]
    fn weeks_before_the_anchor_cycle_backwards() {
        let r = monday_nine(Berlin);
        let s = r.shift_at(utc("2023-12-20T12:00:00Z")).expect("in range");
        assert_eq!((s.week, s.member), (-2, 1));
    }

    #[test]
    fn shifts_across_berlin_dst_changes_last_167_and_169_hours() {
        let r = monday_nine(Berlin);
        // Clocks go forward on Sunday 2025-03-30, back on Sunday 2025-10-26.
        let spring = r.shift_at(utc("2025-03-30T12:00:00Z")).expect("in range");
        assert_eq!(spring.start, utc("2025-03-24T08:00:00Z"));
        assert_eq!(spring.end, utc("2025-03-31T07:00:00Z"));
        assert_eq!((spring.end - spring.start).num_hours(), 167);
        let autumn = r.shift_at(utc("2025-10-26T12:00:00Z")).expect("in range");
        assert_eq!(autumn.start, utc("2025-10-20T07:00:00Z"));
        assert_eq!(autumn.end, utc("2025-10-27T08:00:00Z"));
        assert_eq!((autumn.end - autumn.start).num_hours(), 169);
    }

    #[test]
    fn shifts_across_new_york_dst_changes_last_167_and_169_hours() {
        let r = monday_nine(New_York);
        // Clocks go forward on Sunday 2025-03-09, back on Sunday 2025-11-02.
        let spring = r.shift_at(utc("2025-03-09T12:00:00Z")).expect("in range");
        assert_eq!(spring.start, utc("2025-03-03T14:00:00Z"));
        assert_eq!(spring.end, utc("2025-03-10T13:00:00Z"));
        let autumn = r.shift_at(utc("2025-11-02T12:00:00Z")).expect("in range");
        assert_eq!(autumn.start, utc("2025-10-27T13:00:00Z"));
        assert_eq!(autumn.end, utc("2025-11-03T14:00:00Z"));
    }

    #[test]
    fn a_handoff_in_the_spring_forward_gap_moves_to_the_end_of_the_gap() {
        let r = sunday_two_thirty();
        // 2025-03-30 02:30 does not exist in Berlin; 03:00 CEST = 01:00 UTC.
        assert_eq!(r.handoff_on(date(2025, 3, 30)), Some(utc("2025-03-30T01:00:00Z")));
        let before = r.shift_at(utc("2025-03-30T00:59:59Z")).expect("in range");
        let after = r.shift_at(utc("2025-03-30T01:00:00Z")).expect("in range");
        assert_eq!(before.end, after.start);
        assert_eq!(after.week, before.week + 1);
    }

    #[test]
    fn a_handoff_in_the_fall_back_overlap_takes_the_earlier_instant() {
        let r = sunday_two_thirty();
        // 2025-10-26 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET).
        assert_eq!(r.handoff_on(date(2025, 10, 26)), Some(utc("2025-10-26T00:30:00Z")));
        let s = r.shift_at(utc("2025-10-26T01:00:00Z")).expect("in range");
        assert_eq!(s.start, utc("2025-10-26T00:30:00Z"));
    }

    #[test]
    fn a_rotation_needs_members_and_an_anchor_on_the_handoff_day() {
        assert_eq!(
            Rotation::new(Berlin, Weekday::Mon, hm(9, 0), date(2024, 1, 1), vec![]),
            Err(RotationError::NoMembers)
        );
        let err =
            Rotation::new(Berlin, Weekday::Mon, hm(9, 0), date(2024, 1, 2), members()).expect_err("Tuesday anchor");
        assert_eq!(err.to_string(), "anchor 2024-01-02 is a Tue, but the handoff is on Mon");
    }

    /// Instants from 2023 through 2029: seven springs and autumns per zone.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (1_672_531_200i64..1_893_456_000i64).prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range"))
    }

    fn zone() -> impl Strategy<Value = Tz> {
        prop_oneof![Just(Berlin), Just(New_York)]
    }

    proptest! {
        #[test]
        fn exactly_one_shift_holds_each_instant_and_hands_over_monday_nine_local(
            zone in zone(),
            at in instant(),
            frac in 0.0f64..1.0,
        ) {
            let r = monday_nine(zone);
            let s = r.shift_at(at).expect("in range");
            prop_assert!(s.start <= at && at < s.end, "{at} not in {s:?}");
            prop_assert!(is_monday_nine_local(zone, s.start), "start {}", s.start);
            prop_assert!(is_monday_nine_local(zone, s.end), "end {}", s.end);
            let hours = (s.end - s.start).num_seconds() as f64 / 3600.0;
            prop_assert!([167.0, 168.0, 169.0].contains(&hours), "{hours} h");

            // Nobody else is on call anywhere inside the shift.
            let len = (s.end - s.start).num_seconds();
            let inside = s.start + TimeDelta::seconds((len as f64 * frac) as i64);
            prop_assert_eq!(r.shift_at(inside), Some(s.clone()));
            prop_assert_eq!(r.shift_at(s.end - TimeDelta::seconds(1)), Some(s.clone()));

            // The person changes exactly at the handoff, to the next member.
            let next = r.shift_at(s.end).expect("in range");
            prop_assert_eq!(next.start, s.end);
            prop_assert_eq!(next.week, s.week + 1);
            prop_assert_eq!(next.member, (s.member + 1) % r.members().len());
            let prev = r.shift_at(s.start - TimeDelta::seconds(1)).expect("in range");
            prop_assert_eq!(prev.end, s.start);
            prop_assert_eq!(prev.week, s.week - 1);
        }

        #[test]
        fn shifts_tile_time_even_when_the_handoff_falls_in_a_dst_gap(at in instant()) {
            let r = sunday_two_thirty();
            let s = r.shift_at(at).expect("in range");
            prop_assert!(s.start <= at && at < s.end);
            let next = r.shift_at(s.end).expect("in range");
            prop_assert_eq!(next.start, s.end);
            prop_assert_eq!(next.member, (s.member + 1) % r.members().len());
        }
    }
}
