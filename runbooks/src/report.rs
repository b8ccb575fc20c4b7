//! What a run found: each step's status, and the run's outcome and exit
//! code, as pure rules over plain values.
//!
//! Every step ends in exactly one of four ways: it ran and found a problem,
//! it ran and found none, it was skipped (and says why), or it failed (and
//! says why). A mitigation that ran is `applied`. A *check* is a diagnose or
//! verify step with a `problem_if`; the run is healthy only when every check
//! it needed ran and found nothing.
//!
//! Which checks are needed: all of them, except those left out by `--skip`
//! (the operator's choice) and those whose target is not configured and
//! that have no fallback (not part of this deployment as far as the run can
//! tell: booking runs without PostgreSQL, Redis or Prometheus). A check
//! whose fallback could not answer is needed, and the run is inconclusive.

use serde::Serialize;
use serde_json::Value;

use crate::{
    book::{Phase, Step},
    target::Target,
};

/// What `runbook` exits with. Documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 0: every needed check ran and found no problem.
    Healthy,
    /// 1: a diagnose check found a problem; nothing was applied.
    ProblemFound,
    /// 3: a target or a step failed (and nothing further was applied).
    StepFailed,
    /// 4: mitigations were applied and the verify checks find no problem.
    Mitigated,
    /// 5: mitigations were applied but a verify check still finds a problem.
    MitigatedProblemPersists,
    /// 6: no check found a problem, but a check the run needed did not run
    /// (or none could): "healthy" would be a guess.
    Inconclusive,
}

/// 2, clap's own code for bad flags, also covers an unknown runbook, an
/// invalid runbook file, a bad `--set` and an unknown incident.
pub const EXIT_USAGE: u8 = 2;

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Healthy => 0,
            Outcome::ProblemFound => 1,
            Outcome::StepFailed => 3,
            Outcome::Mitigated => 4,
            Outcome::MitigatedProblemPersists => 5,
            Outcome::Inconclusive => 6,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Healthy => "healthy: every check it needed ran and found no problem",
            Outcome::ProblemFound => "problem found; nothing applied",
            Outcome::StepFailed => "a step failed",
            Outcome::Mitigated => "mitigated: verify steps find no problem",
            Outcome::MitigatedProblemPersists => "mitigation applied, but a verify step still finds a problem",
            Outcome::Inconclusive => "inconclusive: no problem found, but a check it needed did not run",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran; no problem (or, without `problem_if`, ran).
    Ok,
    /// Ran; its `problem_if` holds.
    Problem,
    /// Not run; `reason` and the summary say why.
    Skipped,
    /// Could not run, or the target refused; the summary says why.
    Failed,
    /// A mitigation that ran.
    Applied,
}

impl Status {
    /// As in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Problem => "problem",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Applied => "applied",
        }
    }
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// `--skip` named it or its target: the operator's choice, not needed.
    Flag,
    /// Its target is not configured and it has no fallback: not needed.
    NotConfigured,
    /// Its target is not configured and its fallback could not answer:
    /// needed, so the run is inconclusive.
    NoSource,
    /// A mitigation the diagnosis calls for, not applied without `--apply`.
    NotApplied,
    /// A mitigation the operator answered no to.
    Declined,
    /// A mitigation whose `when` steps all ran and found no problem.
    NotNeeded,
    /// A mitigation whose `when` steps did not all run, and none that ran
    /// found a problem: whether it is needed is not known.
    DiagnosisIncomplete,
    /// A mitigation not applied because a diagnosis step or an earlier
    /// mitigation failed.
    Stopped,
}

impl Skip {
    /// Whether a check skipped this way still counts against "healthy".
    pub fn needed(self) -> bool {
        self == Skip::NoSource
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub id: String,
    pub phase: Phase,
    pub action: String,
    pub title: String,
    pub target: Target,
    pub status: Status,
    /// Why, when `status` is `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Skip>,
    /// Checks only: whether the outcome depends on this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed: Option<bool>,
    pub summary: String,
    pub output: Option<Value>,
}

/// Whether `step` is a check: a diagnose or verify step with `problem_if`.
pub fn is_check(step: &Step) -> bool {
    step.phase != Phase::Mitigate && step.problem_if.is_some()
}

impl StepResult {
    fn new(
        step: &Step,
        target: Target,
        status: Status,
        reason: Option<Skip>,
        summary: String,
        output: Option<Value>,
    ) -> Self {
        let needed = is_check(step).then(|| reason.is_none_or(Skip::needed));
        StepResult {
            id: step.id.clone(),
            phase: step.phase,
            action: step.action.name().to_string(),
            title: step.title.clone(),
            target,
            status,
            reason,
            needed,
            summary,
            output,
        }
    }

    /// A step that ran (`ok`, `problem` or `applied`) with its finding.
    pub fn ran(step: &Step, target: Target, status: Status, summary: impl Into<String>, output: Value) -> Self {
        debug_assert!(matches!(status, Status::Ok | Status::Problem | Status::Applied));
        Self::new(step, target, status, None, summary.into(), Some(output))
    }

    pub fn skipped(step: &Step, target: Target, reason: Skip, why: impl Into<String>) -> Self {
        Self::new(step, target, Status::Skipped, Some(reason), why.into(), None)
    }

    pub fn failed(step: &Step, target: Target, why: impl Into<String>) -> Self {
        Self::new(step, target, Status::Failed, None, why.into(), None)
    }

    /// A check the outcome depends on that did not run.
    pub fn missing(&self) -> bool {
        self.status == Status::Skipped && self.needed == Some(true)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub target: Target,
    pub url: String,
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runbook: String,
    pub title: String,
    pub apply: bool,
    pub outcome: Outcome,
    pub exit_code: u8,
    pub preflight: Vec<Preflight>,
    pub steps: Vec<StepResult>,
    /// Why the outcome is what it is, when the steps alone do not say;
    /// the chaos switch first when it is on.
    pub notes: Vec<String>,
}

/// Whether the diagnosis calls for a mitigation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// These diagnose steps found a problem.
    For(Vec<String>),
    /// Every step it depends on ran and found no problem (the ids).
    NotNeeded(Vec<String>),
    /// None that ran found a problem, and these did not run (id, status).
    Unknown(Vec<(String, Status)>),
}

/// Whether `step` (a mitigation) is called for by `diagnosis`: by its
/// `when` steps, or without `when`, by every needed check.
pub fn called_for(step: &Step, diagnosis: &[StepResult]) -> Call {
    let relevant: Vec<&StepResult> = if step.when.is_empty() {
        diagnosis.iter().filter(|r| r.needed == Some(true) || r.status == Status::Problem).collect()
    } else {
        step.when.iter().filter_map(|id| diagnosis.iter().find(|r| &r.id == id)).collect()
    };
    let found: Vec<String> = relevant.iter().filter(|r| r.status == Status::Problem).map(|r| r.id.clone()).collect();
    if !found.is_empty() {
        return Call::For(found);
    }
    let missing: Vec<(String, Status)> =
        relevant.iter().filter(|r| !matches!(r.status, Status::Ok)).map(|r| (r.id.clone(), r.status)).collect();
    if !missing.is_empty() || relevant.is_empty() {
        return Call::Unknown(missing);
    }
    Call::NotNeeded(relevant.iter().map(|r| r.id.clone()).collect())
}

/// The outcome of a finished run. A failure outranks everything; then what
/// was applied and what verification found; then what the diagnosis found.
pub fn outcome(steps: &[StepResult], preflight: &[Preflight]) -> Outcome {
    let any = |phase: Option<Phase>, status: Status| {
        steps.iter().any(|s| phase.is_none_or(|p| s.phase == p) && s.status == status)
    };
    let missing = |phase: Phase| steps.iter().any(|s| s.phase == phase && s.missing());
    let checked = |phase: Phase| {
        steps
            .iter()
            .any(|s| s.phase == phase && s.needed == Some(true) && matches!(s.status, Status::Ok | Status::Problem))
    };
    if preflight.iter().any(|p| !p.ok) || any(None, Status::Failed) {
        return Outcome::StepFailed;
    }
    if any(Some(Phase::Mitigate), Status::Applied) {
        return if any(Some(Phase::Verify), Status::Problem) {
            Outcome::MitigatedProblemPersists
        } else if missing(Phase::Verify) || !checked(Phase::Verify) {
            Outcome::Inconclusive
        } else {
            Outcome::Mitigated
        };
    }
    if any(Some(Phase::Diagnose), Status::Problem) {
        return Outcome::ProblemFound;
    }
    if missing(Phase::Diagnose) || !checked(Phase::Diagnose) {
        // Nothing, or not everything needed, was checked: "healthy" would be a lie.
        return Outcome::Inconclusive;
    }
    Outcome::Healthy
}

/// `a`, `a and b`, `a, b and c`, each in backquotes.
pub fn ids(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::book;

    /// A runbook with one check `c`, one read without `problem_if` `r`,
    /// one mitigation `m` (when `c`), and one verify check `v`.
    fn book() -> crate::book::Runbook {
        let step = |phase: &str, body: &str| format!("## {phase}\n```runbook-step\n{body}\n```\n");
        let text = [
            "# T\n## What it means for users\nx\n## Likely causes\nx\n".to_string(),
            step("Diagnose", "id: c\ntitle: c\naction: booking.chaos\nproblem_if: enabled"),
            "```runbook-step\nid: r\ntitle: r\naction: booking.admission\n```\n".to_string(),
            step("Mitigate", "id: m\ntitle: m\naction: booking.clear_chaos\nwhen: c"),
            step("Verify", "id: v\ntitle: v\naction: booking.chaos\nproblem_if: enabled"),
            "## Escalate\nx\n".to_string(),
        ]
        .concat();
        book::parse("t", &text, "t.md").unwrap_or_else(|e| panic!("{e}"))
    }

    fn ran(id: &str, status: Status) -> StepResult {
        let b = book();
        StepResult::ran(b.step(id).unwrap(), Target::Booking, status, "", Value::Null)
    }

    fn skipped(id: &str, reason: Skip) -> StepResult {
        StepResult::skipped(book().step(id).unwrap(), Target::Booking, reason, "why")
    }

    fn failed(id: &str) -> StepResult {
        StepResult::failed(book().step(id).unwrap(), Target::Booking, "why")
    }

    #[test]
    fn outcomes_rank_failure_over_mitigation_over_problem_over_a_missing_check() {
        use Status::*;
        let ok = ran("c", Ok);
        let problem = ran("c", Problem);
        assert_eq!(outcome(std::slice::from_ref(&ok), &[]), Outcome::Healthy);
        assert_eq!(outcome(&[ran("r", Ok), problem.clone()], &[]), Outcome::ProblemFound);
        let applied = ran("m", Applied);
        assert_eq!(outcome(&[problem.clone(), applied.clone(), ran("v", Ok)], &[]), Outcome::Mitigated);
        assert_eq!(
            outcome(&[problem.clone(), applied.clone(), ran("v", Problem)], &[]),
            Outcome::MitigatedProblemPersists
        );
        assert_eq!(outcome(&[problem.clone(), applied.clone(), failed("v")], &[]), Outcome::StepFailed);
        assert_eq!(
            outcome(&[problem.clone(), applied.clone(), skipped("v", Skip::NoSource)], &[]),
            Outcome::Inconclusive,
            "applied, not verified"
        );
        assert_eq!(outcome(&[problem.clone(), skipped("m", Skip::Declined)], &[]), Outcome::ProblemFound);
        assert_eq!(
            outcome(&[problem.clone(), skipped("r", Skip::NoSource)], &[]),
            Outcome::ProblemFound,
            "a problem found is conclusive"
        );
        let down = Preflight { target: Target::Redis, url: String::new(), ok: false, error: Some("down".into()) };
        assert_eq!(outcome(std::slice::from_ref(&ok), &[down]), Outcome::StepFailed);
        let codes: BTreeSet<u8> = [
            Outcome::Healthy,
            Outcome::ProblemFound,
            Outcome::StepFailed,
            Outcome::Mitigated,
            Outcome::MitigatedProblemPersists,
            Outcome::Inconclusive,
        ]
        .iter()
        .map(|o| o.code())
        .chain([EXIT_USAGE])
        .collect();
        assert_eq!(codes.len(), 7, "every exit code is distinct");
    }

    #[test]
    fn healthy_needs_every_needed_check_to_have_run() {
        assert_eq!(
            outcome(&[skipped("c", Skip::NoSource)], &[]),
            Outcome::Inconclusive,
            "its fallback could not answer"
        );
        assert_eq!(
            outcome(&[skipped("c", Skip::NotConfigured), ran("r", Status::Ok)], &[]),
            Outcome::Inconclusive,
            "a read is not a check: nothing was checked"
        );
        assert_eq!(
            outcome(&[skipped("c", Skip::Flag)], &[]),
            Outcome::Inconclusive,
            "nothing checked is never healthy"
        );
        // A check that is not needed leaves the others' answer standing.
        let b = book();
        let other = StepResult::ran(b.step("v").unwrap(), Target::Booking, Status::Ok, "", Value::Null);
        let other = StepResult { phase: Phase::Diagnose, ..other };
        assert_eq!(outcome(&[skipped("c", Skip::NotConfigured), other.clone()], &[]), Outcome::Healthy);
        assert_eq!(outcome(&[skipped("c", Skip::NoSource), other], &[]), Outcome::Inconclusive);
        assert_eq!(skipped("c", Skip::NoSource).needed, Some(true));
        assert_eq!(skipped("c", Skip::NotConfigured).needed, Some(false));
        assert_eq!(skipped("r", Skip::NoSource).needed, None, "a read without problem_if is no check");
    }

    #[test]
    fn a_mitigation_is_not_needed_only_when_its_diagnosis_ran_and_found_nothing() {
        let b = book();
        let m = b.step("m").unwrap();
        assert_eq!(called_for(m, &[ran("c", Status::Problem)]), Call::For(vec!["c".into()]));
        assert_eq!(called_for(m, &[ran("c", Status::Ok)]), Call::NotNeeded(vec!["c".into()]));
        assert_eq!(called_for(m, &[failed("c")]), Call::Unknown(vec![("c".into(), Status::Failed)]));
        assert_eq!(
            called_for(m, &[skipped("c", Skip::NotConfigured)]),
            Call::Unknown(vec![("c".into(), Status::Skipped)])
        );
        assert_eq!(called_for(m, &[]), Call::Unknown(vec![]), "a diagnosis that never ran decides nothing");
    }

    #[test]
    fn id_lists_read_as_a_sentence() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&v(&["a"])), "`a`");
        assert_eq!(ids(&v(&["a", "b"])), "`a` and `b`");
        assert_eq!(ids(&v(&["a", "b", "c"])), "`a`, `b` and `c`");
    }
}
