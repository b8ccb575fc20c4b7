//! The contract, checked against the real `booking` binary by schemathesis:
//! generated requests, valid and invalid, for every operation of
//! `core/openapi.json` but the operator switches. Any 5xx, any status, header
//! or body the document does not describe, a valid request refused or an
//! invalid one accepted fails the test with schemathesis' report.
//!
//! Its fixtures (a concert, a user with an active queue place and two held
//! reservations) are handed to schemathesis as dictionaries for the matching
//! parameters, so half of the generated ids are real and the reservation and
//! payment operations get past their 404s.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use testkit::TempDir;

use super::support::{Backend, Binary, Resources};

/// A fixed seed: the same requests on every run, and a failure replays with
/// the command schemathesis prints.
const SEED: &str = "1";
/// Examples per operation and phase: every documented path is reached, and
/// the run takes about half a minute on two cores.
const MAX_EXAMPLES: &str = "30";
/// The operator switches change what every other request gets (injected
/// faults, the entry rate limit, admission, the caches); `controls.rs` tests them.
const OPERATOR_SWITCHES: &str = "/v1/admin/(chaos|rate-limit|queue/admission|caches/flush)";
const ADMIN_KEY: &str = "dev-admin-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_mismatch_between_the_contract_and_the_server() {
    // Kept when the test fails: schemathesis keeps what it found (`.schemathesis/`) where it runs.
    let dir = TempDir::new("booking-contract");
    let resources = Resources::new(Backend::SqliteMemory).await;
    // Every generated sign-up comes from this one address.
    let env = [("OTEL_SDK_DISABLED", "true".into()), ("SIGNUP_RATE_PER_MINUTE", "off".into())];
    let log = dir.path("booking.log");
    let mut server = Binary::serve(&resources, &env, Stdio::from(std::fs::File::create(&log).unwrap()));
    let base = server.base();
    let fixtures = Fixtures::seed(&base).await;

    let hooks = dir.path("hooks.py");
    std::fs::write(&hooks, HOOKS).unwrap();
    std::fs::write(dir.path("schemathesis.toml"), config(&fixtures, &hooks)).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let output = Command::new("st")
        .current_dir(&*dir)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(&spec)
        .args(["--url", &base, "--checks", "all", "--seed", SEED, "--max-examples", MAX_EXAMPLES, "--no-color"])
        .args(["--exclude-path-regex", OPERATOR_SWITCHES])
        .args(["-H", &format!("Authorization: Bearer {}", fixtures.token)])
        .args(["-H", &format!("Queue-Token: {}", fixtures.queue_token)])
        .args(["-H", &format!("X-Admin-Key: {ADMIN_KEY}")])
        .output()
        .expect("schemathesis' `st` is installed (scripts/test.sh installs it: pip install schemathesis)");
    // SIGTERM: the log lines are flushed.
    server.terminate();
    // The causes of any 5xx: the responses only say INTERNAL.
    let errors: String = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .map(|l| format!("{l}\n"))
        .collect();
    let errors = if errors.is_empty() { "none\n".to_owned() } else { errors };
    assert!(
        output.status.success(),
        "schemathesis found the server and core/openapi.json disagreeing ({}):\n{}\n{}\nserver errors logged: {errors}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// What schemathesis is given to reach past authentication and 404s.
struct Fixtures {
    concert_id: i64,
    performance_id: i64,
    seat_ids: Vec<i64>,
    /// Both held by the user: one may be paid for and the other released.
    reservation_ids: Vec<String>,
    token: String,
    /// Active, for the concert.
    queue_token: String,
}

impl Fixtures {
    /// A concert with three seats, a user admitted to its queue who holds
    /// two of them, all over HTTP.
    async fn seed(base: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let call = |req: reqwest::RequestBuilder, expected: u16| async move {
            let response = req.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, expected, "{body}");
            body
        };
        let seats: Vec<Value> =
            (1..=3).map(|n| json!({ "seat_no": format!("A{n}"), "grade": "R", "price": 100_000 })).collect();
        let concert =
            json!({ "title": "Contract", "performances": [{ "starts_at": "2030-01-01T19:00:00Z", "seats": seats }] });
        let created =
            call(http.post(format!("{base}/v1/admin/concerts")).header("x-admin-key", ADMIN_KEY).json(&concert), 201)
                .await;
        let concert_id = created["concert_id"].as_i64().unwrap();
        let performance_id = created["performances"][0]["performance_id"].as_i64().unwrap();

        let user = call(http.post(format!("{base}/v1/users")).json(&json!({ "name": "contract" })), 201).await;
        let token = user["token"].as_str().unwrap().to_owned();
        let bearer = format!("Bearer {token}");
        let place = call(
            http.post(format!("{base}/v1/queue/tokens"))
                .header("authorization", &bearer)
                .json(&json!({ "concert_id": concert_id })),
            201,
        )
        .await;
        let queue_token = place["queue_token"].as_str().unwrap().to_owned();
        // Admission ticks every second (`Binary::serve`).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let current =
                call(http.get(format!("{base}/v1/queue/tokens/current")).header("queue-token", &queue_token), 200)
                    .await;
            if current["status"] == "ACTIVE" {
                break;
            }
            assert!(Instant::now() < deadline, "the queue place was not admitted: {current}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let authorized =
            |req: reqwest::RequestBuilder| req.header("authorization", &bearer).header("queue-token", &queue_token);
        let map = call(authorized(http.get(format!("{base}/v1/performances/{performance_id}/seats"))), 200).await;
        let seat_ids: Vec<i64> =
            map["seats"].as_array().unwrap().iter().map(|s| s["seat_id"].as_i64().unwrap()).collect();
        let mut reservation_ids = Vec::new();
        for seat_id in &seat_ids[..2] {
            let held = call(
                authorized(http.post(format!("{base}/v1/reservations")).json(&json!({ "seat_id": seat_id }))),
                201,
            )
            .await;
            reservation_ids.push(held["reservation_id"].as_str().unwrap().to_owned());
        }
        Self { concert_id, performance_id, seat_ids, reservation_ids, token, queue_token }
    }
}

/// The run's configuration: the fixtures as dictionaries (each drawn half of
/// the time), what a valid request may legitimately be refused with where
/// the answer depends on earlier requests, and the warnings that mean the run
/// did not test what it should.
fn config(f: &Fixtures, hooks: &Path) -> String {
    let list = |items: Vec<String>| items.join(", ");
    let seats = list(f.seat_ids.iter().map(i64::to_string).collect());
    let reservations = list(f.reservation_ids.iter().map(|r| format!("\"{r}\"")).collect());
    format!(
        r#"hooks = "{hooks}"

[dictionaries.concerts]
values = [{concert}]
[dictionaries.performances]
values = [{performance}]
[dictionaries.seats]
values = [{seats}]
[dictionaries.reservations]
values = [{reservations}]

[parameters]
"path.concert_id" = {{ dictionary = "concerts", probability = 0.5 }}
"body.concert_id" = {{ dictionary = "concerts", probability = 0.5 }}
"path.performance_id" = {{ dictionary = "performances", probability = 0.5 }}
"body.seat_id" = {{ dictionary = "seats", probability = 0.5 }}
"path.reservation_id" = {{ dictionary = "reservations", probability = 0.5 }}
"body.reservation_id" = {{ dictionary = "reservations", probability = 0.5 }}

# A schema cannot know which Idempotency-Keys were used before (422
# IDEMPOTENCY_KEY_REUSED), nor the balance (402 INSUFFICIENT_BALANCE).
[[operations]]
include-name = "POST /v1/users/me/balance/charges"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "422"]

[[operations]]
include-name = "POST /v1/payments"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "402", "403", "404", "409", "422"]

# The fixtures no longer get operations past 404, a fixture no longer fits
# its parameter, or a pattern of the document cannot be generated from.
[warnings]
fail-on = ["missing_test_data", "dictionary_mismatch", "unsupported_regex"]
"#,
        hooks = hooks.display(),
        concert = f.concert_id,
        performance = f.performance_id,
    )
}

/// What JSON Schema cannot say about a valid request, applied to the
/// requests schemathesis means to be valid.
const HOOKS: &str = r#"
import schemathesis
from schemathesis import GenerationMode

# What Rust's str::trim strips: the Unicode White_Space characters.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


@schemathesis.hook("map_case").apply_to(name="POST /v1/admin/concerts")
def number_seats_uniquely_in_valid_concerts(ctx, case):
    """A performance may not repeat a seat_no (after trimming)."""
    if case.meta is not None and case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if not isinstance(case.body, dict) or not isinstance(case.body.get("performances"), list):
        return case
    for performance in case.body["performances"]:
        seats = performance.get("seats") if isinstance(performance, dict) else None
        if not isinstance(seats, list):
            continue
        named = [s for s in seats if isinstance(s, dict) and isinstance(s.get("seat_no"), str)]
        taken = {s["seat_no"].strip(WHITE_SPACE) for s in named}
        fresh = (str(n) for n in range(10**6) if str(n) not in taken)
        seen = set()
        for seat in named:
            if seat["seat_no"].strip(WHITE_SPACE) in seen:
                seat["seat_no"] = next(fresh)
            seen.add(seat["seat_no"].strip(WHITE_SPACE))
    return case
"#;
