//! A runbook file: Markdown prose in six fixed sections, with the steps the
//! CLI runs embedded as fenced `runbook-step` blocks of YAML. Prose and
//! steps share one file so they cannot drift apart.
//!
//! ````markdown
//! # DB pool saturation
//! ## What it means for users
//! ...
//! ## Diagnose
//! ```runbook-step
//! id: long-queries
//! title: Queries running longer than 30 s
//! action: postgres.long_queries
//! args: { min_seconds: 30 }
//! problem_if: count > 0
//! ```
//! ````
//!
//! Everything is checked at parse time: the sections and their order, that
//! each step sits in the section of its phase, that its action is in the
//! registry with valid arguments, that `problem_if` reads fields the action
//! returns, and that a mitigation's `when` names a diagnose step.

use std::{collections::BTreeSet, fmt};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    action::{Action, Effect},
    condition::Condition,
    target::Target,
};

/// The six sections every runbook has, in this order.
pub const SECTIONS: [&str; 6] =
    ["What it means for users", "Likely causes", "Diagnose", "Mitigate", "Verify", "Escalate"];

/// The info string of a step block.
pub const STEP_FENCE: &str = "runbook-step";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Diagnose,
    Mitigate,
    Verify,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Diagnose => "diagnose",
            Phase::Mitigate => "mitigate",
            Phase::Verify => "verify",
        }
    }

    fn of_section(section: &str) -> Option<Phase> {
        match section {
            "Diagnose" => Some(Phase::Diagnose),
            "Mitigate" => Some(Phase::Mitigate),
            "Verify" => Some(Phase::Verify),
            _ => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub id: String,
    pub title: String,
    /// The Markdown as written.
    pub text: String,
    /// The six sections' bodies (step blocks included), in order.
    pub sections: Vec<(&'static str, String)>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub title: String,
    pub phase: Phase,
    pub action: Action,
    /// The arguments as written (and as overridden by `--set`).
    pub args: Map<String, Value>,
    pub problem_if: Option<Condition>,
    /// Mitigations only: diagnose steps of which one must find a problem.
    pub when: Vec<String>,
    /// Line of the step's fence in its file.
    pub line: usize,
}

impl Step {
    /// `postgres.long_queries min_seconds=30`.
    pub fn call(&self) -> String {
        let mut out = self.action.name().to_string();
        for (k, v) in &self.args {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!(" {k}={v}"));
        }
        out
    }

    /// What the step would do, for the dry run and the confirmation:
    /// the action's own words where it has them, else its call.
    pub fn plan(&self) -> String {
        self.action.plan().unwrap_or_else(|| format!("run {}", self.call()))
    }
}

/// A problem in a runbook file, at a line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct BookError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    id: String,
    title: String,
    #[serde(default)]
    phase: Option<Phase>,
    action: String,
    #[serde(default)]
    args: Option<Map<String, Value>>,
    #[serde(default)]
    problem_if: Option<String>,
    #[serde(default)]
    when: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A step id: lower-case words joined by `-`, never a target's name (so
/// `--skip` can take either).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !Target::ALL.iter().any(|t| t.name() == id)
}

/// Parses runbook `id` from `text`; `origin` names the file in errors.
pub fn parse(id: &str, text: &str, origin: &str) -> Result<Runbook, BookError> {
    let err = |line: usize, message: String| BookError { origin: origin.to_string(), line, message };

    let mut title: Option<String> = None;
    let mut sections: Vec<(&'static str, String, usize)> = Vec::new();
    let mut blocks: Vec<(usize, String, Option<&'static str>)> = Vec::new();
    // (fence character, length, info string, line, collected text)
    let mut fence: Option<(char, usize, String, usize, String)> = None;

    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some((ch, len, info, start, mut body)) = fence.take() {
            let closing = indent <= 3 && trimmed.trim_end().chars().all(|c| c == ch) && trimmed.trim_end().len() >= len;
            if closing {
                if info == STEP_FENCE {
                    blocks.push((start, body, sections.last().map(|s| s.0)));
                }
            } else {
                body.push_str(line);
                body.push('\n');
                fence = Some((ch, len, info, start, body));
            }
            if let Some(section) = sections.last_mut() {
                section.1.push_str(line);
                section.1.push('\n');
            }
            continue;
        }
        let ch = trimmed.chars().next().unwrap_or(' ');
        if indent <= 3 && (ch == '`' || ch == '~') {
            let len = trimmed.chars().take_while(|c| *c == ch).count();
            if len >= 3 {
                let info = trimmed[len..].trim().to_string();
                fence = Some((ch, len, info, n, String::new()));
                if let Some(section) = sections.last_mut() {
                    section.1.push_str(line);
                    section.1.push('\n');
                }
                continue;
            }
        }
        if let Some(heading) = trimmed.strip_prefix("# ").filter(|_| indent == 0) {
            if title.is_some() || !sections.is_empty() {
                return Err(err(n, "only one `# Title` line, at the top".into()));
            }
            title = Some(heading.trim().to_string());
            continue;
        }
        if let Some(heading) = trimmed.strip_prefix("## ").filter(|_| indent == 0) {
            let heading = heading.trim();
            let expected = SECTIONS.get(sections.len());
            match SECTIONS.iter().find(|s| s.eq_ignore_ascii_case(heading)) {
                Some(name) if Some(name) == expected => sections.push((name, String::new(), n)),
                Some(name) => {
                    return Err(err(
                        n,
                        format!(
                            "section `{name}` is out of order; expected `## {}` next",
                            expected.unwrap_or(&"(none)")
                        ),
                    ));
                }
                None => {
                    return Err(err(
                        n,
                        format!("unknown section `## {heading}`; the sections are: {}", SECTIONS.join(", ")),
                    ));
                }
            }
            continue;
        }
        if let Some(section) = sections.last_mut() {
            section.1.push_str(line);
            section.1.push('\n');
        }
    }
    if let Some((_, _, _, start, _)) = fence {
        return Err(err(start, "code block is never closed".into()));
    }
    let Some(title) = title else { return Err(err(1, "missing the `# Title` line".into())) };
    if sections.len() < SECTIONS.len() {
        let missing: Vec<&str> = SECTIONS[sections.len()..].to_vec();
        return Err(err(text.lines().count().max(1), format!("missing section(s): {}", missing.join(", "))));
    }
    for (name, body, line) in &sections {
        if body.trim().is_empty() {
            return Err(err(*line, format!("section `{name}` is empty")));
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    for (line, yaml, section) in blocks {
        let section_phase = section.and_then(Phase::of_section);
        let Some(phase) = section_phase else {
            return Err(err(
                line,
                format!(
                    "a step block must sit under ## Diagnose, ## Mitigate or ## Verify, not {}",
                    section.map_or("the title".into(), |s| format!("## {s}"))
                ),
            ));
        };
        let spec: StepSpec = serde_norway::from_str(&yaml).map_err(|e| {
            let (at, message) = yamlerr::locate(&e, "", line);
            err(at.line.unwrap_or(line), format!("step: {message}"))
        })?;
        let step_err = |message: String| err(line, format!("step `{}`: {message}", spec.id));
        if !valid_id(&spec.id) {
            return Err(step_err("ids are lower-case words joined by `-` (and not a target name)".into()));
        }
        if steps.iter().any(|s| s.id == spec.id) {
            return Err(step_err("duplicate step id".into()));
        }
        if let Some(p) = spec.phase.filter(|p| *p != phase) {
            return Err(step_err(format!("phase `{p}` but it sits under ## {}", capitalized(phase))));
        }
        let args = spec.args.unwrap_or_default();
        let action = Action::parse(&spec.action, &args).map_err(&step_err)?;
        let effect = action.spec().effect;
        match (phase, effect) {
            (Phase::Mitigate, Effect::Change) | (Phase::Diagnose | Phase::Verify, Effect::Read | Effect::Probe) => {}
            (Phase::Mitigate, _) => {
                return Err(step_err(format!("`{}` only reads; mitigate steps change something", spec.action)));
            }
            (_, Effect::Change) => {
                return Err(step_err(format!(
                    "`{}` changes {}; only mitigate steps may",
                    spec.action,
                    action.spec().target
                )));
            }
        }
        let problem_if = match spec.problem_if {
            Some(_) if phase == Phase::Mitigate => {
                return Err(step_err("problem_if belongs to diagnose and verify steps".into()));
            }
            Some(source) => {
                let condition = Condition::parse(&source).map_err(|m| step_err(format!("problem_if: {m}")))?;
                let outputs = action.spec().outputs;
                if let Some(field) = condition.fields().into_iter().find(|f| !outputs.contains(f)) {
                    return Err(step_err(format!(
                        "problem_if reads `{field}`, which `{}` does not return ({})",
                        spec.action,
                        outputs.join(", ")
                    )));
                }
                Some(condition)
            }
            None => None,
        };
        let when = match spec.when {
            None => Vec::new(),
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
        };
        if !when.is_empty() && phase != Phase::Mitigate {
            return Err(step_err("`when` belongs to mitigate steps".into()));
        }
        for id in &when {
            match steps.iter().find(|s| &s.id == id) {
                Some(s) if s.phase == Phase::Diagnose && s.problem_if.is_some() => {}
                Some(_) => return Err(step_err(format!("when: `{id}` must be a diagnose step with problem_if"))),
                None => return Err(step_err(format!("when: no diagnose step `{id}` above"))),
            }
        }
        steps.push(Step { id: spec.id, title: spec.title, phase, action, args, problem_if, when, line });
    }
    if !steps.iter().any(|s| s.phase == Phase::Diagnose) {
        return Err(err(sections[2].2, "## Diagnose has no runbook-step block".into()));
    }

    Ok(Runbook {
        id: id.to_string(),
        title,
        text: text.to_string(),
        sections: sections.into_iter().map(|(name, body, _)| (name, body.trim().to_string())).collect(),
        steps,
    })
}

/// Parses one `--set` as `(key, value)`; the value is read as YAML, so
/// `60` is a number, `true` a boolean and `2gb` a string.
pub fn parse_set(text: &str) -> Result<(String, Value), String> {
    let (key, raw) = text.split_once('=').ok_or_else(|| format!("--set `{text}` is not [STEP.]ARG=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("--set `{text}` has no argument name"));
    }
    // Only what plainly is a number, boolean, list or map is read as one:
    // `rbtest:` is a prefix, not a YAML map.
    let t = raw.trim();
    let value = match serde_norway::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        Ok(v @ Value::Array(_)) if t.starts_with('[') => v,
        Ok(v @ Value::Object(_)) if t.starts_with('{') => v,
        Ok(Value::Null) if t == "null" => Value::Null,
        _ => Value::String(raw.to_string()),
    };
    Ok((key.to_string(), value))
}

impl Runbook {
    /// Applies `--set` overrides: `step.arg=value` for one step, `arg=value`
    /// for every step whose action takes `arg`. Each changed step's
    /// arguments are checked again.
    pub fn override_args(&mut self, sets: &[(String, Value)]) -> Result<(), String> {
        let mut changed: BTreeSet<usize> = BTreeSet::new();
        for (key, value) in sets {
            let targets: Vec<usize> = match key.split_once('.') {
                Some((step, arg)) => {
                    let index = self
                        .steps
                        .iter()
                        .position(|s| s.id == step)
                        .ok_or_else(|| format!("--set {key}: runbook `{}` has no step `{step}`", self.id))?;
                    let spec = self.steps[index].action.spec();
                    if !spec.args.contains(&arg) {
                        return Err(format!(
                            "--set {key}: `{}` takes no `{arg}` (it takes: {})",
                            spec.name,
                            list_or_none(spec.args)
                        ));
                    }
                    vec![index]
                }
                None => {
                    let found: Vec<usize> = self
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.action.spec().args.contains(&key.as_str()))
                        .map(|(i, _)| i)
                        .collect();
                    if found.is_empty() {
                        return Err(format!(
                            "--set {key}: no step of runbook `{}` takes `{key}` (use STEP.ARG=VALUE for one step)",
                            self.id
                        ));
                    }
                    found
                }
            };
            let arg = key.rsplit('.').next().unwrap_or(key);
            for index in targets {
                self.steps[index].args.insert(arg.to_string(), value.clone());
                changed.insert(index);
            }
        }
        for index in changed {
            let step = &mut self.steps[index];
            step.action =
                Action::parse(step.action.name(), &step.args).map_err(|e| format!("--set: step `{}`: {e}", step.id))?;
        }
        Ok(())
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "nothing".into() } else { items.join(", ") }
}

fn capitalized(phase: Phase) -> &'static str {
    match phase {
        Phase::Diagnose => "Diagnose",
        Phase::Mitigate => "Mitigate",
        Phase::Verify => "Verify",
    }
}

impl Runbook {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn phase(&self, phase: Phase) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.phase == phase)
    }

    /// The Markdown for reading in a terminal: each step block becomes one
    /// line saying what the CLI will run.
    pub fn prose(&self) -> String {
        let mut out = String::new();
        let mut lines = self.text.lines().enumerate();
        while let Some((index, line)) = lines.next() {
            match self.steps.iter().find(|s| s.line == index + 1) {
                Some(step) => {
                    let trimmed = line.trim_start();
                    let ch = trimmed.chars().next().unwrap_or('`');
                    let len = trimmed.chars().take_while(|c| *c == ch).count();
                    for (_, l) in lines.by_ref() {
                        let l = l.trim();
                        if l.len() >= len && l.chars().all(|c| c == ch) {
                            break;
                        }
                    }
                    out.push_str(&format!("    [{} step `{}`] {} — {}", step.phase, step.id, step.call(), step.title));
                    if let Some(c) = &step.problem_if {
                        out.push_str(&format!("; problem if {c}"));
                    }
                    if let Some(plan) = step.action.plan() {
                        out.push_str(&format!("; would {plan}"));
                    }
                    if !step.when.is_empty() {
                        out.push_str(&format!("; when {} found a problem", step.when.join(" or ")));
                    }
                    out.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# Example

Intro.

## What it means for users
Bookings fail.

## Likely causes
Locks.

## Diagnose
```runbook-step
id: long-queries
title: Long queries
action: postgres.long_queries
args: { min_seconds: 30 }
problem_if: count > 0
```

```sql
-- not a step; a heading-like line inside stays prose:
## Mitigate
```

## Mitigate
```runbook-step
id: terminate
title: Terminate them
action: postgres.terminate_long_queries
args: { min_seconds: 60 }
when: long-queries
```

## Verify
```runbook-step
id: long-queries-after
title: Long queries again
phase: verify
action: postgres.long_queries
problem_if: count > 0
```

## Escalate
Call the DBA.
"#;

    fn error(text: &str) -> String {
        parse("x", text, "x.md").expect_err("should be rejected").to_string()
    }

    #[test]
    fn a_good_runbook_parses_into_sections_and_steps() {
        let book = parse("example", GOOD, "example.md").unwrap();
        assert_eq!(book.title, "Example");
        assert_eq!(book.sections.iter().map(|s| s.0).collect::<Vec<_>>(), SECTIONS);
        assert!(book.sections[2].1.contains("## Mitigate"), "a heading inside a code block is prose");
        let ids: Vec<(&str, Phase)> = book.steps.iter().map(|s| (s.id.as_str(), s.phase)).collect();
        assert_eq!(
            ids,
            [("long-queries", Phase::Diagnose), ("terminate", Phase::Mitigate), ("long-queries-after", Phase::Verify)]
        );
        assert_eq!(book.steps[0].line, 12);
        assert_eq!(book.steps[1].when, ["long-queries"]);
        assert_eq!(book.steps[0].call(), "postgres.long_queries min_seconds=30");
        let prose = book.prose();
        assert!(prose.contains("[diagnose step `long-queries`] postgres.long_queries min_seconds=30 — Long queries; problem if count > 0"), "{prose}");
        assert!(!prose.contains("action: postgres"), "{prose}");
        assert!(prose.contains("-- not a step"), "{prose}");
        assert_eq!(
            book.steps[1].plan(),
            "terminate queries of application booking active longer than 60s in the current database (at most 50)"
        );
        assert!(
            prose.contains("Terminate them; would terminate queries of application booking active longer than 60s"),
            "{prose}"
        );
        assert_eq!(book.steps[0].plan(), "run postgres.long_queries min_seconds=30");
    }

    #[test]
    fn missing_unknown_and_out_of_order_sections_are_rejected() {
        assert!(error(&GOOD.replace("## Escalate\nCall the DBA.\n", "")).contains("missing section(s): Escalate"));
        assert!(error(&GOOD.replace("## Likely causes", "## Causes")).contains("unknown section `## Causes`"));
        let swapped = GOOD.replace(
            "## What it means for users\nBookings fail.\n\n## Likely causes\nLocks.\n",
            "## Likely causes\nLocks.\n\n## What it means for users\nBookings fail.\n",
        );
        assert!(error(&swapped).contains("out of order"), "{}", error(&swapped));
        assert!(error(&GOOD.replace("Call the DBA.", "")).contains("section `Escalate` is empty"));
        assert!(error(&GOOD.replace("# Example", "Example")).contains("missing the `# Title`"));
    }

    #[test]
    fn unknown_actions_and_bad_arguments_fail_at_their_line() {
        let e = error(&GOOD.replace("action: postgres.long_queries\nargs", "action: postgres.kill_everything\nargs"));
        assert!(e.starts_with("x.md:12: step `long-queries`: unknown action `postgres.kill_everything`"), "{e}");
        let e = error(&GOOD.replace("args: { min_seconds: 30 }", "args: { min_secs: 30 }"));
        assert!(e.contains("unknown field `min_secs`"), "{e}");
        let e = error(&GOOD.replace("args: { min_seconds: 60 }\n", ""));
        assert!(e.contains("min_seconds is required"), "{e}");
        let e =
            error(&GOOD.replace("args: { min_seconds: 60 }", "args: { min_seconds: 60, application_name: pg_dump }"));
        assert!(e.contains("only ever terminates booking's own sessions"), "{e}");
        let e = error(&GOOD.replace("title: Long queries\n", "title: Long queries\ntitel: x\n"));
        assert!(e.contains("unknown field `titel`"), "{e}");
    }

    #[test]
    fn steps_must_sit_in_their_phase_and_changes_only_mitigate() {
        let e = error(&GOOD.replace("phase: verify", "phase: diagnose"));
        assert!(e.contains("phase `diagnose` but it sits under ## Verify"), "{e}");
        let e = error(&GOOD.replace(
            "phase: verify\naction: postgres.long_queries",
            "phase: verify\naction: redis.set_eviction_policy\nargs: { policy: volatile-lru }",
        ));
        assert!(e.contains("only mitigate steps may"), "{e}");
        let e = error(&GOOD.replace("action: postgres.terminate_long_queries", "action: postgres.long_queries"));
        assert!(e.contains("mitigate steps change something"), "{e}");
        let e = error(&GOOD.replace("Locks.", "Locks.\n```runbook-step\nid: a\ntitle: a\naction: redis.memory\n```"));
        assert!(e.contains("must sit under ## Diagnose"), "{e}");
    }

    #[test]
    fn conditions_must_read_fields_the_action_returns() {
        let e = error(&GOOD.replace("problem_if: count > 0\n```\n\n```sql", "problem_if: cuont > 0\n```\n\n```sql"));
        assert!(e.contains("problem_if reads `cuont`"), "{e}");
        let e = error(&GOOD.replace("problem_if: count > 0\n```\n\n```sql", "problem_if: count >\n```\n\n```sql"));
        assert!(e.contains("problem_if: expected a value"), "{e}");
    }

    #[test]
    fn when_names_a_diagnose_step_with_a_condition() {
        assert!(error(&GOOD.replace("when: long-queries", "when: nope")).contains("no diagnose step `nope` above"));
        let e = error(&GOOD.replace("problem_if: count > 0\n```\n\n```sql", "```\n\n```sql"));
        assert!(e.contains("when: `long-queries` must be a diagnose step with problem_if"), "{e}");
        let e = error(&GOOD.replace("phase: verify\n", "phase: verify\nwhen: long-queries\n"));
        assert!(e.contains("`when` belongs to mitigate steps"), "{e}");
    }

    #[test]
    fn ids_are_unique_words_and_not_target_names() {
        assert!(error(&GOOD.replace("id: terminate", "id: long-queries")).contains("duplicate step id"));
        assert!(error(&GOOD.replace("id: terminate", "id: redis")).contains("not a target name"));
        assert!(error(&GOOD.replace("id: terminate", "id: Terminate_It")).contains("lower-case"));
    }

    #[test]
    fn set_overrides_one_step_or_every_step_taking_the_argument() {
        let mut book = parse("example", GOOD, "example.md").unwrap();
        let sets: Vec<(String, Value)> =
            ["min_seconds=4", "terminate.database=*"].iter().map(|s| parse_set(s).unwrap()).collect();
        book.override_args(&sets).unwrap();
        for step in &book.steps {
            assert_eq!(step.args["min_seconds"], serde_json::json!(4), "{}", step.id);
        }
        assert_eq!(book.step("terminate").unwrap().args["database"], "*");
        assert!(book.step("long-queries").unwrap().args.get("database").is_none());
        let err = |s: &str| {
            parse("example", GOOD, "example.md").unwrap().override_args(&[parse_set(s).unwrap()]).unwrap_err()
        };
        assert!(err("policy=x").contains("no step of runbook `example` takes `policy`"));
        assert!(err("nope.min_seconds=1").contains("has no step `nope`"));
        assert!(err("terminate.policy=x").contains("takes no `policy`"));
        assert!(err("terminate.min_seconds=0").contains("min_seconds must be at least 1"));
        assert!(parse_set("novalue").is_err());
        assert_eq!(parse_set("bytes=2gb").unwrap().1, "2gb");
        assert_eq!(parse_set("enabled=true").unwrap().1, true);
        assert_eq!(parse_set("prefix=rbtest:").unwrap().1, "rbtest:");
        assert_eq!(parse_set("database=*").unwrap().1, "*");
        assert_eq!(parse_set("metrics=[a, b]").unwrap().1, serde_json::json!(["a", "b"]));
    }

    #[test]
    fn yaml_errors_and_unclosed_blocks_carry_a_line() {
        let e = error(&GOOD.replace("args: { min_seconds: 30 }", "args: { min_seconds: 30"));
        assert!(e.starts_with("x.md:"), "{e}");
        let e = error(&GOOD.replace("## Escalate\nCall the DBA.\n", "## Escalate\nCall.\n```text\nunclosed\n"));
        assert!(e.contains("never closed"), "{e}");
    }
}
