//! The types the roster file and the escalation plan share: a policy's
//! steps and who each step addresses. Parsed by [`super::roster`], turned
//! into a page's schedule by [`super::escalation`]; here so that neither
//! imports the other.

use crate::rules::Severity;

/// Who a configured step addresses, resolved per page by
/// [`plan`](super::escalation::plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `owner`: the role that owns the alert's rule. An owner the roster
    /// does not know widens to every team role: paging too many people
    /// beats losing the page (callers should reject such rules at load).
    Owner,
    /// `all`: every role on the response team ([`super::Role::team`]).
    All,
    /// A role id, e.g. `incident-lead` or `manager`.
    Role(String),
}

/// An escalation policy for one severity: the configured steps and how
/// many steps may follow the first (see [`super::escalation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    steps: Vec<Vec<Selector>>,
    repeat: usize,
}

impl Policy {
    /// Steps after the first when the roster does not say: with a 20-minute
    /// DBA target a critical page re-pages for about an hour.
    pub const DEFAULT_REPEAT: usize = 3;
    /// Upper bound on `repeat`, so a typo cannot page people all night.
    pub const MAX_REPEAT: usize = 20;

    /// `None` when there is no step, a step is empty, or `repeat` exceeds
    /// [`Policy::MAX_REPEAT`]: such a policy could page nobody or forever.
    pub fn new(steps: Vec<Vec<Selector>>, repeat: usize) -> Option<Policy> {
        let valid = !steps.is_empty() && steps.iter().all(|s| !s.is_empty());
        (valid && repeat <= Self::MAX_REPEAT).then_some(Policy { steps, repeat })
    }

    /// The policy used when the roster has none for `severity` (seed doc
    /// §5.3: critical calls the whole response team at once, warning
    /// notifies the owner role):
    /// - warning: `[owner]`, then `[incident-lead]`, then `[all]`;
    /// - critical: `[all]`, then `[all, manager]` (manager only if the
    ///   roster defines that role; otherwise `[all]` again).
    ///
    /// `incident-lead` is only used when the roster defines it.
    pub fn default_for(severity: Severity, roles: &[&str]) -> Policy {
        let has = |id: &str| roles.contains(&id);
        let role = |id: &str| Selector::Role(id.to_owned());
        let steps = match severity {
            Severity::Warning => {
                let mut steps = vec![vec![Selector::Owner]];
                if has("incident-lead") {
                    steps.push(vec![role("incident-lead")]);
                }
                steps.push(vec![Selector::All]);
                steps
            }
            Severity::Critical => {
                let mut again = vec![Selector::All];
                if has("manager") {
                    again.push(role("manager"));
                }
                vec![vec![Selector::All], again]
            }
        };
        Policy { steps, repeat: Self::DEFAULT_REPEAT }
    }

    pub fn steps(&self) -> &[Vec<Selector>] {
        &self.steps
    }

    pub fn repeat(&self) -> usize {
        self.repeat
    }
}
