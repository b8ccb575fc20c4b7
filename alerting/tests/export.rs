//! The exported Prometheus rules and Alertmanager config, checked by the real
//! tools: `promtool check rules`, `promtool test rules` with generated
//! series, and `amtool check-config`. A missing tool fails the test; a skip
//! would let a broken export ship.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use alerting::{
    export::{AlertmanagerOptions, alertmanager_config, prometheus_rules},
    rules::file::shipped,
};
use serde_json::{Value, json};

/// A fresh directory per test, so tests run in parallel; kept when a test
/// fails.
use testkit::TempDir as Scratch;

fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain([Path::new("/usr/bin").join(name)])
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed; install it with `apt-get install -y --no-install-recommends {package}`")
    })
}

fn run(program: &Path, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program).args(args).current_dir(dir).output().expect("the tool starts");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} {} failed:\n{text}", program.display(), args.join(" "));
    text
}

fn write_rules(dir: &Path) {
    std::fs::write(dir.join("rules.yml"), prometheus_rules(&shipped())).expect("write rules.yml");
}

#[test]
fn promtool_accepts_the_exported_rules() {
    let dir = Scratch::new("check-rules");
    write_rules(&dir);
    let out = run(&tool("promtool", "prometheus"), &["check", "rules", "rules.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `http_server_requests_total` for one route and status, growing by `step`
/// requests per 15 s sample for 50 minutes.
fn requests(route: &str, status: &str, step: f64) -> Value {
    json!({
        "series": format!(
            "http_server_requests_total{{job=\"booking\",instance=\"booking:8080\",method=\"GET\",route=\"{route}\",status=\"{status}\"}}"
        ),
        "values": format!("0+{step}x200"),
    })
}

/// The labels and annotations Prometheus gives the `severity` alert of
/// `name`, read from the export with `$value` rendered as `value`.
fn expected_alert(name: &str, severity: &str, value: &str) -> Value {
    let file: Value = serde_norway::from_str(&prometheus_rules(&shipped())).expect("the export parses");
    let rule = file["groups"][0]["rules"]
        .as_array()
        .expect("a rule list")
        .iter()
        .find(|r| r["alert"] == name && r["labels"]["severity"] == severity)
        .unwrap_or_else(|| panic!("{name} has no {severity} level"))
        .clone();
    let mut annotations = rule["annotations"].clone();
    for text in annotations.as_object_mut().expect("annotations").values_mut() {
        let rendered = text
            .as_str()
            .expect("a string")
            .replace("{{ $value | humanizePercentage }}", value)
            .replace("{{ $value | humanize }}", value);
        assert!(!rendered.contains("{{"), "template left in {rendered}");
        *text = Value::String(rendered);
    }
    json!({ "exp_labels": rule["labels"], "exp_annotations": annotations })
}

#[test]
fn promtool_fires_high_error_rate_after_its_for_and_not_below_the_threshold() {
    let dir = Scratch::new("test-rules");
    write_rules(&dir);
    let critical = expected_alert("HighErrorRate", "critical", "2%");
    let scrape = requests("/metrics", "200", 1.0);
    let tests = json!({
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                // 2 % of user requests fail: above both thresholds (0.5 %, 1 %).
                "interval": "15s",
                "input_series": [
                    scrape,
                    requests("/v1/events/{id}/holds", "200", 98.0),
                    requests("/v1/events/{id}/holds", "503", 2.0),
                ],
                "alert_rule_test": [
                    // Pending, not firing: critical waits 2m, warning 5m.
                    { "eval_time": "1m", "alertname": "HighErrorRate", "exp_alerts": [] },
                    { "eval_time": "3m", "alertname": "HighErrorRate", "exp_alerts": [critical] },
                    // The critical mutes the same rule's warning (an inhibition).
                    { "eval_time": "10m", "alertname": "HighErrorRate", "exp_alerts": [critical] },
                ],
            },
            {
                // 0.3 %: below the warning threshold; and the scrapes of
                // /metrics (always 200) do not count as traffic.
                "interval": "15s",
                "input_series": [
                    scrape,
                    requests("/v1/events/{id}/holds", "200", 997.0),
                    requests("/v1/events/{id}/holds", "500", 3.0),
                ],
                "alert_rule_test": [
                    { "eval_time": "20m", "alertname": "HighErrorRate", "exp_alerts": [] },
                    { "eval_time": "20m", "alertname": "HighErrorRateNoData", "exp_alerts": [] },
                ],
            },
            {
                // Half the requests fail, but there are only 48 user requests
                // an hour: below min_requests (50 in 5m, 100 in 1h), neither
                // the error-rate rule nor the fast burn may page.
                "interval": "15s",
                "input_series": [
                    scrape,
                    requests("/v1/events/{id}/holds", "200", 0.1),
                    requests("/v1/events/{id}/holds", "500", 0.1),
                ],
                "alert_rule_test": [
                    { "eval_time": "45m", "alertname": "HighErrorRate", "exp_alerts": [] },
                    { "eval_time": "45m", "alertname": "ErrorBudgetBurnFast", "exp_alerts": [] },
                ],
            },
        ],
    });
    std::fs::write(dir.join("tests.yml"), serde_norway::to_string(&tests).expect("serialize the tests"))
        .expect("write tests.yml");
    let out = run(&tool("promtool", "prometheus"), &["test", "rules", "tests.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_pages_an_outage_once_a_low_traffic_burn_and_a_stalled_queue() {
    let dir = Scratch::new("test-burn");
    write_rules(&dir);
    let gauge = |name: &str, values: &str| json!({ "series": format!("{name}{{job=\"booking\",instance=\"booking:8080\"}}"), "values": values });
    let tests = json!({
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                // 10 % of user requests fail: above 14.4 × (1 − 0.995) = 7.2 %
                // over both 1h and 5m, with far more than 100 requests.
                "interval": "15s",
                "input_series": [
                    requests("/metrics", "200", 1.0),
                    requests("/v1/payments", "200", 90.0),
                    requests("/v1/payments", "500", 10.0),
                ],
                // HighErrorRate pages it; the burn rate rides along (inhibited).
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "HighErrorRate",
                        "exp_alerts": [expected_alert("HighErrorRate", "critical", "10%")],
                    },
                    { "eval_time": "30m", "alertname": "ErrorBudgetBurnFast", "exp_alerts": [] },
                ],
            },
            {
                // The same 10 % at 2.5 requests a minute: under the error
                // rate's guard (50 in 5m), over the burn rate's (100 in 1h),
                // so nothing inhibits the fast burn and it pages.
                "interval": "15s",
                "input_series": [
                    requests("/metrics", "200", 1.0),
                    requests("/v1/payments", "200", 0.5625),
                    requests("/v1/payments", "500", 0.0625),
                ],
                "alert_rule_test": [
                    { "eval_time": "45m", "alertname": "HighErrorRate", "exp_alerts": [] },
                    {
                        "eval_time": "45m",
                        "alertname": "ErrorBudgetBurnFast",
                        "exp_alerts": [expected_alert("ErrorBudgetBurnFast", "critical", "10%")],
                    },
                ],
            },
            {
                // Five people wait; admissions stop after 5 minutes.
                "interval": "15s",
                "input_series": [
                    gauge("booking_queue_waiting", "5x80"),
                    gauge("booking_queue_admitted_total", "0+10x20 200x60"),
                ],
                "alert_rule_test": [
                    { "eval_time": "5m", "alertname": "QueueAdmissionStall", "exp_alerts": [] },
                    {
                        "eval_time": "12m",
                        "alertname": "QueueAdmissionStall",
                        "exp_alerts": [expected_alert("QueueAdmissionStall", "critical", "1")],
                    },
                ],
            },
        ],
    });
    std::fs::write(dir.join("tests.yml"), serde_norway::to_string(&tests).expect("serialize the tests"))
        .expect("write tests.yml");
    let out = run(&tool("promtool", "prometheus"), &["test", "rules", "tests.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn amtool_accepts_the_alertmanager_config() {
    let dir = Scratch::new("amtool");
    let config = alertmanager_config(&shipped(), &AlertmanagerOptions::default());
    std::fs::write(dir.join("alertmanager.yml"), &config).expect("write alertmanager.yml");
    let out = run(&tool("amtool", "prometheus-alertmanager"), &["check-config", "alertmanager.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    for role in ["backend", "dba", "infra", "incident-lead", "page"] {
        assert!(config.contains(&format!("name: {role}")), "no receiver {role}:\n{config}");
    }
}

#[test]
fn the_compose_stacks_rule_file_is_the_current_export() {
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/rules/alerts.rules.yml"))
            .unwrap();
    // As compose/rules/README.md exports it: the links of the compose stack.
    let mut set = alerting::rules::shipped();
    set.runbook_base_url = "/usr/share/booking/runbooks".into();
    set.dashboard_base_url = Some("http://127.0.0.1:3000".into());
    assert_eq!(
        committed,
        alerting::export::prometheus_rules(&set),
        "compose/rules/alerts.rules.yml drifted from the shipped rules; regenerate it (see compose/rules/README.md)"
    );
}
