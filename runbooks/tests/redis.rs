//! redis-memory-high against a private redis-server filled past a small
//! maxmemory: the diagnosis reports the ratio and the policy, and the
//! mitigation sets the policy (and raises the limit).

mod support;

use support::{PrivateRedis, runbook};

const PREFIX: &str = "rbtest:";

async fn fill(redis: &PrivateRedis) {
    let mut conn = redis.conn().await;
    let value = "x".repeat(1000);
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SET").arg(format!("{PREFIX}{i}")).arg(&value).ignore();
    }
    pipe.cmd("SET").arg(format!("{PREFIX}big")).arg("y".repeat(200_000)).ignore();
    let () = pipe.query_async(&mut conn).await.expect("filled");
    // Below what is used now: Redis is "past" its limit.
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("2mb")
        .query_async(&mut conn)
        .await
        .expect("maxmemory set");
}

#[tokio::test]
async fn diagnosis_reports_ratio_and_policy_and_mitigation_sets_the_policy() {
    let redis = PrivateRedis::start().await;
    fill(&redis).await;
    assert_eq!(redis.config("maxmemory-policy").await, "noeviction");

    // A sample larger than the keyspace, so the big key is always in it.
    let args = [
        "run",
        "redis-memory-high",
        "--redis-url",
        &redis.url,
        "--set",
        &format!("prefix={PREFIX}"),
        "--set",
        "sample=10000",
        "--json",
    ];
    let diagnosis = runbook(&args, "").await;
    assert_eq!(diagnosis.code, 1, "problem found\n{}\n{}", diagnosis.stdout, diagnosis.stderr);
    let memory = diagnosis.step("memory");
    assert_eq!(memory["status"], "problem");
    assert_eq!(memory["output"]["maxmemory_bytes"], 2 * 1024 * 1024);
    assert!(memory["output"]["ratio"].as_f64().expect("a ratio") > 1.0, "{memory:#}");
    let policy = diagnosis.step("policy");
    assert_eq!(policy["status"], "problem");
    assert_eq!(policy["output"]["policy"], "noeviction");
    let keys = diagnosis.step("largest-keys");
    assert_eq!(keys["output"]["complete"], true, "{keys:#}");
    assert_eq!(keys["output"]["sampled"], 3001, "{keys:#}");
    assert_eq!(keys["output"]["keys"][0]["key"], format!("{PREFIX}big"), "{keys:#}");
    assert!(keys["output"]["keys"].as_array().unwrap().iter().all(|k| k["key"].as_str().unwrap().starts_with(PREFIX)));
    assert_eq!(diagnosis.status("set-policy"), "skipped: not_applied");
    assert_eq!(redis.config("maxmemory-policy").await, "noeviction", "diagnosis changes nothing");

    let mut apply = args.to_vec();
    apply.extend(["--set", "raise-maxmemory.bytes=64mb", "--apply", "--yes"]);
    let applied = runbook(&apply, "").await;
    assert_eq!(applied.code, 4, "mitigated\n{}\n{}", applied.stdout, applied.stderr);
    let set = applied.step("set-policy");
    assert_eq!(
        (set["status"].as_str(), set["output"]["before"].as_str(), set["output"]["after"].as_str()),
        (Some("applied"), Some("noeviction"), Some("volatile-lru"))
    );
    assert_eq!(redis.config("maxmemory-policy").await, "volatile-lru");
    assert_eq!(redis.config("maxmemory").await, (64 * 1024 * 1024).to_string());
    assert_eq!(applied.step("memory-after")["status"], "ok");
    assert_eq!(applied.step("policy-after")["status"], "ok");

    // Safe to re-run: healthy, nothing changes.
    let again = runbook(&apply, "").await;
    assert_eq!(again.code, 0, "healthy now\n{}\n{}", again.stdout, again.stderr);
    assert_eq!(redis.config("maxmemory-policy").await, "volatile-lru");
}

#[tokio::test]
async fn maxmemory_is_never_lowered_below_what_redis_uses() {
    let redis = PrivateRedis::start().await;
    fill(&redis).await;
    // Policy already right; only memory is the problem, and 2mb is not more.
    let mut conn = redis.conn().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-lru")
        .query_async(&mut conn)
        .await
        .unwrap();
    let applied = runbook(
        &["run", "redis-memory-high", "--redis-url", &redis.url, "--set", "bytes=3mb", "--apply", "--yes", "--json"],
        "",
    )
    .await;
    assert_eq!(applied.code, 3, "the refusal is a failed step\n{}\n{}", applied.stdout, applied.stderr);
    let raise = applied.step("raise-maxmemory");
    assert_eq!(raise["status"], "failed");
    assert!(raise["summary"].as_str().unwrap().contains("is not above used memory"), "{raise:#}");
    assert_eq!(redis.config("maxmemory").await, (2 * 1024 * 1024).to_string());
}
