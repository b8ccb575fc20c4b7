//! Running a runbook: check the targets, diagnose, then (with `--apply`)
//! mitigate one confirmed step at a time and verify.
//!
//! The safety rules live here:
//! - every target a run needs is checked before any step runs; with
//!   `--apply`, one that fails stops the run before anything is changed;
//! - mitigations run only after a clean diagnosis that found a problem,
//!   and only those whose `when` step found one;
//! - the first mitigation that fails stops the rest.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::{
    action::Effect,
    book::{Phase, Runbook, Step},
    target::{Ctx, Target, TargetError},
};

/// What `runbook` exits with. Documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 0: diagnosis found no problem.
    Healthy,
    /// 1: diagnosis found a problem; nothing was applied.
    ProblemFound,
    /// 3: a target or a step failed (and nothing further was applied).
    StepFailed,
    /// 4: mitigations were applied and the verify steps find no problem.
    Mitigated,
    /// 5: mitigations were applied but a verify step still finds a problem.
    MitigatedProblemPersists,
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
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Healthy => "healthy: no problem found",
            Outcome::ProblemFound => "problem found; nothing applied",
            Outcome::StepFailed => "a step failed",
            Outcome::Mitigated => "mitigated: verify steps find no problem",
            Outcome::MitigatedProblemPersists => "mitigation applied, but a verify step still finds a problem",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran; no problem.
    Ok,
    /// Ran; its `problem_if` holds.
    Problem,
    /// Could not run, or the target refused.
    Failed,
    /// Not run: `--skip`, or its target is not configured.
    Skipped,
    /// A mitigation shown but not applied (no `--apply`).
    Listed,
    /// A mitigation whose `when` steps found no problem.
    NotNeeded,
    /// A mitigation the operator answered no to.
    Declined,
    /// A mitigation applied.
    Applied,
    /// Not run because an earlier failure stopped the run.
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub id: String,
    pub phase: Phase,
    pub action: String,
    pub title: String,
    pub target: Target,
    pub status: Status,
    pub summary: String,
    pub output: Option<Value>,
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
    /// Why the outcome is what it is, when the steps alone do not say.
    pub notes: Vec<String>,
}

/// What the run tells the outside world, as it goes.
#[allow(async_fn_in_trait)] // Used generically in this crate only.
pub trait Observer {
    /// Each target check, before any step.
    fn preflight(&mut self, check: &Preflight);
    /// A phase begins; `note` says how it will be handled.
    fn phase(&mut self, phase: Phase, note: &str);
    /// Each step's result, as soon as it is known.
    async fn step(&mut self, result: &StepResult);
    /// Whether to apply `step`; `target` is the redacted URL it changes.
    fn confirm(&mut self, step: &Step, target: &str) -> bool;
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub apply: bool,
    /// Apply without asking.
    pub yes: bool,
    /// Step ids or target names not to run.
    pub skip: Vec<String>,
}

/// The target a step acts on in this configuration: the Prometheus route
/// actions read booking's /metrics when no Prometheus is configured.
pub fn effective_target(step: &Step, ctx: &Ctx) -> Target {
    let target = step.action.spec().target;
    if target == Target::Prometheus && step.action.falls_back_to_booking() && ctx.endpoints.describe(Target::Prometheus).is_err() {
        Target::Booking
    } else {
        target
    }
}

fn result(step: &Step, target: Target, status: Status, summary: impl Into<String>, output: Option<Value>) -> StepResult {
    StepResult {
        id: step.id.clone(),
        phase: step.phase,
        action: step.action.name().to_string(),
        title: step.title.clone(),
        target,
        status,
        summary: summary.into(),
        output,
    }
}

/// Whether a mitigation is called for by the diagnosis.
pub fn needed(step: &Step, diagnosis: &[StepResult]) -> bool {
    let problem = |id: &str| diagnosis.iter().any(|r| r.id == id && r.status == Status::Problem);
    if step.when.is_empty() {
        diagnosis.iter().any(|r| r.status == Status::Problem)
    } else {
        step.when.iter().any(|id| problem(id))
    }
}

/// The outcome of a finished run.
pub fn outcome(steps: &[StepResult], preflight: &[Preflight]) -> Outcome {
    let any = |phase: Option<Phase>, status: Status| steps.iter().any(|s| phase.is_none_or(|p| s.phase == p) && s.status == status);
    if preflight.iter().any(|p| !p.ok) || any(None, Status::Failed) {
        return Outcome::StepFailed;
    }
    if any(Some(Phase::Mitigate), Status::Applied) {
        return if any(Some(Phase::Verify), Status::Problem) { Outcome::MitigatedProblemPersists } else { Outcome::Mitigated };
    }
    if any(Some(Phase::Diagnose), Status::Problem) {
        return Outcome::ProblemFound;
    }
    if !steps.iter().any(|s| s.phase == Phase::Diagnose && matches!(s.status, Status::Ok | Status::Problem)) {
        // Nothing was checked: "healthy" would be a lie.
        return Outcome::StepFailed;
    }
    Outcome::Healthy
}

/// Why a step will not run, before anything runs.
fn excluded(step: &Step, target: Target, options: &Options, ctx: &Ctx) -> Option<String> {
    if options.skip.iter().any(|s| *s == step.id || s == target.name()) {
        return Some("skipped (--skip)".into());
    }
    ctx.endpoints.describe(target).err().map(|why| format!("skipped: {target} {why}"))
}

async fn run_step<O: Observer>(step: &Step, ctx: &mut Ctx, observer: &mut O, steps: &mut Vec<StepResult>, failed_targets: &[(Target, String)], options: &Options) {
    let target = effective_target(step, ctx);
    let r = if let Some(why) = excluded(step, target, options, ctx) {
        result(step, target, Status::Skipped, why, None)
    } else if let Some((_, error)) = failed_targets.iter().find(|(t, _)| *t == target).filter(|_| step.action.spec().effect != Effect::Probe) {
        result(step, target, Status::Failed, error.clone(), None)
    } else {
        match step.action.run(ctx).await {
            Ok(finding) => {
                let problem = step.phase != Phase::Mitigate && step.problem_if.as_ref().is_some_and(|c| c.holds(&finding.output));
                let status = match step.phase {
                    Phase::Mitigate => Status::Applied,
                    _ if problem => Status::Problem,
                    _ => Status::Ok,
                };
                result(step, target, status, finding.summary, Some(finding.output))
            }
            Err(TargetError::NotConfigured { target, message }) => result(step, target, Status::Skipped, format!("skipped: {target} {message}"), None),
            Err(e) => result(step, target, Status::Failed, e.to_string(), None),
        }
    };
    observer.step(&r).await;
    steps.push(r);
}

/// Runs `book` against `ctx`.
pub async fn run<O: Observer>(book: &Runbook, ctx: &mut Ctx, options: &Options, observer: &mut O) -> Report {
    let mut notes = Vec::new();
    let phases: &[Phase] = if options.apply { &[Phase::Diagnose, Phase::Mitigate, Phase::Verify] } else { &[Phase::Diagnose] };

    // Every target a step that may run needs, checked first. Probes report
    // an unreachable target as their finding, so they need no check.
    let mut needs: BTreeSet<(Target, bool)> = BTreeSet::new();
    for step in book.steps.iter().filter(|s| phases.contains(&s.phase)) {
        let target = effective_target(step, ctx);
        if step.action.spec().effect != Effect::Probe && excluded(step, target, options, ctx).is_none() {
            needs.insert((target, step.action.spec().uses_admin_api()));
        }
    }
    let mut preflight: Vec<Preflight> = Vec::new();
    let mut failed_targets: Vec<(Target, String)> = Vec::new();
    let mut checked: BTreeSet<Target> = BTreeSet::new();
    // (target, true) sorts after (target, false): the admin check wins.
    for (target, admin) in needs.iter().rev() {
        if !checked.insert(*target) {
            continue;
        }
        let url = ctx.endpoints.describe(*target).unwrap_or_default();
        let check = match ctx.check(*target, *admin).await {
            Ok(()) => Preflight { target: *target, url, ok: true, error: None },
            Err(e) => {
                failed_targets.push((*target, e.to_string()));
                Preflight { target: *target, url, ok: false, error: Some(e.to_string()) }
            }
        };
        observer.preflight(&check);
        preflight.push(check);
    }
    preflight.sort_by_key(|p| p.target);

    let mut steps: Vec<StepResult> = Vec::new();
    if options.apply && !failed_targets.is_empty() {
        notes.push("nothing was run or applied: a target the runbook needs failed its check".into());
        let outcome = Outcome::StepFailed;
        return Report { runbook: book.id.clone(), title: book.title.clone(), apply: true, outcome, exit_code: outcome.code(), preflight, steps, notes };
    }

    observer.phase(Phase::Diagnose, "");
    for step in book.phase(Phase::Diagnose) {
        run_step(step, ctx, observer, &mut steps, &failed_targets, options).await;
    }
    let diagnosis = steps.clone();
    let diagnosis_failed = diagnosis.iter().any(|r| r.status == Status::Failed);

    let mitigations: Vec<&Step> = book.phase(Phase::Mitigate).collect();
    if !mitigations.is_empty() {
        let note = if !options.apply {
            "listed, not applied: rerun with --apply"
        } else if diagnosis_failed {
            "nothing applied: a diagnosis step failed"
        } else {
            ""
        };
        observer.phase(Phase::Mitigate, note);
    }
    let mut stopped = diagnosis_failed;
    for step in mitigations {
        let target = effective_target(step, ctx);
        let is_needed = needed(step, &diagnosis);
        let r = if !is_needed {
            let why = if step.when.is_empty() { "no diagnosis step found a problem".to_string() } else { format!("not needed: {} found no problem", step.when.join(" / ")) };
            result(step, target, Status::NotNeeded, why, None)
        } else if !options.apply {
            result(step, target, Status::Listed, format!("would {}", step.plan()), None)
        } else if stopped {
            result(step, target, Status::NotRun, "not applied: an earlier step failed", None)
        } else if let Some(why) = excluded(step, target, options, ctx) {
            result(step, target, Status::Skipped, why, None)
        } else if !options.yes && !observer.confirm(step, &ctx.endpoints.describe(target).unwrap_or_default()) {
            result(step, target, Status::Declined, "declined", None)
        } else {
            let before = steps.len();
            run_step(step, ctx, observer, &mut steps, &failed_targets, options).await;
            if steps[before].status == Status::Failed {
                stopped = true;
                notes.push(format!("mitigation `{}` failed; the ones after it were not applied", step.id));
            }
            continue;
        };
        observer.step(&r).await;
        steps.push(r);
    }

    let applied = steps.iter().any(|s| s.status == Status::Applied);
    if options.apply && applied {
        observer.phase(Phase::Verify, "");
        for step in book.phase(Phase::Verify) {
            run_step(step, ctx, observer, &mut steps, &failed_targets, options).await;
        }
    }

    let outcome = outcome(&steps, &preflight);
    if outcome == Outcome::StepFailed && !preflight.iter().any(|p| !p.ok) && !steps.iter().any(|s| s.status == Status::Failed) {
        notes.push("no diagnosis step could run: configure the targets they need (see `skipped` steps)".into());
    }
    Report { runbook: book.id.clone(), title: book.title.clone(), apply: options.apply, outcome, exit_code: outcome.code(), preflight, steps, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, phase: Phase, status: Status) -> StepResult {
        StepResult {
            id: id.into(),
            phase,
            action: "x".into(),
            title: id.into(),
            target: Target::Booking,
            status,
            summary: String::new(),
            output: None,
        }
    }

    #[test]
    fn outcomes_rank_failure_over_mitigation_over_problem() {
        use Phase::*;
        use Status::*;
        let ok = step("a", Diagnose, Ok);
        let problem = step("b", Diagnose, Problem);
        assert_eq!(outcome(std::slice::from_ref(&ok), &[]), Outcome::Healthy);
        assert_eq!(outcome(&[ok.clone(), problem.clone()], &[]), Outcome::ProblemFound);
        let applied = step("m", Mitigate, Applied);
        assert_eq!(outcome(&[problem.clone(), applied.clone(), step("v", Verify, Ok)], &[]), Outcome::Mitigated);
        assert_eq!(outcome(&[problem.clone(), applied.clone(), step("v", Verify, Problem)], &[]), Outcome::MitigatedProblemPersists);
        assert_eq!(outcome(&[problem.clone(), applied, step("v", Verify, Failed)], &[]), Outcome::StepFailed);
        assert_eq!(outcome(&[problem.clone(), step("m", Mitigate, Declined)], &[]), Outcome::ProblemFound);
        assert_eq!(outcome(&[step("s", Diagnose, Skipped)], &[]), Outcome::StepFailed, "nothing checked is not healthy");
        let down = Preflight { target: Target::Redis, url: String::new(), ok: false, error: Some("down".into()) };
        assert_eq!(outcome(&[ok], &[down]), Outcome::StepFailed);
        let codes: BTreeSet<u8> = [Outcome::Healthy, Outcome::ProblemFound, Outcome::StepFailed, Outcome::Mitigated, Outcome::MitigatedProblemPersists]
            .iter()
            .map(|o| o.code())
            .chain([EXIT_USAGE])
            .collect();
        assert_eq!(codes.len(), 6, "every exit code is distinct");
    }
}
