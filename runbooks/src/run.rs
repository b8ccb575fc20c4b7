//! Running a runbook: check the targets, diagnose, then (with `--apply`)
//! mitigate one confirmed step at a time and verify. What each step and
//! the run come to is [`crate::report`]'s.
//!
//! The safety rules live here:
//! - every target a run needs is checked before any step runs; with
//!   `--apply`, one that fails stops the run before anything is changed;
//! - mitigations run only after a diagnosis in which no step failed, and
//!   only those a `when` step found a problem for;
//! - the first mitigation that fails stops the rest.
//!
//! The chaos switch is read first: when a drill is on, it explains what the
//! other steps see, and the notes say so before anything else.

use std::collections::BTreeSet;

use tracing::Instrument as _;

use crate::{
    action::{
        Action, Effect,
        alerting::{self, Fallback},
    },
    book::{Phase, Runbook, Step},
    report::{self, Call, Outcome, Preflight, Report, Skip, Status, StepResult},
    target::{Ctx, Target, TargetError},
};

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

/// The target a step acts on in this configuration: a Prometheus action
/// with a fallback reads it from booking or the alerting service when no
/// Prometheus is configured.
pub fn effective_target(step: &Step, ctx: &Ctx) -> Target {
    let target = step.action.spec().target;
    match step.action.fallback() {
        Some(fallback) if ctx.endpoints.describe(target).is_err() => fallback,
        _ => target,
    }
}

/// Why a step will not run, before anything runs: its target is not
/// configured (so it has no fallback either), or `--skip` names it.
fn excluded(step: &Step, target: Target, options: &Options, ctx: &Ctx) -> Option<(Skip, String)> {
    if let Err(why) = ctx.endpoints.describe(target) {
        return Some((Skip::NotConfigured, format!("{target} {why}")));
    }
    let declared = step.action.spec().target;
    if options.skip.iter().any(|s| *s == step.id || s == target.name() || s == declared.name()) {
        return Some((Skip::Flag, "left out by --skip".into()));
    }
    None
}

/// Runs one step's action, or its alerting fallback, and judges it.
async fn judge(step: &Step, target: Target, ctx: &mut Ctx) -> StepResult {
    if target == Target::Alerting {
        return match alerting::rule_states(ctx, step.action.alert_rules()).await {
            Ok(Fallback::Answered { finding, active }) => {
                let status = if report::is_check(step) && active { Status::Problem } else { Status::Ok };
                StepResult::ran(step, target, status, finding.summary, finding.output)
            }
            Ok(Fallback::Unavailable(why)) => {
                let declared = step.action.spec().target;
                let hint = ctx.endpoints.describe(declared).err().unwrap_or_default();
                StepResult::skipped(step, target, Skip::NoSource, format!("{declared} {hint}; and {why}"))
            }
            Err(e) => StepResult::failed(step, target, e.to_string()),
        };
    }
    match step.action.run(ctx).await {
        Ok(finding) => {
            let status = match step.phase {
                Phase::Mitigate => Status::Applied,
                _ if step.problem_if.as_ref().is_some_and(|c| c.holds(&finding.output)) => Status::Problem,
                _ => Status::Ok,
            };
            StepResult::ran(step, target, status, finding.summary, finding.output)
        }
        Err(TargetError::NotConfigured { target, message }) => {
            StepResult::skipped(step, target, Skip::NotConfigured, format!("{target} {message}"))
        }
        Err(e) => StepResult::failed(step, target, e.to_string()),
    }
}

/// A target that failed its check, and why. `admin_only`: booking answers,
/// but refused the admin key, so only the steps using its admin API fail.
#[derive(Debug, Clone)]
struct FailedTarget {
    target: Target,
    admin_only: bool,
    error: String,
}

impl FailedTarget {
    fn fails(&self, step: &Step, target: Target) -> bool {
        let spec = step.action.spec();
        self.target == target && spec.effect != Effect::Probe && (!self.admin_only || spec.uses_admin_api())
    }
}

async fn run_step<O: Observer>(
    step: &Step,
    ctx: &mut Ctx,
    observer: &mut O,
    steps: &mut Vec<StepResult>,
    failed_targets: &[FailedTarget],
    options: &Options,
) {
    let target = effective_target(step, ctx);
    // One span per step, its calls (booking's admin API among them, which
    // joins the trace through `traceparent`) and its timeline event under it.
    let span = tracing::info_span!(
        "runbook step",
        otel.name = %format!("step {}", step.id),
        runbook.step = %step.id,
        runbook.action = step.action.name(),
        runbook.phase = %step.phase,
        runbook.target = target.name(),
        runbook.status = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let r = if let Some((reason, why)) = excluded(step, target, options, ctx) {
        StepResult::skipped(step, target, reason, why)
    } else if let Some(failed) = failed_targets.iter().find(|f| f.fails(step, target)) {
        StepResult::failed(step, target, failed.error.clone())
    } else {
        judge(step, target, ctx).instrument(span.clone()).await
    };
    span.record("runbook.status", r.status.as_str());
    if r.status == Status::Failed {
        span.record("error.type", "step_failed");
    }
    observer.step(&r).instrument(span).await;
    steps.push(r);
}

/// The targets the steps of `phases` will use, each checked once (with the
/// admin key where a step needs it). Probes report an unreachable target as
/// their finding, and a fallback that cannot answer skips its step, so
/// neither needs a check.
async fn check_targets<O: Observer>(
    book: &Runbook,
    phases: &[Phase],
    ctx: &mut Ctx,
    options: &Options,
    observer: &mut O,
) -> (Vec<Preflight>, Vec<FailedTarget>) {
    let mut needs: BTreeSet<(Target, bool)> = BTreeSet::new();
    for step in book.steps.iter().filter(|s| phases.contains(&s.phase)) {
        let target = effective_target(step, ctx);
        if step.action.spec().effect != Effect::Probe
            && target != Target::Alerting
            && excluded(step, target, options, ctx).is_none()
        {
            needs.insert((target, step.action.spec().uses_admin_api()));
        }
    }
    let mut preflight: Vec<Preflight> = Vec::new();
    let mut failed_targets: Vec<FailedTarget> = Vec::new();
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
                // A refused admin key fails only the steps that use it,
                // when booking itself answers.
                let admin_only = *admin && ctx.check(*target, false).await.is_ok();
                failed_targets.push(FailedTarget { target: *target, admin_only, error: e.to_string() });
                Preflight { target: *target, url, ok: false, error: Some(e.to_string()) }
            }
        };
        observer.preflight(&check);
        preflight.push(check);
    }
    preflight.sort_by_key(|p| p.target);
    (preflight, failed_targets)
}

/// Runs `book` against `ctx`.
pub async fn run<O: Observer>(book: &Runbook, ctx: &mut Ctx, options: &Options, observer: &mut O) -> Report {
    let mut notes = Vec::new();
    let phases: &[Phase] =
        if options.apply { &[Phase::Diagnose, Phase::Mitigate, Phase::Verify] } else { &[Phase::Diagnose] };
    let (preflight, failed_targets) = check_targets(book, phases, ctx, options, observer).await;

    let mut steps: Vec<StepResult> = Vec::new();
    if options.apply && !failed_targets.is_empty() {
        notes.push("nothing was run or applied: a target the runbook needs failed its check".into());
        let outcome = Outcome::StepFailed;
        return Report {
            runbook: book.id.clone(),
            title: book.title.clone(),
            apply: true,
            outcome,
            exit_code: outcome.code(),
            preflight,
            steps,
            notes,
        };
    }

    observer.phase(Phase::Diagnose, "");
    let mut diagnose: Vec<&Step> = book.phase(Phase::Diagnose).collect();
    // Stable: the chaos switch first, the rest as written.
    diagnose.sort_by_key(|s| s.action != Action::BookingChaos);
    for step in diagnose {
        run_step(step, ctx, observer, &mut steps, &failed_targets, options).await;
    }
    let diagnosis = steps.clone();
    let diagnosis_failed = diagnosis.iter().any(|r| r.status == Status::Failed);
    if let Some(chaos) =
        diagnosis.iter().find(|r| r.action == Action::BookingChaos.name() && r.status == Status::Problem)
    {
        let off = book
            .phase(Phase::Mitigate)
            .find(|s| s.action == Action::BookingClearChaos)
            .map_or("`DELETE /v1/admin/chaos`".to_string(), |s| format!("`{}`", s.id));
        notes.push(format!(
            "{} — a drill: the errors and latency it injects are not a database or queue fault; {off} turns it off",
            chaos.summary
        ));
    }

    let mitigations: Vec<&Step> = book.phase(Phase::Mitigate).collect();
    if !mitigations.is_empty() {
        let note = if !options.apply {
            "not applied without --apply"
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
        let r = match report::called_for(step, &diagnosis) {
            Call::NotNeeded(by) => StepResult::skipped(
                step,
                target,
                Skip::NotNeeded,
                format!("not needed: {} ran and found no problem", report::ids(&by)),
            ),
            Call::Unknown(missing) => {
                let what: Vec<String> = missing
                    .iter()
                    .map(|(id, status)| {
                        format!("`{id}` {}", if *status == Status::Failed { "failed" } else { "was skipped" })
                    })
                    .collect();
                let what = if what.is_empty() {
                    "its diagnosis did not run".to_string()
                } else {
                    format!("its diagnosis did not run ({})", what.join(", "))
                };
                StepResult::skipped(
                    step,
                    target,
                    Skip::DiagnosisIncomplete,
                    format!("{what}, so whether it is needed is unknown"),
                )
            }
            Call::For(by) if !options.apply => StepResult::skipped(
                step,
                target,
                Skip::NotApplied,
                format!("called for by {}; not applied without --apply: would {}", report::ids(&by), step.plan()),
            ),
            Call::For(_) if stopped => {
                let why = if diagnosis_failed { "a diagnosis step failed" } else { "an earlier mitigation failed" };
                StepResult::skipped(step, target, Skip::Stopped, format!("not applied: {why}"))
            }
            Call::For(_) => match excluded(step, target, options, ctx) {
                Some((reason, why)) => StepResult::skipped(step, target, reason, why),
                None if !options.yes
                    && !observer.confirm(step, &ctx.endpoints.describe(target).unwrap_or_default()) =>
                {
                    StepResult::skipped(step, target, Skip::Declined, "declined")
                }
                None => {
                    let before = steps.len();
                    run_step(step, ctx, observer, &mut steps, &failed_targets, options).await;
                    if steps[before].status == Status::Failed {
                        stopped = true;
                        notes.push(format!("mitigation `{}` failed; the ones after it were not applied", step.id));
                    }
                    continue;
                }
            },
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

    let outcome = report::outcome(&steps, &preflight);
    notes.extend(unchecked(&steps, outcome));
    Report {
        runbook: book.id.clone(),
        title: book.title.clone(),
        apply: options.apply,
        outcome,
        exit_code: outcome.code(),
        preflight,
        steps,
        notes,
    }
}

/// The checks that did not run, and what that means for `outcome`.
fn unchecked(steps: &[StepResult], outcome: Outcome) -> Vec<String> {
    let ids = |f: &dyn Fn(&StepResult) -> bool| -> Vec<String> {
        steps.iter().filter(|s| f(s)).map(|s| s.id.clone()).collect()
    };
    let missing = ids(&|s| s.missing());
    let left_out = ids(&|s| s.status == Status::Skipped && s.needed == Some(false));
    let mut notes = Vec::new();
    if outcome == Outcome::Inconclusive {
        notes.push(if missing.is_empty() {
            "inconclusive: no check could run; configure the targets they need (see the skipped steps)".to_string()
        } else {
            format!("inconclusive: {} needed and did not run (see why on its line)", report::ids(&missing))
        });
    }
    if !left_out.is_empty() && matches!(outcome, Outcome::Healthy | Outcome::Mitigated | Outcome::Inconclusive) {
        notes.push(format!(
            "not checked, and not counted: {} (target not configured, or --skip)",
            report::ids(&left_out)
        ));
    }
    notes
}
