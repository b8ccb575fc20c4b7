//! The roster file: people, roles, weekly rotations, overrides and the
//! escalation policy, validated as a whole at load so a typo fails the
//! deploy instead of a page at 3 a.m.
//!
//! Every rejection names the file and, where the YAML has one, the line of
//! the offending value: `roster.yaml:12: unknown role `dbaa` in override`.

use std::{collections::BTreeMap, path::Path, time::Duration};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use super::model::{Policy, Selector};
use super::rotation::{Rotation, RotationError};
use crate::rules::Severity;

/// Someone who can be paged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Stable id used by rotations and overrides (`kim`).
    pub id: String,
    /// Display name (`김개발`).
    pub name: String,
    /// Slack member id (`U01ABC…`), the handle Slack mentions need.
    pub slack: Option<String>,
    pub email: Option<String>,
}

/// A responsibility with its own rotation and response target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// `incident-lead`, `backend`, `infra`, `dba`, …; rules name their owner by it.
    pub id: String,
    pub name: String,
    /// How long a page to this role may go unacknowledged before it escalates.
    pub response: Duration,
    /// Whether `all` in an escalation step includes this role. `false` suits
    /// roles that are only escalated to, such as `manager`.
    pub team: bool,
}

/// A temporary swap: `person` holds `role` within `[start, end)` instead
/// of the rotation's member (vacation, sick day, trading a weekend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub role: String,
    pub person: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: Option<String>,
}

/// A validated roster: every reference resolves, every role has exactly one
/// rotation, and both severities have an escalation policy.
#[derive(Debug, Clone)]
pub struct Roster {
    origin: String,
    people: Vec<Person>,
    roles: Vec<Role>,
    rotations: BTreeMap<String, Rotation>,
    overrides: Vec<Override>,
    warning: Policy,
    critical: Policy,
}

/// Where a problem is (the platform's one YAML location).
pub use yamlerr::At as Place;

/// Why a roster was rejected. Every variant's message starts with the file
/// (and line), in the `file:line: message` form editors jump to.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("{origin}: cannot read the roster file")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or not the roster's shape (unknown field, wrong type).
    #[error("{at}: {message}")]
    Syntax { at: Place, message: String },
    /// Well-formed, but inconsistent (unknown reference, duplicate id, …).
    #[error("{at}: {message}")]
    Invalid { at: Place, message: String },
}

impl RosterError {
    /// The 1-based line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            RosterError::Read { .. } => None,
            RosterError::Syntax { at, .. } | RosterError::Invalid { at, .. } => at.line,
        }
    }
}

impl Roster {
    /// Reads and validates a roster file; messages name it by `path`.
    pub fn load(path: &Path) -> Result<Roster, RosterError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Roster::parse(&text, &origin),
            Err(source) => Err(RosterError::Read { origin, source }),
        }
    }

    /// Parses and validates roster YAML; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Roster, RosterError> {
        let raw: RawRoster = serde_norway::from_str(text).map_err(|e| syntax(origin, &e))?;
        Build { text, origin }.roster(raw)
    }

    /// The roster shipped in `alerting/config/roster.yaml` (the seed team),
    /// compiled in so demos and tests run without a config directory.
    pub fn example() -> Roster {
        const TEXT: &str = include_str!("../../config/roster.yaml");
        // Not user input: a test parses the same text, so this cannot fail
        // in a build that passed its tests.
        Roster::parse(TEXT, "config/roster.yaml").unwrap_or_else(|e| panic!("the shipped roster is invalid: {e}"))
    }

    /// The file this roster came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn person(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id == id)
    }

    pub fn people(&self) -> &[Person] {
        &self.people
    }

    /// Callers use this to reject rules whose owner role does not exist.
    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }

    /// In file order, which is also the order `all` pages them in.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn rotation(&self, role: &str) -> Option<&Rotation> {
        self.rotations.get(role)
    }

    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    pub fn escalation(&self, severity: Severity) -> &Policy {
        match severity {
            Severity::Warning => &self.warning,
            Severity::Critical => &self.critical,
        }
    }

    /// Who holds `role` at `at`: an override covering `at` if any (the last
    /// one listed wins, so a short swap can be written after a long cover),
    /// otherwise the rotation's member. `None` only for an unknown role.
    pub fn on_call(&self, role: &str, at: DateTime<Utc>) -> Option<&Person> {
        let swapped = self.overrides.iter().rev().find(|o| o.role == role && o.start <= at && at < o.end);
        let id = match swapped {
            Some(o) => o.person.as_str(),
            None => self.rotations.get(role)?.on_call(at)?,
        };
        self.person(id)
    }
}

// --- The file format -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    /// Default zone for rotations that do not name one.
    zone: Option<String>,
    people: Vec<RawPerson>,
    roles: Vec<RawRole>,
    #[serde(default)]
    rotations: Vec<RawRotation>,
    #[serde(default)]
    overrides: Vec<RawOverride>,
    #[serde(default)]
    escalation: RawEscalation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerson {
    id: String,
    name: String,
    slack: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    id: String,
    name: String,
    response_minutes: u64,
    #[serde(default = "yes")]
    team: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    role: String,
    zone: Option<String>,
    handoff: RawHandoff,
    anchor: String,
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandoff {
    weekday: String,
    time: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    role: String,
    person: String,
    start: String,
    end: String,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    warning: Option<RawPolicy>,
    critical: Option<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    steps: Option<Vec<Vec<String>>>,
    #[serde(default = "default_repeat")]
    repeat: usize,
}

fn default_repeat() -> usize {
    Policy::DEFAULT_REPEAT
}

/// A serde error as `file:line: message`, without serde_norway's own
/// " at line L column C" suffix so the line is not stated twice.
fn syntax(origin: &str, err: &serde_norway::Error) -> RosterError {
    let (at, message) = yamlerr::locate(err, origin, 0);
    RosterError::Syntax { at, message }
}

// --- Validation ------------------------------------------------------------

/// A step in a path to a YAML node (`overrides[2].role`).
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

use Seg::{Index as I, Key as K};

struct Build<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Build<'_> {
    fn fail(&self, path: &[Seg<'_>], message: String) -> RosterError {
        RosterError::Invalid {
            at: Place { origin: self.origin.to_owned(), line: locate::line(self.text, path) },
            message,
        }
    }

    fn roster(&self, raw: RawRoster) -> Result<Roster, RosterError> {
        let zone = match &raw.zone {
            Some(name) => Some(self.zone(name, &[K("zone")])?),
            None => None,
        };
        let people = self.people(raw.people)?;
        let roles = self.roles(raw.roles)?;
        let has_person = |id: &str| people.iter().any(|p| p.id == id);
        let has_role = |id: &str| roles.iter().any(|r| r.id == id);

        let mut rotations = BTreeMap::new();
        for (i, r) in raw.rotations.into_iter().enumerate() {
            let here = |rest: &[Seg<'static>]| [&[K("rotations"), I(i)], rest].concat();
            if !has_role(&r.role) {
                let msg = format!("unknown role `{}` in rotation", r.role);
                return Err(self.fail(&here(&[K("role")]), msg));
            }
            if rotations.contains_key(&r.role) {
                let msg = format!("role `{}` has a second rotation", r.role);
                return Err(self.fail(&here(&[K("role")]), msg));
            }
            let zone = match (&r.zone, zone) {
                (Some(name), _) => self.zone(name, &here(&[K("zone")]))?,
                (None, Some(zone)) => zone,
                (None, None) => {
                    let msg =
                        format!("rotation for `{}` has no zone: set `zone` on it or at the top of the file", r.role);
                    return Err(self.fail(&here(&[]), msg));
                }
            };
            let Ok(weekday) = r.handoff.weekday.parse::<Weekday>() else {
                let msg = format!("invalid handoff weekday `{}` (expected monday … sunday)", r.handoff.weekday);
                return Err(self.fail(&here(&[K("handoff"), K("weekday")]), msg));
            };
            let Ok(time) = NaiveTime::parse_from_str(&r.handoff.time, "%H:%M") else {
                let msg = format!("invalid handoff time `{}` (expected HH:MM, 24-hour)", r.handoff.time);
                return Err(self.fail(&here(&[K("handoff"), K("time")]), msg));
            };
            let Ok(anchor) = NaiveDate::parse_from_str(&r.anchor, "%Y-%m-%d") else {
                let msg = format!("invalid anchor date `{}` (expected YYYY-MM-DD)", r.anchor);
                return Err(self.fail(&here(&[K("anchor")]), msg));
            };
            if let Some((j, id)) = r.members.iter().enumerate().find(|(_, id)| !has_person(id)) {
                let msg = format!("unknown person `{id}` in rotation for `{}`", r.role);
                return Err(self.fail(&here(&[K("members"), I(j)]), msg));
            }
            let rotation = Rotation::new(zone, weekday, time, anchor, r.members).map_err(|e| {
                let path = match e {
                    RotationError::NoMembers => here(&[K("members")]),
                    RotationError::AnchorWeekday { .. } => here(&[K("anchor")]),
                };
                self.fail(&path, format!("rotation for `{}`: {e}", r.role))
            })?;
            rotations.insert(r.role, rotation);
        }
        if let Some((i, role)) = roles.iter().enumerate().find(|(_, role)| !rotations.contains_key(&role.id)) {
            let msg = format!("role `{}` has no rotation", role.id);
            return Err(self.fail(&[K("roles"), I(i)], msg));
        }

        let mut overrides = Vec::with_capacity(raw.overrides.len());
        for (i, o) in raw.overrides.into_iter().enumerate() {
            let here = |field: &'static str| [K("overrides"), I(i), K(field)];
            if !has_role(&o.role) {
                let msg = format!("unknown role `{}` in override", o.role);
                return Err(self.fail(&here("role"), msg));
            }
            if !has_person(&o.person) {
                let msg = format!("unknown person `{}` in override", o.person);
                return Err(self.fail(&here("person"), msg));
            }
            let start = self.instant(&o.start, "start", &here("start"))?;
            let end = self.instant(&o.end, "end", &here("end"))?;
            if end <= start {
                let msg = format!("override ends at or before it starts ({} <= {})", o.end, o.start);
                return Err(self.fail(&here("end"), msg));
            }
            overrides.push(Override { role: o.role, person: o.person, start, end, reason: o.reason });
        }

        let ids: Vec<&str> = roles.iter().map(|r| r.id.as_str()).collect();
        let warning = self.policy(raw.escalation.warning, Severity::Warning, &ids)?;
        let critical = self.policy(raw.escalation.critical, Severity::Critical, &ids)?;
        Ok(Roster { origin: self.origin.to_owned(), people, roles, rotations, overrides, warning, critical })
    }

    fn people(&self, raw: Vec<RawPerson>) -> Result<Vec<Person>, RosterError> {
        let mut people: Vec<Person> = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let here = |field: &'static str| [K("people"), I(i), K(field)];
            self.id(&p.id, "person", &here("id"))?;
            if people.iter().any(|q| q.id == p.id) {
                return Err(self.fail(&here("id"), format!("duplicate person id `{}`", p.id)));
            }
            if p.name.trim().is_empty() {
                return Err(self.fail(&here("name"), format!("person `{}` has no name", p.id)));
            }
            if let Some(slack) = &p.slack {
                // Member ids, not display names: Slack only notifies on `<@U…>`.
                let ok = slack.len() >= 3
                    && slack.starts_with(['U', 'W'])
                    && slack.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if !ok {
                    let msg = format!("invalid Slack member id `{slack}` (expected like U01ABC)");
                    return Err(self.fail(&here("slack"), msg));
                }
            }
            if let Some(email) = &p.email {
                let ok = email
                    .split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'));
                if !ok {
                    let msg = format!("invalid email address `{email}`");
                    return Err(self.fail(&here("email"), msg));
                }
            }
            people.push(Person { id: p.id, name: p.name, slack: p.slack, email: p.email });
        }
        Ok(people)
    }

    fn roles(&self, raw: Vec<RawRole>) -> Result<Vec<Role>, RosterError> {
        /// A day: a longer target is not an on-call response any more.
        const MAX_MINUTES: u64 = 24 * 60;
        let mut roles: Vec<Role> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let here = |field: &'static str| [K("roles"), I(i), K(field)];
            self.id(&r.id, "role", &here("id"))?;
            if matches!(r.id.as_str(), "owner" | "all") {
                let msg = format!("role id `{}` is reserved for escalation steps", r.id);
                return Err(self.fail(&here("id"), msg));
            }
            if roles.iter().any(|q| q.id == r.id) {
                return Err(self.fail(&here("id"), format!("duplicate role id `{}`", r.id)));
            }
            if !(1..=MAX_MINUTES).contains(&r.response_minutes) {
                let msg = format!(
                    "role `{}`: response target must be 1 to {MAX_MINUTES} minutes, not {}",
                    r.id, r.response_minutes
                );
                return Err(self.fail(&here("response_minutes"), msg));
            }
            roles.push(Role {
                id: r.id,
                name: r.name,
                response: Duration::from_secs(r.response_minutes * 60),
                team: r.team,
            });
        }
        if !roles.iter().any(|r| r.team) {
            let msg = "no role is on the response team (every role has `team: false`)".to_owned();
            return Err(self.fail(&[K("roles")], msg));
        }
        Ok(roles)
    }

    fn policy(&self, raw: Option<RawPolicy>, severity: Severity, roles: &[&str]) -> Result<Policy, RosterError> {
        let default = Policy::default_for(severity, roles);
        let Some(raw) = raw else {
            return Ok(default);
        };
        let sev = severity.as_str();
        let here = |rest: &[Seg<'static>]| [&[K("escalation"), K(sev)], rest].concat();
        if raw.repeat > Policy::MAX_REPEAT {
            let msg = format!("escalation.{sev}: repeat must be at most {}, not {}", Policy::MAX_REPEAT, raw.repeat);
            return Err(self.fail(&here(&[K("repeat")]), msg));
        }
        let steps = match raw.steps {
            None => default.steps().to_vec(),
            Some(steps) if steps.is_empty() => {
                let msg = format!("escalation.{sev} has no steps");
                return Err(self.fail(&here(&[K("steps")]), msg));
            }
            Some(steps) => {
                let mut parsed = Vec::with_capacity(steps.len());
                for (i, step) in steps.into_iter().enumerate() {
                    if step.is_empty() {
                        let msg = format!("escalation.{sev}: step {i} pages nobody");
                        return Err(self.fail(&here(&[K("steps"), I(i)]), msg));
                    }
                    let mut selectors = Vec::with_capacity(step.len());
                    for (j, name) in step.into_iter().enumerate() {
                        selectors.push(match name.as_str() {
                            "owner" => Selector::Owner,
                            "all" => Selector::All,
                            id if roles.contains(&id) => Selector::Role(name),
                            _ => {
                                let msg = format!(
                                    "unknown role `{name}` in escalation step (expected a role id, `owner` or `all`)"
                                );
                                return Err(self.fail(&here(&[K("steps"), I(i), I(j)]), msg));
                            }
                        });
                    }
                    parsed.push(selectors);
                }
                parsed
            }
        };
        Policy::new(steps, raw.repeat)
            .ok_or_else(|| self.fail(&here(&[]), format!("escalation.{sev} is not a usable policy")))
    }

    /// Ids appear in YAML, URLs and Slack commands: keep them plain.
    fn id(&self, id: &str, kind: &str, path: &[Seg<'_>]) -> Result<(), RosterError> {
        let ok =
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(())
        } else {
            let msg = format!("invalid {kind} id `{id}` (use lowercase letters, digits, `-`, `_`, `.`)");
            Err(self.fail(path, msg))
        }
    }

    fn zone(&self, name: &str, path: &[Seg<'_>]) -> Result<Tz, RosterError> {
        name.parse::<Tz>().map_err(|_| {
            let msg = format!("unknown time zone `{name}` (expected an IANA name like Asia/Seoul)");
            self.fail(path, msg)
        })
    }

    fn instant(&self, text: &str, what: &str, path: &[Seg<'_>]) -> Result<DateTime<Utc>, RosterError> {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
            let msg = format!("invalid override {what} `{text}` (expected RFC 3339, like 2025-03-01T09:00:00+09:00)");
            self.fail(path, msg)
        })
    }
}

/// Finds the line of a node after validation, by deserializing the text
/// again with a visitor that walks `path` and fails on the node it reaches:
/// serde_norway stamps that failure with the node's position. serde_norway
/// has no span type, and a second pass only happens on the error path.
mod locate {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::Seg;

    pub(super) fn line(text: &str, path: &[Seg<'_>]) -> Option<usize> {
        let de = serde_norway::Deserializer::from_str(text);
        match (Walk { path }).deserialize(de) {
            Ok(()) => None,
            Err(e) => e.location().map(|loc| loc.line()),
        }
    }

    struct Walk<'p, 'a> {
        path: &'p [Seg<'a>],
    }

    /// The target node: accepts nothing, so serde_norway reports where it is.
    struct Here;

    impl<'de> Visitor<'de> for Here {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the node being located")
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
        type Value = ();

        fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            if self.path.is_empty() { de.deserialize_any(Here) } else { de.deserialize_any(self) }
        }
    }

    impl<'de> Visitor<'de> for Walk<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML node")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                match self.path.split_first() {
                    Some((Seg::Key(want), rest)) if key == *want => {
                        map.next_value_seed(Walk { path: rest })?;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0;
            loop {
                let found = match self.path.split_first() {
                    Some((Seg::Index(want), rest)) if index == *want => seq.next_element_seed(Walk { path: rest })?,
                    _ => seq.next_element::<IgnoredAny>()?.map(|_| ()),
                };
                if found.is_none() {
                    return Ok(());
                }
                index += 1;
            }
        }

        // Scalars: the path leads past a leaf, so the node does not exist.
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid test instant").with_timezone(&Utc)
    }

    /// A small valid roster; tests break one thing in it with `replace`.
    const BASE: &str = "\
zone: Europe/Berlin
people:
  - id: ana
    name: Ana
    slack: U01ANA
    email: ana@example.com
  - id: ben
    name: Ben
  - id: cho
    name: Cho
roles:
  - id: backend
    name: Backend engineer
    response_minutes: 10
  - id: dba
    name: DBA
    response_minutes: 20
rotations:
  - role: backend
    handoff: { weekday: monday, time: '09:00' }
    anchor: 2025-01-06
    members: [ana, ben]
  - role: dba
    zone: Asia/Seoul
    handoff: { weekday: monday, time: '09:00' }
    anchor: 2025-01-06
    members: [cho]
overrides:
  - role: dba
    person: ana
    start: 2025-03-01T09:00:00+09:00
    end: 2025-03-02T09:00:00+09:00
    reason: cho at a conference
";

    fn parse(text: &str) -> Result<Roster, RosterError> {
        Roster::parse(text, "roster.yaml")
    }

    /// Replaces `from` (which must occur) and returns the parse error text.
    fn error_after(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "test edits a line that exists: {from}");
        match parse(&BASE.replacen(from, to, 1)) {
            Ok(_) => panic!("`{from}` -> `{to}` should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_base_roster_is_valid() {
        let roster = parse(BASE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(roster.roles().len(), 2);
        assert_eq!(roster.role("dba").map(|r| r.response), Some(Duration::from_secs(1200)));
        assert!(roster.role("dbaa").is_none());
        assert_eq!(roster.person("ana").and_then(|p| p.slack.as_deref()), Some("U01ANA"));
        assert_eq!(roster.rotation("dba").map(|r| r.zone()), Some(chrono_tz::Asia::Seoul));
        assert_eq!(roster.rotation("backend").map(|r| r.zone()), Some(chrono_tz::Europe::Berlin));
    }

    #[test]
    fn the_shipped_roster_holds_the_seed_team_and_targets() {
        let text = include_str!("../../config/roster.yaml");
        let roster = Roster::parse(text, "roster.yaml").unwrap_or_else(|e| panic!("{e}"));
        let seed = [
            ("incident-lead", "김개발", 5),
            ("backend", "이백엔드", 10),
            ("infra", "박인프라", 15),
            ("dba", "최디비", 20),
        ];
        for (role, name, minutes) in seed {
            let r = roster.role(role).unwrap_or_else(|| panic!("role {role}"));
            assert_eq!(r.response, Duration::from_secs(minutes * 60), "{role}");
            let rotation = roster.rotation(role).unwrap_or_else(|| panic!("rotation {role}"));
            assert!(rotation.members().len() >= 2, "{role} rotates");
            assert_eq!(rotation.zone(), chrono_tz::Asia::Seoul);
            // The seed person takes the first week (Monday 2025-01-06 09:00 KST).
            let first = roster.on_call(role, utc("2025-01-06T00:00:00Z"));
            assert_eq!(first.map(|p| p.name.as_str()), Some(name), "{role}");
            let second = roster.on_call(role, utc("2025-01-13T00:00:00Z"));
            assert_ne!(second.map(|p| p.name.as_str()), Some(name), "{role} hands over");
        }
        assert_eq!(Roster::example().people().len(), roster.people().len());
    }

    #[test]
    fn an_override_wins_inside_its_window_and_not_outside() {
        let roster = parse(BASE).unwrap_or_else(|e| panic!("{e}"));
        let who = |at: &str| roster.on_call("dba", utc(at)).map(|p| p.id.as_str());
        assert_eq!(who("2025-02-28T23:59:59Z"), Some("cho"));
        assert_eq!(who("2025-03-01T00:00:00Z"), Some("ana"), "start is inclusive");
        assert_eq!(who("2025-03-01T23:59:59Z"), Some("ana"));
        assert_eq!(who("2025-03-02T00:00:00Z"), Some("cho"), "end is exclusive");
        // Other roles are untouched by a dba override.
        let backend = roster.on_call("backend", utc("2025-03-01T12:00:00Z"));
        assert_eq!(backend.map(|p| p.id.as_str()), Some("ben"));
        assert!(roster.on_call("nobody", utc("2025-03-01T12:00:00Z")).is_none());
    }

    #[test]
    fn a_later_override_wins_over_an_earlier_one() {
        let text = format!(
            "{BASE}  - {{ role: dba, person: ben, start: '2025-03-01T12:00:00Z', end: '2025-03-01T13:00:00Z' }}\n"
        );
        let roster = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let who = |at: &str| roster.on_call("dba", utc(at)).map(|p| p.id.as_str());
        assert_eq!(who("2025-03-01T11:59:59Z"), Some("ana"));
        assert_eq!(who("2025-03-01T12:30:00Z"), Some("ben"));
        assert_eq!(who("2025-03-01T13:00:00Z"), Some("ana"));
    }

    #[test]
    fn a_yaml_syntax_error_names_file_and_line() {
        let err = error_after("    name: Ben\n", "    name: Ben\n   oops: [\n");
        assert_eq!(
            err,
            "roster.yaml:9: did not find expected '-' indicator, \
             while parsing a block collection at line 3 column 3"
        );
    }

    #[test]
    fn an_unknown_field_is_rejected_with_its_line() {
        let err = error_after("    response_minutes: 20", "    response_minute: 20");
        assert!(err.starts_with("roster.yaml:17: roles[1]: unknown field `response_minute`"), "{err}");
    }

    #[test]
    fn unknown_references_name_their_line() {
        assert_eq!(
            error_after("  - role: dba\n    person", "  - role: dbaa\n    person"),
            "roster.yaml:29: unknown role `dbaa` in override"
        );
        assert_eq!(error_after("person: ana", "person: anna"), "roster.yaml:30: unknown person `anna` in override");
        assert_eq!(
            error_after("members: [ana, ben]", "members: [ana, bne]"),
            "roster.yaml:22: unknown person `bne` in rotation for `backend`"
        );
        assert_eq!(
            error_after("  - role: backend\n", "  - role: backnd\n"),
            "roster.yaml:19: unknown role `backnd` in rotation"
        );
    }

    #[test]
    fn an_unknown_time_zone_is_rejected() {
        assert_eq!(
            error_after("zone: Asia/Seoul", "zone: Asia/Seol"),
            "roster.yaml:24: unknown time zone `Asia/Seol` (expected an IANA name like Asia/Seoul)"
        );
        assert!(error_after("zone: Europe/Berlin", "zone: CEST").starts_with("roster.yaml:1: "));
    }

    #[test]
    fn a_rotation_with_no_members_is_rejected() {
        assert_eq!(
            error_after("members: [cho]", "members: []"),
            "roster.yaml:27: rotation for `dba`: rotation has no members"
        );
    }

    #[test]
    fn an_override_must_end_after_it_starts() {
        assert_eq!(
            error_after("end: 2025-03-02T09:00:00+09:00", "end: 2025-03-01T09:00:00+09:00"),
            "roster.yaml:32: override ends at or before it starts \
             (2025-03-01T09:00:00+09:00 <= 2025-03-01T09:00:00+09:00)"
        );
        assert_eq!(
            error_after("end: 2025-03-02T09:00:00+09:00", "end: 2025-03-02 9am"),
            "roster.yaml:32: invalid override end `2025-03-02 9am` \
             (expected RFC 3339, like 2025-03-01T09:00:00+09:00)"
        );
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        assert_eq!(error_after("  - id: cho\n", "  - id: ben\n"), "roster.yaml:9: duplicate person id `ben`");
        assert_eq!(error_after("  - id: dba\n", "  - id: backend\n"), "roster.yaml:15: duplicate role id `backend`");
        assert_eq!(
            error_after("  - role: dba\n    zone", "  - role: backend\n    zone"),
            "roster.yaml:23: role `backend` has a second rotation"
        );
    }

    #[test]
    fn a_zero_response_target_is_rejected() {
        assert_eq!(
            error_after("response_minutes: 10", "response_minutes: 0"),
            "roster.yaml:14: role `backend`: response target must be 1 to 1440 minutes, not 0"
        );
    }

    #[test]
    fn invalid_handoff_weekday_time_and_anchor_are_rejected() {
        let weekday = error_after(
            "weekday: monday, time: '09:00' }\n    anchor: 2025-01-06\n    members: [ana",
            "weekday: mondy, time: '09:00' }\n    anchor: 2025-01-06\n    members: [ana",
        );
        assert_eq!(weekday, "roster.yaml:20: invalid handoff weekday `mondy` (expected monday … sunday)");
        let time = error_after(
            "time: '09:00' }\n    anchor: 2025-01-06\n    members: [cho",
            "time: '25:00' }\n    anchor: 2025-01-06\n    members: [cho",
        );
        assert_eq!(time, "roster.yaml:25: invalid handoff time `25:00` (expected HH:MM, 24-hour)");
        assert_eq!(
            error_after("anchor: 2025-01-06\n    members: [ana", "anchor: 2025-01-07\n    members: [ana"),
            "roster.yaml:21: rotation for `backend`: anchor 2025-01-07 is a Tue, but the handoff is on Mon"
        );
    }

    #[test]
    fn every_role_needs_a_rotation() {
        let infra = "    response_minutes: 20\n  - id: infra\n    name: Infra\n    response_minutes: 15\n";
        assert_eq!(error_after("    response_minutes: 20\n", infra), "roster.yaml:18: role `infra` has no rotation");
    }

    #[test]
    fn bad_people_fields_are_rejected() {
        assert_eq!(
            error_after("slack: U01ANA", "slack: '@ana'"),
            "roster.yaml:5: invalid Slack member id `@ana` (expected like U01ABC)"
        );
        assert_eq!(
            error_after("email: ana@example.com", "email: ana.example.com"),
            "roster.yaml:6: invalid email address `ana.example.com`"
        );
        assert!(error_after("  - id: ana", "  - id: Ana").starts_with("roster.yaml:3: invalid person id `Ana`"));
        assert_eq!(
            error_after("  - id: dba\n", "  - id: all\n"),
            "roster.yaml:15: role id `all` is reserved for escalation steps"
        );
    }

    #[test]
    fn bad_escalation_policies_are_rejected() {
        let with = |policy: &str| parse(&format!("{BASE}escalation:\n{policy}")).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            with("  warning:\n    steps:\n      - [owner]\n      - [dbaa]\n"),
            Err("roster.yaml:38: unknown role `dbaa` in escalation step (expected a role id, `owner` or `all`)"
                .to_owned())
        );
        assert_eq!(
            with("  critical:\n    steps: [[all], []]\n"),
            Err("roster.yaml:36: escalation.critical: step 1 pages nobody".to_owned())
        );
        assert_eq!(
            with("  critical:\n    steps: []\n"),
            Err("roster.yaml:36: escalation.critical has no steps".to_owned())
        );
        assert_eq!(
            with("  critical:\n    repeat: 50\n"),
            Err("roster.yaml:36: escalation.critical: repeat must be at most 20, not 50".to_owned())
        );
        assert_eq!(
            with("  critical:\n    steps: [[all]]\n    repet: 2\n"),
            Err("roster.yaml:37: escalation.critical: unknown field `repet`, expected `steps` or `repeat`".to_owned())
        );
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let err = Roster::load(Path::new("/nonexistent/roster.yaml")).expect_err("no such file");
        assert_eq!(err.to_string(), "/nonexistent/roster.yaml: cannot read the roster file");
        assert!(matches!(err, RosterError::Read { .. }));
        assert_eq!(err.line(), None);
    }
}
