//! Validation and expansion: a rule's spec into the [`Rule`]s the engine
//! evaluates, with the errors and warnings it earns.

use super::*;

pub(super) fn inhibit_rule(spec: InhibitSpec) -> Result<crate::rules::InhibitRule, String> {
    let parse = |side: &str, list: &[String]| -> Result<Vec<crate::promql::Matcher>, String> {
        if list.is_empty() {
            return Err(format!("{side} is empty: it would match every alert"));
        }
        let mut out = Vec::new();
        for text in list {
            let expr = crate::promql::parse(&format!("ALERTS{{{text}}}"))
                .map_err(|e| format!("{side}: `{text}` is not a matcher (label=\"value\", !=, =~ or !~): {e}"))?;
            let crate::promql::Expr::Vector(selector) = expr else {
                return Err(format!("{side}: `{text}` is not a matcher"));
            };
            if selector.matchers.len() != 1 {
                return Err(format!("{side}: `{text}` must be exactly one matcher"));
            }
            out.extend(selector.matchers);
        }
        Ok(out)
    };
    for label in &spec.equal {
        if !is_label_name(label) {
            return Err(format!("equal: `{label}` is not a label name"));
        }
    }
    Ok(crate::rules::InhibitRule {
        source: parse("source_matchers", &spec.source_matchers)?,
        target: parse("target_matchers", &spec.target_matchers)?,
        equal: spec.equal,
        hold: spec.hold.map_or(Duration::ZERO, |d| d.0),
        source_text: spec.source_matchers,
        target_text: spec.target_matchers,
    })
}

pub(super) struct Defaults {
    pub(super) no_data_for: Duration,
    pub(super) no_data_severity: Severity,
    pub(super) clear_for: Duration,
    pub(super) window: Duration,
    pub(super) short_window: Duration,
    pub(super) dashboard: Option<String>,
}

/// Validates one rule entry and expands it into the rules the engine runs.
/// Errors and warnings are plain messages; the caller adds file, line and id.
pub(super) fn build(
    spec: RuleSpec,
    defaults: &Defaults,
    line: usize,
    warnings: &mut Vec<String>,
) -> Result<Vec<Rule>, String> {
    let id = spec.id.clone().ok_or("missing `id`")?;
    check_slug(&id).map_err(|m| format!("id {m}"))?;
    let kind = spec.kind.ok_or("missing `kind` (sli, burn_rate or promql)")?;
    check_fields(&spec, kind)?;

    let owner = spec.owner.clone().ok_or("missing `owner` (the role this alert pages)")?;
    check_slug(&owner).map_err(|m| format!("owner {m}"))?;
    let runbook = spec.runbook.clone().ok_or("missing `runbook` (its id: runbooks/<id>.md)")?;
    check_slug(&runbook).map_err(|m| format!("runbook {m}"))?;
    let dashboard = spec.dashboard.clone().or_else(|| defaults.dashboard.clone());
    if let Some(path) = &dashboard {
        check_dashboard(path)?;
    }
    let labels = spec.labels.clone().unwrap_or_default();
    for name in labels.keys() {
        if !is_label_name(name) {
            return Err(format!("label name `{name}` is not a valid Prometheus label name"));
        }
        if RESERVED_LABELS.contains(&name.as_str()) {
            return Err(format!("label `{name}` is set by the engine and cannot be overridden"));
        }
    }
    let name = match &spec.name {
        Some(name) if name.trim().is_empty() => return Err("`name` is empty".to_string()),
        Some(name) => name.clone(),
        None => camel_case(&id),
    };
    let base = Rule {
        id,
        name,
        summary: String::new(),
        owner,
        runbook,
        dashboard,
        unit: Unit::None,
        levels: Vec::new(),
        no_data_for: spec.no_data_for.map_or(defaults.no_data_for, |d| d.0),
        no_data_severity: spec.no_data_severity.unwrap_or(defaults.no_data_severity),
        labels,
        line,
    };
    match kind {
        Kind::Sli | Kind::Promql => build_threshold(spec, kind, base, defaults, warnings).map(|rule| vec![rule]),
        Kind::BurnRate => build_burn(spec, base, warnings),
    }
}

/// Labels every exported alert carries; a rule's own labels cannot shadow them.
pub(super) const RESERVED_LABELS: [&str; 5] = ["alertname", "severity", "owner", "rule_id", "no_data"];

/// Rejects fields that belong to another kind: silently ignoring them
/// would hide a mistake (a `window` on a gauge, an `expr` on an SLI).
pub(super) fn check_fields(spec: &RuleSpec, kind: Kind) -> Result<(), String> {
    let present = [
        ("unit", spec.unit.is_some(), [Kind::Promql].as_slice()),
        ("sli", spec.sli.is_some(), &[Kind::Sli, Kind::BurnRate]),
        ("window", spec.window.is_some(), &[Kind::Sli]),
        ("min_requests", spec.min_requests.is_some(), &[Kind::Sli, Kind::BurnRate]),
        ("short_window", spec.short_window.is_some(), &[Kind::Sli, Kind::Promql]),
        ("expr", spec.expr.is_some(), &[Kind::Promql]),
        ("and", spec.and.is_some(), &[Kind::Sli, Kind::Promql]),
        ("warning", spec.warning.is_some(), &[Kind::Sli, Kind::Promql]),
        ("critical", spec.critical.is_some(), &[Kind::Sli, Kind::Promql]),
        ("slo", spec.slo.is_some(), &[Kind::BurnRate]),
        ("slo_period", spec.slo_period.is_some(), &[Kind::BurnRate]),
        ("page_fast", spec.page_fast.is_some(), &[Kind::BurnRate]),
        ("page_slow", spec.page_slow.is_some(), &[Kind::BurnRate]),
        ("ticket", spec.ticket.is_some(), &[Kind::BurnRate]),
    ];
    for (field, is_present, kinds) in present {
        if is_present && !kinds.contains(&kind) {
            return Err(format!("`{field}` does not apply to kind `{}`", kind.as_str()));
        }
    }
    Ok(())
}

pub(super) fn build_threshold(
    spec: RuleSpec,
    kind: Kind,
    mut rule: Rule,
    defaults: &Defaults,
    warnings: &mut Vec<String>,
) -> Result<Rule, String> {
    let summary = spec.summary.filter(|s| !s.trim().is_empty()).ok_or("missing `summary`")?;
    let (expr, unit, mut guards) = match kind {
        Kind::Sli => {
            let sli = spec
                .sli
                .ok_or("missing `sli` (error_rate, p95_latency, db_pool_saturation, redis_memory, cpu or memory)")?;
            if spec.window.is_some() && !sli.uses_window() {
                return Err(format!("`window` does not apply to `{}` (it reads gauges)", sli.as_str()));
            }
            if spec.short_window.is_some() && !sli.uses_window() {
                return Err(format!("`short_window` does not apply to `{}` (it reads gauges)", sli.as_str()));
            }
            let window = spec.window.map_or(defaults.window, |d| d.0);
            if window.is_zero() {
                return Err("window must be above 0s".to_string());
            }
            let mut guards = sli.guards();
            if let Some(min) = spec.min_requests {
                if !sli.counts_requests() {
                    return Err(format!(
                        "`min_requests` does not apply to `{}` (not measured over requests)",
                        sli.as_str()
                    ));
                }
                guards.push(min_requests_guard(min, window)?);
            }
            (Some(sli.expr(window)), sli.unit(), guards)
        }
        _ => {
            let expr = match spec.expr {
                Some(expr) if expr.trim().is_empty() => return Err("`expr` is empty".to_string()),
                Some(expr) => Some(expr.trim().to_string()),
                None => None,
            };
            if let Some(expr) = &expr {
                check_expr(expr).map_err(|m| format!("expr: {m}"))?;
            }
            (expr, spec.unit.unwrap_or_default(), Vec::new())
        }
    };
    for (i, condition) in spec.and.unwrap_or_default().into_iter().enumerate() {
        let at = format!("and[{i}]");
        if condition.expr.trim().is_empty() {
            return Err(format!("{at}: `expr` is empty"));
        }
        check_expr(&condition.expr).map_err(|m| format!("{at}: expr: {m}"))?;
        let (op, threshold) = fire_threshold(condition.above, condition.below).map_err(|m| format!("{at}: {m}"))?;
        guards.push(Condition { expr: condition.expr.trim().to_string(), op, threshold });
    }

    let short = spec.short_window.map_or(defaults.short_window, |d| d.0);
    let explicit_short = spec.short_window.is_some();
    let context = Levels {
        expr: expr.as_deref(),
        unit,
        guards: &guards,
        clear_for: defaults.clear_for,
        kind,
        short,
        explicit_short,
    };
    let mut levels = Vec::new();
    for (severity, level) in [(Severity::Warning, spec.warning), (Severity::Critical, spec.critical)] {
        if let Some(level) = level {
            levels.push(context.level(severity, level, warnings)?);
        }
    }
    if levels.is_empty() {
        return Err("no `warning` or `critical` level".to_string());
    }
    rule.summary = summary;
    rule.unit = unit;
    rule.levels = levels;
    Ok(rule)
}

pub(super) fn min_requests_guard(min: f64, window: Duration) -> Result<Condition, String> {
    if !min.is_finite() || min < 0.0 {
        return Err(format!("min_requests {min} must be a number of requests, 0 or more"));
    }
    Ok(Condition { expr: crate::rules::sli::requests(window), op: Op::Above, threshold: min })
}

/// What the levels of one threshold rule share.
pub(super) struct Levels<'a> {
    pub(super) expr: Option<&'a str>,
    pub(super) unit: Unit,
    pub(super) guards: &'a [Condition],
    pub(super) clear_for: Duration,
    pub(super) kind: Kind,
    /// Paired with every longer range of the expression (0: none).
    pub(super) short: Duration,
    /// Whether the rule asked for `short_window` itself (then it must apply).
    pub(super) explicit_short: bool,
}

impl Levels<'_> {
    pub(super) fn level(
        &self,
        severity: Severity,
        spec: LevelSpec,
        warnings: &mut Vec<String>,
    ) -> Result<Level, String> {
        let fail = |m: String| format!("{m} ({severity})");
        let expr = match (spec.expr, self.kind) {
            (Some(_), Kind::Sli) => return Err(fail("`expr` does not apply to a level of an `sli` rule".to_string())),
            (Some(expr), _) if expr.trim().is_empty() => return Err(fail("`expr` is empty".to_string())),
            (Some(expr), _) => {
                check_expr(&expr).map_err(|m| fail(format!("expr: {m}")))?;
                expr.trim().to_string()
            }
            (None, _) => self.expr.ok_or_else(|| fail("missing `expr`".to_string()))?.to_string(),
        };
        let (op, threshold) = fire_threshold(spec.above, spec.below).map_err(fail)?;
        let for_ = spec.for_.ok_or_else(|| fail("missing `for` (how long the condition must hold)".to_string()))?.0;
        let (clear_key, clear, wrong_key, wrong) = match op {
            Op::Above => ("clear_below", spec.clear_below, "clear_above", spec.clear_above),
            Op::Below => ("clear_above", spec.clear_above, "clear_below", spec.clear_below),
        };
        if wrong.is_some() {
            return Err(fail(format!("`{wrong_key}` does not go with `{}`; use `{clear_key}`", op_key(op))));
        }
        let clear = clear.ok_or_else(|| fail(format!("missing `{clear_key}` (where the alert resolves)")))?;
        check_number(clear_key, clear).map_err(fail)?;
        let healthy_side = match op {
            Op::Above => clear <= threshold,
            Op::Below => clear >= threshold,
        };
        if !healthy_side {
            let side = if op == Op::Above { "below" } else { "above" };
            return Err(fail(format!("{clear_key} {clear} is not {side} the fire threshold {threshold}")));
        }
        if clear == threshold {
            warnings.push(fail(format!(
                "{clear_key} equals the fire threshold {threshold}: without hysteresis the alert can flap"
            )));
        }
        if self.unit == Unit::Ratio {
            ratio_warning(op, threshold, warnings, severity);
        }
        // The multi-window pattern of the SRE workbook: pending only while
        // both the window and the short window exceed the threshold, so a
        // fault that ended stops the clock within the short window; and it
        // resolves on the short window, minutes after a fix, not a whole
        // window later.
        let short = match shorten(&expr, self.short) {
            Ok(short) => short,
            Err(why) if self.explicit_short => return Err(fail(format!("short_window: {why}"))),
            Err(_) => None,
        };
        let mut fire = vec![Condition { expr: expr.clone(), op, threshold }];
        if let Some(short) = &short {
            fire.push(Condition { expr: short.clone(), op, threshold });
        }
        fire.extend(self.guards.iter().cloned());
        let clear_op = match op {
            Op::Above => Op::Below,
            Op::Below => Op::Above,
        };
        Ok(Level {
            severity,
            fire,
            for_,
            clear: vec![Condition { expr: short.unwrap_or(expr), op: clear_op, threshold: clear }],
            clear_for: spec.clear_for.map_or(self.clear_for, |d| d.0),
        })
    }
}

/// Functions whose value grows with the range: shortening their range would
/// change what the threshold means.
pub(super) const RANGE_SCALED: [&str; 5] = ["increase(", "sum_over_time(", "count_over_time(", "changes(", "resets("];

/// `expr` with every range longer than `short` cut to `short`: the same
/// signal over the last `short` only. `Ok(None)` when `short` is 0 (off);
/// an error when no range is longer, or a range feeds a function whose value
/// scales with it (`increase`, ...): a rule that asked for `short_window`
/// hears why, a default one simply has none.
pub(super) fn shorten(expr: &str, short: Duration) -> Result<Option<String>, String> {
    if short.is_zero() {
        return Ok(None);
    }
    let ranges = regex::Regex::new(r"\[([0-9a-z]+)\]").expect("valid regex");
    let mut changed = false;
    let mut failed = None;
    let out = ranges.replace_all(expr, |c: &regex::Captures<'_>| match crate::promql::parse_duration(&c[1]) {
        Ok(range) if range > short => {
            changed = true;
            format!("[{}]", format_duration(short))
        }
        Ok(_) => c[0].to_string(),
        Err(e) => {
            failed = Some(e);
            c[0].to_string()
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if !changed {
        return Err(format!("no range in the expression is longer than {}", format_duration(short)));
    }
    if let Some(f) = RANGE_SCALED.iter().find(|f| expr.contains(*f)) {
        return Err(format!(
            "the expression uses {}…), whose value grows with its range; write the short window as an `and` condition",
            f
        ));
    }
    Ok(Some(out.into_owned()))
}

pub(super) fn ratio_warning(op: Op, threshold: f64, warnings: &mut Vec<String>, severity: Severity) {
    let never = match op {
        Op::Above => threshold >= 1.0,
        Op::Below => threshold <= 0.0,
    };
    if never {
        warnings.push(format!(
            "{} {threshold} can never fire: a ratio stays within 0..1 (did you mean {}?) ({severity})",
            op_key(op),
            burn::tidy(threshold / 100.0)
        ));
    }
}

pub(super) fn op_key(op: Op) -> &'static str {
    match op {
        Op::Above => "above",
        Op::Below => "below",
    }
}

pub(super) fn fire_threshold(above: Option<f64>, below: Option<f64>) -> Result<(Op, f64), String> {
    let (op, threshold) = match (above, below) {
        (Some(t), None) => (Op::Above, t),
        (None, Some(t)) => (Op::Below, t),
        (None, None) => return Err("needs `above` or `below`".to_string()),
        (Some(_), Some(_)) => return Err("has both `above` and `below`; use two rules".to_string()),
    };
    check_number(op_key(op), threshold)?;
    Ok((op, threshold))
}

pub(super) fn check_number(key: &str, value: f64) -> Result<(), String> {
    if value.is_finite() { Ok(()) } else { Err(format!("{key} {value} is not a finite number")) }
}

pub(super) fn build_burn(spec: RuleSpec, base: Rule, warnings: &mut Vec<String>) -> Result<Vec<Rule>, String> {
    let sli = spec.sli.unwrap_or(Sli::ErrorRate);
    if !sli.is_event_ratio() {
        return Err(format!("a burn rate needs an error-ratio SLI (error_rate), not `{}`", sli.as_str()));
    }
    let slo = spec.slo.ok_or("missing `slo` (the availability target, e.g. 0.995)")?;
    if !(slo > 0.0 && slo < 1.0) {
        return Err(format!("slo {slo} must lie strictly between 0 and 1 (0.995 is 99.5 %)"));
    }
    let period = spec.slo_period.map_or(burn::DEFAULT_PERIOD, |d| d.0);
    if period.is_zero() {
        return Err("slo_period must be above 0s".to_string());
    }
    let min_requests = spec.min_requests.unwrap_or(burn::DEFAULT_MIN_REQUESTS);
    if !min_requests.is_finite() || min_requests < 0.0 {
        return Err(format!("min_requests {min_requests} must be a number of requests, 0 or more"));
    }
    let fast = burn_window("page_fast", spec.page_fast, burn::PAGE_FAST, slo, warnings)?;
    let slow = burn_window("page_slow", spec.page_slow, burn::PAGE_SLOW, slo, warnings)?;
    let ticket = burn_window("ticket", spec.ticket, burn::TICKET, slo, warnings)?;

    let target = percent(slo);
    let about = spec.summary.unwrap_or_else(|| format!("Error budget of the {target} availability SLO"));
    let spent = |w: &BurnWindow| percent(burn::budget_spent(w.factor, w.long, period));
    let fast_rule = Rule {
        id: format!("{}-fast", base.id),
        name: format!("{}Fast", base.name),
        summary: format!(
            "{about} is burning fast: {}× the sustainable rate over {} and {} ({} of the {} budget per {})",
            fast.factor,
            format_duration(fast.long),
            format_duration(fast.short),
            spent(&fast),
            format_duration(period),
            format_duration(fast.long),
        ),
        unit: Unit::Ratio,
        levels: vec![burn::level(Severity::Critical, &fast, slo, min_requests)],
        ..base.clone()
    };
    // The ticket sits in the slow rule: the same rule_id lets Alertmanager
    // inhibit it while the slow page fires, and the slow page is where a
    // budget that keeps burning escalates to.
    let slow_rule = Rule {
        id: format!("{}-slow", base.id),
        name: format!("{}Slow", base.name),
        summary: format!(
            "{about} is burning steadily: {}× over {} and {} pages, {}× over {} and {} opens a ticket",
            slow.factor,
            format_duration(slow.long),
            format_duration(slow.short),
            ticket.factor,
            format_duration(ticket.long),
            format_duration(ticket.short),
        ),
        unit: Unit::Ratio,
        levels: vec![
            burn::level(Severity::Warning, &ticket, slo, min_requests),
            burn::level(Severity::Critical, &slow, slo, min_requests),
        ],
        ..base
    };
    Ok(vec![fast_rule, slow_rule])
}

pub(super) fn burn_window(
    key: &str,
    spec: Option<BurnSpec>,
    default: BurnWindow,
    slo: f64,
    warnings: &mut Vec<String>,
) -> Result<BurnWindow, String> {
    let window = match spec {
        None => default,
        Some(spec) => BurnWindow {
            long: spec.long.map_or(default.long, |d| d.0),
            short: spec.short.map_or(default.short, |d| d.0),
            factor: spec.factor.unwrap_or(default.factor),
            for_: spec.for_.map_or(default.for_, |d| d.0),
            clear_factor: spec.clear_factor.unwrap_or(default.clear_factor),
            clear_window: spec.clear_window.map_or(default.clear_window, |d| d.0),
            clear_for: spec.clear_for.map_or(default.clear_for, |d| d.0),
        },
    };
    if window.clear_window.is_zero() || window.clear_window > window.long {
        return Err(format!(
            "{key}: clear_window {} must be above 0s and no longer than the long window {}",
            format_duration(window.clear_window),
            format_duration(window.long)
        ));
    }
    if window.short.is_zero() || window.short >= window.long {
        return Err(format!(
            "{key}: the short window {} must be above 0s and shorter than the long window {}",
            format_duration(window.short),
            format_duration(window.long)
        ));
    }
    if !(window.factor.is_finite() && window.factor > 0.0) {
        return Err(format!("{key}: factor {} must be above 0", window.factor));
    }
    if !(window.clear_factor.is_finite() && window.clear_factor >= 0.0) {
        return Err(format!("{key}: clear_factor {} must be 0 or more", window.clear_factor));
    }
    if window.clear_factor > window.factor {
        return Err(format!(
            "{key}: clear_factor {} is not below the fire factor {}",
            window.clear_factor, window.factor
        ));
    }
    if window.clear_factor == window.factor {
        warnings.push(format!(
            "{key}: clear_factor equals the fire factor {}: without hysteresis the alert can flap",
            window.factor
        ));
    }
    let threshold = burn::ratio_threshold(window.factor, slo);
    if threshold >= 1.0 {
        warnings.push(format!(
            "{key}: burn factor {} × error budget {} = {threshold}: the error ratio cannot exceed 100 %, so it can never fire",
            window.factor,
            burn::error_budget(slo)
        ));
    }
    Ok(window)
}

/// `0.995` → `99.5 %`.
pub(super) fn percent(ratio: f64) -> String {
    format!("{} %", burn::tidy(ratio * 100.0))
}

/// Ids, owners and runbooks: lowercase kebab-case, so they are safe as file
/// names, label values and URL path segments.
pub(super) fn check_slug(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok { Ok(()) } else { Err(format!("`{value}` is not lowercase kebab-case (like `high-error-rate`)")) }
}

pub(super) fn is_label_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// `high-error-rate` → `HighErrorRate`.
pub(super) fn camel_case(id: &str) -> String {
    id.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}
