//! The `runbook` command line: its arguments (whose doc comments are the
//! `--help`), and printing, prompting and recording around [`run::run`].

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::{
    book::{self, Phase, Runbook, Step},
    catalog::{Catalog, CatalogError},
    report::{EXIT_USAGE, Outcome, Preflight, Report, Skip, Status, StepResult},
    run::{self, Observer, Options},
    target::{Ctx, Endpoints, Redactor, Target},
    timeline::{Timeline, TimelineError},
};

/// The exit codes, shown at the end of `runbook --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  healthy: every check the run needed ran and found no problem
  1  problem found: a diagnose step's problem_if holds; nothing was applied
  2  usage: bad flags, unknown runbook or incident, invalid runbook file or --set
  3  step failed: a target or step failed; nothing further was applied
  4  mitigated: mitigations were applied and the verify steps find no problem
  5  mitigated, problem persists: mitigations were applied but a verify step still finds a problem
  6  inconclusive: no problem found, but a needed check was skipped (no target or fallback could
     answer it) or no check could run; never read this as healthy

A check is needed unless --skip names it, or its target is not configured and it has no
fallback (booking runs without PostgreSQL, Redis and Prometheus). Without PROMETHEUS_URL, route
checks read two scrapes of booking's /metrics and alert checks the alerting service's rule state.";

/// Runs the runbook for an alert: diagnosis steps, then (with --apply)
/// confirmed mitigations and verification, optionally recorded on the
/// incident's timeline.
#[derive(Debug, Parser)]
#[command(name = "runbook", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Read runbooks from this directory instead of the copies built into the binary.
    #[arg(long, env = "RUNBOOKS_DIR", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the runbooks (one per alert rule).
    List,
    /// Print a runbook: its prose, with each step as one line.
    Show {
        /// Runbook id, the alert rule's id (`high-error-rate`).
        id: String,
    },
    /// Run a runbook's diagnosis; with --apply, its mitigations and verification.
    #[command(after_help = EXIT_CODES)]
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Runbook id, the alert rule's id (`high-error-rate`).
    pub id: String,
    /// Apply the mitigations the diagnosis calls for, each after a y/N confirmation.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: do not ask, apply (for non-interactive use).
    #[arg(long, requires = "apply")]
    pub yes: bool,
    /// Record each step and its output on this incident's timeline (alerting API).
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub incident: Option<i64>,
    /// Override a step argument: `min_seconds=120` for every step taking it,
    /// `terminate-long-queries.min_seconds=120` for one step.
    #[arg(long = "set", value_name = "[STEP.]ARG=VALUE")]
    pub set: Vec<String>,
    /// Do not run a step (by id) or any step on a target (postgres, redis, prometheus, booking, alerting).
    #[arg(long, value_name = "STEP|TARGET")]
    pub skip: Vec<String>,
    #[command(flatten)]
    pub targets: TargetArgs,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// PostgreSQL the booking service uses (a non-postgres URL skips its steps).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis the booking queue uses.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prometheus HTTP API; without it, route figures come from booking's /metrics and alert checks from the alerting service.
    #[arg(long, env = "PROMETHEUS_URL", hide_env_values = true, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// The booking service.
    #[arg(long, env = "BOOKING_URL", default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub booking_url: String,
    /// Booking's admin key (header X-Admin-Key); default: $ADMIN_KEY, else dev-admin-key.
    #[arg(long, env = "BOOKING_ADMIN_KEY", hide_env_values = true, value_name = "KEY")]
    pub admin_key: Option<String>,
    /// The alerting service: for --incident, and the alert checks' source when no Prometheus is configured.
    #[arg(long, env = "ALERTING_URL", default_value = "http://127.0.0.1:9095", value_name = "URL")]
    pub alerting_url: String,
    /// Bearer token for the alerting API, when it requires one.
    #[arg(long, env = "ALERTING_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub alerting_api_key: Option<String>,
}

/// Booking's own default admin key (core/src/settings.rs).
const DEV_ADMIN_KEY: &str = "dev-admin-key";

impl TargetArgs {
    pub fn endpoints(&self) -> Endpoints {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let admin_key = set(&self.admin_key)
            .or_else(|| std::env::var("ADMIN_KEY").ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| DEV_ADMIN_KEY.to_string());
        Endpoints {
            database_url: set(&self.database_url),
            redis_url: set(&self.redis_url),
            prometheus_url: set(&self.prometheus_url),
            booking_url: self.booking_url.clone(),
            admin_key,
            alerting_url: self.alerting_url.clone(),
            alerting_api_key: set(&self.alerting_api_key),
        }
    }
}

/// Runs the command and returns the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runbook: cannot start: {e}");
            return ExitCode::from(Outcome::StepFailed.code());
        }
    };
    ExitCode::from(runtime.block_on(async {
        // Log lines go to stderr, so stdout stays the report; a terminal
        // shows them from warnings up unless RUST_LOG asks for more. A run
        // is traced (exported with the standard OTEL_* variables).
        let telemetry = match &cli.command {
            Command::Run(_) => {
                let mut config = telemetry::TelemetryConfig::from_env(crate::SERVICE);
                config.log_lines = telemetry::LogLines::Stderr;
                match telemetry::init(&config) {
                    Ok(t) => Some(t),
                    Err(e) => return usage(format!("telemetry: {e}")),
                }
            }
            _ => {
                telemetry::init_logs(crate::SERVICE, telemetry::LogLines::Stderr);
                None
            }
        };
        let code = dispatch(cli).await;
        if let Some(telemetry) = telemetry {
            telemetry.shutdown();
        }
        code
    }))
}

fn usage(message: impl std::fmt::Display) -> u8 {
    eprintln!("runbook: {message}");
    EXIT_USAGE
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

async fn dispatch(cli: Cli) -> u8 {
    let catalog = match &cli.dir {
        Some(dir) => match Catalog::from_dir(dir) {
            Ok(c) => c,
            Err(e) => return usage(e),
        },
        None => Catalog::embedded(),
    };
    match &cli.command {
        Command::List => list(&catalog, cli.json),
        Command::Show { id } => match catalog.get(id) {
            Ok(book) => {
                show(&book, cli.json);
                0
            }
            Err(e) => usage(e),
        },
        Command::Run(args) => run_command(&catalog, args, cli.json).await,
    }
}

fn counts(book: &Runbook) -> Value {
    json!({
        "diagnose": book.phase(Phase::Diagnose).count(),
        "mitigate": book.phase(Phase::Mitigate).count(),
        "verify": book.phase(Phase::Verify).count(),
    })
}

fn list(catalog: &Catalog, as_json: bool) -> u8 {
    let mut broken = false;
    let mut rows = Vec::new();
    for (id, parsed) in catalog.ids().zip(catalog.all()) {
        match parsed {
            Ok(book) => rows.push(json!({ "id": id, "title": book.title, "steps": counts(&book) })),
            Err(e) => {
                broken = true;
                eprintln!("runbook: {e}");
                rows.push(json!({ "id": id, "error": e.to_string() }));
            }
        }
    }
    if as_json {
        print_json(&json!({ "runbooks": rows }));
    } else {
        let width = catalog.ids().map(str::len).max().unwrap_or(0);
        for row in &rows {
            let Some(title) = row["title"].as_str() else { continue };
            let s = &row["steps"];
            println!(
                "{:width$}  {title}  ({} diagnose, {} mitigate, {} verify)",
                row["id"].as_str().unwrap_or(""),
                s["diagnose"],
                s["mitigate"],
                s["verify"]
            );
        }
    }
    if broken { EXIT_USAGE } else { 0 }
}

fn show(book: &Runbook, as_json: bool) {
    if !as_json {
        print!("{}", book.prose());
        return;
    }
    let sections: serde_json::Map<String, Value> =
        book.sections.iter().map(|(name, body)| (name.to_string(), json!(body))).collect();
    let steps: Vec<Value> = book
        .steps
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "phase": s.phase,
                "title": s.title,
                "action": s.action.name(),
                "target": s.action.spec().target,
                "args": s.args,
                "problem_if": s.problem_if.as_ref().map(|c| c.source()),
                "when": s.when,
            })
        })
        .collect();
    print_json(&json!({ "id": book.id, "title": book.title, "sections": sections, "steps": steps }));
}

async fn run_command(catalog: &Catalog, args: &RunArgs, as_json: bool) -> u8 {
    let mut book = match catalog.get(&args.id) {
        Ok(book) => book,
        Err(
            e @ (CatalogError::Unknown { .. }
            | CatalogError::Invalid(_)
            | CatalogError::Read { .. }
            | CatalogError::Empty { .. }),
        ) => return usage(e),
    };
    let sets = match args.set.iter().map(|s| book::parse_set(s)).collect::<Result<Vec<_>, _>>() {
        Ok(sets) => sets,
        Err(e) => return usage(e),
    };
    if let Err(e) = book.override_args(&sets) {
        return usage(e);
    }
    if let Some(bad) =
        args.skip.iter().find(|s| book.step(s).is_none() && !Target::ALL.iter().any(|t| t.name() == s.as_str()))
    {
        let ids: Vec<&str> = book.steps.iter().map(|s| s.id.as_str()).collect();
        return usage(format!(
            "--skip {bad}: not a step of `{}` ({}) nor a target ({})",
            book.id,
            ids.join(", "),
            Target::names()
        ));
    }

    let endpoints = args.targets.endpoints();
    let redactor = Redactor::new(endpoints.secrets());

    // The incident must exist before anything runs.
    let timeline = match args.incident {
        None => None,
        Some(incident) => {
            match Timeline::open(&args.targets.alerting_url, args.targets.alerting_api_key.clone(), incident).await {
                Ok(t) => Some(t),
                Err(e @ TimelineError::NotFound { .. }) => return usage(redactor.text(&e.to_string())),
                Err(e) => {
                    eprintln!("runbook: {}; nothing was run", redactor.text(&e.to_string()));
                    return Outcome::StepFailed.code();
                }
            }
        }
    };

    let mut ctx = match Ctx::new(endpoints) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("runbook: {}; nothing was run", redactor.text(&e));
            return Outcome::StepFailed.code();
        }
    };
    let options = Options { apply: args.apply, yes: args.yes, skip: args.skip.clone() };
    let mut console = Console {
        json: as_json,
        redactor: &redactor,
        timeline: timeline.as_ref(),
        runbook: book.id.clone(),
        record_errors: Vec::new(),
    };
    if !as_json {
        println!("runbook {} — {}{}", book.id, book.title, if args.apply { " (--apply)" } else { "" });
    }
    // One trace per run: a span per step under this one.
    let span = tracing::info_span!(
        "runbook run",
        otel.name = %format!("runbook {}", book.id),
        runbook.id = %book.id,
        runbook.apply = args.apply,
        runbook.outcome = tracing::field::Empty,
    );
    let mut report = run::run(&book, &mut ctx, &options, &mut console).instrument(span.clone()).await;
    span.record("runbook.outcome", report.outcome.describe());
    let trace_id = telemetry::spans::context_of(&span).map(|cx| cx.trace_id.to_string());
    span.in_scope(|| {
        tracing::info!(outcome = report.outcome.describe(), exit_code = report.exit_code, "runbook finished");
    });

    if let Some(timeline) = &timeline {
        let mitigations: Vec<&str> =
            report.steps.iter().filter(|s| s.reason == Some(Skip::NotApplied)).map(|s| s.id.as_str()).collect();
        let mut text = format!("runbook {}: {} (exit {})", book.id, report.outcome.describe(), report.exit_code);
        if !mitigations.is_empty() {
            text.push_str(&format!(
                "; suggested mitigations: {} (`runbook run {} --apply`)",
                mitigations.join(", "),
                book.id
            ));
        }
        let data = json!({ "runbook": book.id, "phase": "summary", "outcome": report.outcome, "exit_code": report.exit_code, "notes": report.notes, "trace_id": trace_id });
        if let Err(e) = timeline.record(&redactor.text(&text), redactor.value(&data)).await {
            console.record_errors.push(e.to_string());
        }
    }
    if !console.record_errors.is_empty() {
        report.notes.push(format!(
            "{} event(s) could not be recorded on incident {}: {}",
            console.record_errors.len(),
            args.incident.unwrap_or(0),
            console.record_errors[0]
        ));
        report.outcome = Outcome::StepFailed;
        report.exit_code = report.outcome.code();
    }
    finish(&report, as_json, &redactor, args.incident);
    report.exit_code
}

fn finish(report: &Report, as_json: bool, redactor: &Redactor, incident: Option<i64>) {
    if as_json {
        let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
        value["incident"] = json!(incident);
        print_json(&redactor.value(&value));
        return;
    }
    for note in &report.notes {
        println!("note: {}", redactor.text(note));
    }
    println!("result: {} (exit {})", report.outcome.describe(), report.exit_code);
}

/// Prints progress, asks for confirmations, and records on the timeline.
struct Console<'a> {
    json: bool,
    redactor: &'a Redactor,
    timeline: Option<&'a Timeline>,
    runbook: String,
    record_errors: Vec<String>,
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Problem => "PROBLEM",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
        Status::Applied => "APPLIED",
    }
}

impl Observer for Console<'_> {
    fn preflight(&mut self, check: &Preflight) {
        if self.json {
            return;
        }
        match &check.error {
            None => println!("  target {} {}: ok", check.target, check.url),
            Some(e) => println!("  target {} FAILED: {}", check.target, self.redactor.text(e)),
        }
    }

    fn phase(&mut self, phase: Phase, note: &str) {
        if !self.json {
            println!("{phase}{}", if note.is_empty() { String::new() } else { format!(" ({note})") });
        }
    }

    async fn step(&mut self, result: &StepResult) {
        let summary = self.redactor.text(&result.summary);
        tracing::info!(
            runbook = %self.runbook,
            step = %result.id,
            phase = %result.phase,
            status = status_word(result.status),
            summary = %summary,
            "step"
        );
        if !self.json {
            println!("  {:<10} {:<28} {summary}", status_word(result.status), result.id);
        }
        let Some(timeline) = self.timeline else { return };
        // Mitigations not applied or not needed did nothing; the summary event names them.
        if matches!(result.reason, Some(Skip::NotApplied | Skip::NotNeeded)) {
            return;
        }
        let text =
            format!("[{} {}] {}: {} — {summary}", result.phase, status_word(result.status), result.id, result.title);
        let data = json!({
            "runbook": self.runbook,
            "step": result.id,
            "phase": result.phase,
            "action": result.action,
            "target": result.target,
            "status": result.status,
            "reason": result.reason,
            "needed": result.needed,
            "output": result.output,
            "trace_id": telemetry::spans::current_context().map(|cx| cx.trace_id.to_string()),
        });
        if let Err(e) = timeline.record(&text, self.redactor.value(&data)).await {
            let e = self.redactor.text(&e.to_string());
            eprintln!("runbook: could not record step {} on the incident: {e}", result.id);
            self.record_errors.push(e);
        }
    }

    fn confirm(&mut self, step: &Step, target: &str) -> bool {
        let mut err = std::io::stderr();
        let _ = write!(err, "apply `{}`: {}\n  {} on {target}\n", step.id, step.title, step.call());
        if let Some(plan) = step.action.plan() {
            let _ = writeln!(err, "  it would {plan}");
        }
        let _ = write!(err, "proceed? [y/N] ");
        let _ = err.flush();
        let mut answer = String::new();
        // End of input (a pipe, no terminal) is a no.
        if std::io::stdin().lock().read_line(&mut answer).unwrap_or(0) == 0 {
            let _ = writeln!(err);
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_flag_and_argument_has_help() {
        assert_eq!(testkit::undocumented(&super::Cli::command()), Vec::<String>::new());
    }
}
