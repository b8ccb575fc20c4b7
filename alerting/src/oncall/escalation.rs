//! The escalation plan of a page: who gets paged at which level, and when.
//!
//! The whole schedule is computed when the page starts ([`plan`]), so the
//! engine only has to ask which steps are [`due`] at the current (possibly
//! virtual) time and whom each step reaches ([`targets`]) at that instant.
//! Nothing here sleeps or reads a clock.
//!
//! Semantics, as configured per severity in the roster's `escalation:`
//! section (see [`Policy`]):
//! - step 0 is paged when the page starts (`after` = 0);
//! - step k+1 is due when step k has gone unacknowledged for the longest
//!   response target among step k's roles, so nobody is skipped before
//!   their own target has passed;
//! - a plan has `1 + repeat` steps; configured steps beyond that are
//!   dropped, and if fewer are configured the last one is repeated, so a
//!   silent page keeps re-paging its widest audience until the limit;
//! - acknowledging stops the plan; that state lives with the engine.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    model::Selector,
    roster::{Person, Roster},
};
use crate::rules::Severity;

/// One step of a page's escalation schedule, computed up front; the engine
/// pages step k when it is due and the page is still unacknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 0 for the first page, then 1, 2, … (shown to responders).
    pub level: usize,
    /// Since the page started.
    pub after: Duration,
    /// Role ids, deduplicated, in the order they were selected.
    pub roles: Vec<String>,
}

/// One person to page for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub level: usize,
    /// The role the person is paged for (the first one, if they hold several).
    pub role: String,
    pub person: Person,
}

/// The escalation schedule for a page of `severity` whose rule is owned by
/// `owner_role`. Never empty: a roster always has a policy with a step.
pub fn plan(roster: &Roster, severity: Severity, owner_role: &str) -> Vec<Step> {
    let policy = roster.escalation(severity);
    let mut steps = Vec::with_capacity(policy.repeat() + 1);
    let mut after = Duration::ZERO;
    for level in 0..=policy.repeat() {
        let Some(selectors) = policy.steps().get(level).or(policy.steps().last()) else {
            break;
        };
        let roles = expand(roster, selectors, owner_role);
        let wait =
            roles.iter().filter_map(|id| roster.role(id)).map(|role| role.response).max().unwrap_or(Duration::ZERO);
        steps.push(Step { level, after, roles });
        after = after.saturating_add(wait);
    }
    steps
}

fn expand(roster: &Roster, selectors: &[Selector], owner_role: &str) -> Vec<String> {
    let team = || roster.roles().iter().filter(|r| r.team).map(|r| r.id.as_str());
    let mut roles: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if !roles.iter().any(|r| r == id) {
            roles.push(id.to_owned());
        }
    };
    for selector in selectors {
        match selector {
            Selector::Owner if roster.role(owner_role).is_some() => add(owner_role),
            Selector::Owner | Selector::All => team().for_each(&mut add),
            Selector::Role(id) => add(id),
        }
    }
    roles
}

/// Who to page for `step` at `at`: each role's on-call person at that
/// instant (overrides included), once per person even when they cover
/// several roles, so nobody gets the same page twice in one step.
pub fn targets(roster: &Roster, step: &Step, at: DateTime<Utc>) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::with_capacity(step.roles.len());
    for role in &step.roles {
        let Some(person) = roster.on_call(role, at) else {
            continue;
        };
        if targets.iter().all(|t| t.person.id != person.id) {
            targets.push(Target { level: step.level, role: role.clone(), person: person.clone() });
        }
    }
    targets
}

/// How many steps of `plan` are due by `now` for an unacknowledged page
/// that started at `started`: the steps with `started + after <= now`
/// (a prefix, since `after` never decreases). The engine pages the steps
/// from the count it already paged up to this one; `now` is a parameter so
/// tests and replays can use virtual time.
pub fn due(plan: &[Step], started: DateTime<Utc>, now: DateTime<Utc>) -> usize {
    let Ok(elapsed) = (now - started).to_std() else {
        return 0;
    };
    plan.iter().take_while(|s| s.after <= elapsed).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid test instant").with_timezone(&Utc)
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    fn roles(step: &Step) -> Vec<&str> {
        step.roles.iter().map(String::as_str).collect()
    }

    fn afters(plan: &[Step]) -> Vec<Duration> {
        plan.iter().map(|s| s.after).collect()
    }

    const TEAM: [&str; 4] = ["incident-lead", "backend", "infra", "dba"];

    /// The seed team with one person per role and a backend override on
    /// 2025-06-01 (kim covers), plus optional extra roles (a `manager` gets a
    /// rotation too) and an optional `escalation:` block.
    fn roster_with(extra_roles: &str, escalation: &str) -> Roster {
        let text = format!(
            "zone: Asia/Seoul
people:
  - {{ id: kim, name: 김개발 }}
  - {{ id: lee, name: 이백엔드 }}
  - {{ id: park, name: 박인프라 }}
  - {{ id: choi, name: 최디비 }}
  - {{ id: boss, name: 오매니저 }}
roles:
  - {{ id: incident-lead, name: Incident lead, response_minutes: 5 }}
  - {{ id: backend, name: Backend engineer, response_minutes: 10 }}
  - {{ id: infra, name: Infra engineer, response_minutes: 15 }}
  - {{ id: dba, name: DBA, response_minutes: 20 }}
{extra_roles}
rotations:
  - {{ role: incident-lead, handoff: {{ weekday: mon, time: '09:00' }}, anchor: 2025-01-06, members: [kim] }}
  - {{ role: backend, handoff: {{ weekday: mon, time: '09:00' }}, anchor: 2025-01-06, members: [lee] }}
  - {{ role: infra, handoff: {{ weekday: mon, time: '09:00' }}, anchor: 2025-01-06, members: [park] }}
  - {{ role: dba, handoff: {{ weekday: mon, time: '09:00' }}, anchor: 2025-01-06, members: [choi] }}
{rotation}
overrides:
  - {{ role: backend, person: kim, start: '2025-06-01T00:00:00Z', end: '2025-06-02T00:00:00Z' }}
{escalation}
",
            rotation = if extra_roles.is_empty() {
                ""
            } else {
                "  - { role: manager, handoff: { weekday: mon, time: '09:00' }, anchor: 2025-01-06, members: [boss] }"
            },
        );
        Roster::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn manager() -> &'static str {
        "  - { id: manager, name: Manager, response_minutes: 30, team: false }"
    }

    #[test]
    fn a_warning_pages_the_owner_first_then_escalates_in_order() {
        let roster = Roster::example();
        let plan = plan(&roster, Severity::Warning, "backend");
        assert_eq!(plan.len(), 4, "first step plus the default 3 repeats");
        assert_eq!(roles(&plan[0]), ["backend"]);
        assert_eq!(roles(&plan[1]), ["incident-lead"]);
        assert_eq!(roles(&plan[2]), TEAM);
        assert_eq!(roles(&plan[3]), TEAM);
        // backend 10 min, then incident lead 5 min, then the DBA's 20 min.
        assert_eq!(afters(&plan), [0, 10, 15, 35].map(minutes));
        assert_eq!(plan.iter().map(|s| s.level).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_critical_page_calls_the_whole_team_at_once() {
        let roster = Roster::example();
        let plan = plan(&roster, Severity::Critical, "backend");
        assert_eq!(roles(&plan[0]), TEAM);
        assert_eq!(plan[0].after, Duration::ZERO);
        assert_eq!(afters(&plan), [0, 20, 40, 60].map(minutes));
        let at = utc("2025-03-04T03:00:00Z");
        let names: Vec<_> = targets(&roster, &plan[0], at).into_iter().map(|t| t.person.name).collect();
        assert_eq!(names, ["김개발", "이백엔드", "박인프라", "최디비"]);
    }

    #[test]
    fn a_critical_page_adds_the_manager_when_one_is_defined() {
        let roster = roster_with(manager(), "");
        let plan = plan(&roster, Severity::Critical, "dba");
        assert_eq!(roles(&plan[0]), TEAM, "an escalation-only role is not in `all`");
        assert_eq!(roles(&plan[1]), ["incident-lead", "backend", "infra", "dba", "manager"]);
        assert_eq!(afters(&plan), [0, 20, 50, 80].map(minutes));
    }

    #[test]
    fn the_repeat_limit_stops_the_plan() {
        let once = roster_with("", "escalation:\n  warning: { steps: [[owner], [incident-lead], [all]], repeat: 1 }");
        let plan_once = plan(&once, Severity::Warning, "infra");
        assert_eq!(plan_once.len(), 2);
        assert_eq!(roles(&plan_once[1]), ["incident-lead"]);

        let never = roster_with("", "escalation:\n  critical: { repeat: 0 }");
        assert_eq!(plan(&never, Severity::Critical, "infra").len(), 1);
    }

    #[test]
    fn a_configured_policy_replaces_the_default() {
        let roster = roster_with(manager(), "escalation:\n  warning: { steps: [[owner, dba], [manager]], repeat: 2 }");
        let plan = plan(&roster, Severity::Warning, "backend");
        assert_eq!(roles(&plan[0]), ["backend", "dba"]);
        assert_eq!(roles(&plan[1]), ["manager"]);
        assert_eq!(roles(&plan[2]), ["manager"]);
        assert_eq!(afters(&plan), [0, 20, 50].map(minutes));
    }

    #[test]
    fn an_unknown_owner_widens_to_the_whole_team() {
        let plan = plan(&Roster::example(), Severity::Warning, "nobody");
        assert_eq!(roles(&plan[0]), TEAM);
    }

    #[test]
    fn targets_resolve_people_at_the_instant_and_page_each_person_once() {
        let roster = roster_with("", "");
        let step =
            Step { level: 2, after: minutes(15), roles: vec!["incident-lead".into(), "backend".into(), "dba".into()] };
        // kim covers backend by override on 2025-06-01 and leads anyway.
        let covered = targets(&roster, &step, utc("2025-06-01T12:00:00Z"));
        let who: Vec<_> = covered.iter().map(|t| (t.role.as_str(), t.person.id.as_str())).collect();
        assert_eq!(who, [("incident-lead", "kim"), ("dba", "choi")]);
        assert!(covered.iter().all(|t| t.level == 2));

        let normal = targets(&roster, &step, utc("2025-06-02T00:00:00Z"));
        let who: Vec<_> = normal.iter().map(|t| t.person.id.as_str()).collect();
        assert_eq!(who, ["kim", "lee", "choi"]);
    }

    #[test]
    fn due_counts_the_steps_whose_time_has_come() {
        let plan = plan(&Roster::example(), Severity::Warning, "backend");
        let started = utc("2025-03-04T03:00:00Z");
        let at = |m: i64, s: i64| started + chrono::TimeDelta::seconds(m * 60 + s);
        assert_eq!(due(&plan, started, at(0, -1)), 0, "clock before the start");
        assert_eq!(due(&plan, started, started), 1);
        assert_eq!(due(&plan, started, at(9, 59)), 1);
        assert_eq!(due(&plan, started, at(10, 0)), 2);
        assert_eq!(due(&plan, started, at(14, 59)), 2);
        assert_eq!(due(&plan, started, at(15, 0)), 3);
        assert_eq!(due(&plan, started, at(35, 0)), 4);
        assert_eq!(due(&plan, started, at(24 * 60, 0)), 4, "the limit holds");
    }
}
