//! Every alert has a runbook, every runbook is complete, and the binary's
//! embedded copies are the files in this directory.

mod support;

use std::{collections::BTreeSet, path::Path};

use runbook::{
    action::REGISTRY,
    book::{Phase, SECTIONS},
    catalog::{Catalog, EMBEDDED},
};
use serde_json::Value;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The runbook ids the shipped alert rules name, read as plain YAML.
fn rule_runbooks() -> Vec<(String, String)> {
    let path = manifest_dir().join("../alerting/config/rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: Value = serde_norway::from_str(&text).expect("rules.yaml is YAML");
    let rules = file["rules"].as_array().expect("rules.yaml has rules");
    assert!(!rules.is_empty());
    rules
        .iter()
        .map(|r| {
            (r["id"].as_str().expect("rule id").to_string(), r["runbook"].as_str().expect("rule runbook").to_string())
        })
        .collect()
}

#[test]
fn every_shipped_alert_rule_and_the_no_data_alert_have_a_runbook() {
    let catalog = Catalog::embedded();
    let ids: BTreeSet<&str> = catalog.ids().collect();
    let rules = rule_runbooks();
    for (rule, runbook) in &rules {
        assert_eq!(rule, runbook, "rules.yaml: each rule's runbook id is its own id");
        assert!(ids.contains(runbook.as_str()), "alert rule `{rule}` names runbook `{runbook}`, which does not exist");
    }
    // The synthetic no-data alert uses this one.
    assert!(ids.contains("telemetry-pipeline-down"));
    // The minimum list, by the ids the rules use.
    for required in [
        "high-error-rate",
        "high-p95-latency",
        "db-pool-saturation",
        "redis-memory-high",
        "queue-admission-stall",
        "hold-expiry-backlog",
        "payment-failures",
        "telemetry-pipeline-down",
    ] {
        assert!(ids.contains(required), "{required} is missing");
    }
    assert_eq!(rules.len(), 13, "a new alert rule needs a runbook here (and this count updated)");
}

#[test]
fn every_runbook_parses_with_six_sections_and_known_actions() {
    let known: BTreeSet<&str> = REGISTRY.iter().map(|s| s.name).collect();
    for parsed in Catalog::embedded().all() {
        let book = parsed.unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = book.sections.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, SECTIONS, "{}", book.id);
        for (name, body) in &book.sections {
            assert!(!body.trim().is_empty(), "{}: section {name} is empty", book.id);
        }
        assert!(book.phase(Phase::Diagnose).count() > 0, "{}: no diagnose step", book.id);
        for step in &book.steps {
            assert!(
                known.contains(step.action.name()),
                "{}: step {} names unknown action {}",
                book.id,
                step.id,
                step.action.name()
            );
        }
        // Every mitigation is reachable from the diagnosis.
        for step in book.phase(Phase::Mitigate) {
            assert!(
                !step.when.is_empty(),
                "{}: mitigation {} should say which diagnosis calls for it (`when`)",
                book.id,
                step.id
            );
        }
    }
}

#[test]
fn the_embedded_runbooks_are_exactly_the_files_in_this_directory() {
    let mut files: Vec<String> = std::fs::read_dir(manifest_dir())
        .expect("runbooks dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .map(|n| n.trim_end_matches(".md").to_string())
        .collect();
    files.sort();
    let embedded: Vec<String> = EMBEDDED.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(embedded, files, "catalog::EMBEDDED must list every runbooks/*.md, sorted");
}

#[test]
fn the_readme_documents_every_action() {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).expect("runbooks/README.md");
    for spec in REGISTRY {
        assert!(readme.contains(&format!("`{}`", spec.name)), "README.md does not document `{}`", spec.name);
    }
    for section in SECTIONS {
        assert!(readme.contains(section), "README.md does not name section {section}");
    }
}

#[tokio::test]
async fn the_binary_lists_and_shows_every_runbook_from_any_directory() {
    let listed = support::runbook(&["list", "--json"], "").await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let ids: Vec<String> =
        listed.json()["runbooks"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), EMBEDDED.len(), "{ids:?}");
    let shown = support::runbook(&["show", "db-pool-saturation"], "").await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("## Mitigate"), "{}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains("[mitigate step `terminate-long-queries`] postgres.terminate_long_queries min_seconds=30"),
        "{}",
        shown.stdout
    );
    let json = support::runbook(&["show", "redis-memory-high", "--json"], "").await.json();
    assert_eq!(json["steps"].as_array().unwrap().iter().filter(|s| s["phase"] == "mitigate").count(), 2);
}
