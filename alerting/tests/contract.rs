//! The alerting API's contract, checked against the real `alerting serve` by
//! schemathesis with every check and the responder key: any 5xx, any status,
//! header or body `alerting/openapi.json` does not describe, a valid request
//! refused or an invalid one accepted fails the test with its report.
//!
//! An incident that fires (a gauge the test holds above its rule's line) and
//! a silence are the fixtures; their ids are handed to schemathesis as
//! dictionaries, so the incident and silence operations get past their 404s.

mod support {
    pub mod serve;
}

use std::{path::Path, process::Command, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};
use support::serve::{Gauge, Launch, RESPONDER_KEY, wait_until};

/// A fixed seed: the same requests on every run; a failure replays with the
/// command schemathesis prints.
const SEED: &str = "1";
/// Examples per operation and phase: enough to reach every documented
/// status, and the run stays around a minute on two cores.
const MAX_EXAMPLES: &str = "15";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_mismatch_between_the_alerting_contract_and_the_server() {
    let gauge = Gauge::start(20).await;
    let alerting = Launch::new(Some(&gauge)).env("ALERTING_API_KEY", RESPONDER_KEY).start().await;
    // The rule fires at once above 10: one incident.
    let mut incident = None;
    wait_until("the fixture incident", Duration::from_secs(30), async || {
        let (_, body) = alerting.call(Method::GET, "/v1/incidents?state=open", Some(RESPONDER_KEY), None).await;
        incident = body["incidents"][0]["id"].as_i64();
        incident.is_some()
    })
    .await;
    let incident = incident.unwrap();
    let silence =
        json!({ "matchers": { "rule_id": "queue-admission-stall" }, "duration": "1h", "comment": "contract fixture" });
    let (status, body) = alerting.call(Method::POST, "/v1/silences", Some(RESPONDER_KEY), Some(silence)).await;
    assert_eq!(status, 201, "{body}");
    let silence = body["silence"]["id"].as_i64().unwrap();

    let dir = &alerting.launch.dir;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The checked-in configuration (what a schema cannot say about silences),
    // plus this run's fixtures.
    let shipped = std::fs::read_to_string(repo.join("schemathesis.toml")).unwrap();
    std::fs::write(dir.path("schemathesis.toml"), format!("{shipped}\n{}", fixtures(incident, silence))).unwrap();
    let output = Command::new("st")
        .current_dir(&**dir)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(repo.join("openapi.json"))
        .args(["--url", &alerting.url, "--checks", "all", "--seed", SEED, "--max-examples", MAX_EXAMPLES, "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {RESPONDER_KEY}")])
        .output()
        .expect("schemathesis' `st` is installed (scripts/test.sh installs it: pip install schemathesis)");
    let errors: String =
        alerting.logs().lines().filter(|l| l.contains(r#""level":"ERROR""#)).map(|l| format!("{l}\n")).collect();
    assert!(
        output.status.success(),
        "schemathesis found the server and alerting/openapi.json disagreeing ({}):\n{}\n{}\nserver errors logged: {errors}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    // Still firing: nothing the run did resolved the incident behind its back.
    let (_, body) = alerting.call(Method::GET, &format!("/v1/incidents/{incident}"), Some(RESPONDER_KEY), None).await;
    assert_ne!(body["incident"]["state"], Value::from("resolved"), "{body}");
}

/// The fixtures' ids as dictionaries for the `{id}`s of their routes, and
/// the warnings that mean the run did not test what it should. Missing test
/// data is not among them: `resolve` can only ever answer the fixture 409
/// (its alert still fires) or 404, which schemathesis counts as missing data.
fn fixtures(incident: i64, silence: i64) -> String {
    format!(
        r#"
[dictionaries.incidents]
values = [{incident}]
[dictionaries.silences]
values = [{silence}]

[[operations]]
include-path-regex = "^/v1/incidents/"
parameters = {{ "path.id" = {{ dictionary = "incidents", probability = 0.75 }} }}

[[operations]]
include-path-regex = "^/v1/silences/"
parameters = {{ "path.id" = {{ dictionary = "silences", probability = 0.75 }} }}

[warnings]
fail-on = ["dictionary_mismatch", "unsupported_regex"]
"#
    )
}
