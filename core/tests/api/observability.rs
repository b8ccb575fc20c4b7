//! The observability configuration, checked against real parts: a real
//! Prometheus scrapes a running booking instance and every dashboard query
//! must return data; the compose file and the collector config must hold
//! together.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::support::{Backend, Binary, Resources, free_port};

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every PromQL expression of the dashboards (exporter dashboards aside:
/// they read exporters that only run in compose; the alerting dashboard is
/// checked by the alerting end-to-end test, where Prometheus scrapes it).
pub fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(repo("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if dashboard["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "exporters" || t == "alerting")) {
            continue;
        }
        collect_exprs(&dashboard, &path.display().to_string(), &mut queries);
    }
    queries
}

/// Sends a request and reads its JSON answer.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

fn collect_exprs(v: &Value, file: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let is_prometheus =
                map.get("datasource").is_none_or(|d| d["uid"] == "prometheus" || d["type"] == "prometheus");
            if let Some(Value::String(expr)) = map.get("expr")
                && is_prometheus
                && !expr.trim_start().starts_with('{')
            {
                out.push((file.to_owned(), expr.clone()));
            }
            map.values().for_each(|v| collect_exprs(v, file, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, file, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_the_service_answers_every_dashboard_query_and_keeps_exemplars() {
    let resources = Resources::new(Backend::PostgresRedis).await;
    let dir = std::env::temp_dir().join(format!("booking-prom-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let booking = Binary::serve(&resources, &[("SWEEP_INTERVAL_SECS", "1".into())], Stdio::null());
    let port = booking.port;
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: booking\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        ),
    )
    .unwrap();
    let _prometheus = testkit::Process(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs it)"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let prom = format!("http://127.0.0.1:{prom_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err()
        || http.get(format!("{prom}/-/ready")).send().await.is_err()
    {
        assert!(Instant::now() < deadline, "booking or prometheus did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Traffic that moves every booking metric: a hold, a conflict, a fast
    // rejection, a charge and a payment.
    let user = |name: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let u = json_of(http.post(format!("{base}/v1/users")).json(&json!({ "name": name }))).await;
            u["token"].as_str().unwrap().to_owned()
        }
    };
    let concert = json_of(http.post(format!("{base}/v1/admin/concerts")).header("x-admin-key", "dev-admin-key").json(
        &json!({
            "title": "P", "performances": [{ "starts_at": "2031-01-01T19:00:00Z",
            "seats": [{ "seat_no": "1", "grade": "R", "price": 5 }, { "seat_no": "2", "grade": "R", "price": 5 }] }] }),
    ))
    .await;
    let performance = concert["performances"][0]["performance_id"].as_i64().unwrap();
    let mut fans = Vec::new();
    for name in ["a", "b"] {
        let token = user(name).await;
        let place = json_of(
            http.post(format!("{base}/v1/queue/tokens"))
                .bearer_auth(&token)
                .json(&json!({ "concert_id": concert["concert_id"] })),
        )
        .await;
        fans.push((token, place["queue_token"].as_str().unwrap().to_owned()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = json_of(http.get(format!("{base}/v1/queue/tokens/current")).header("queue-token", &fans[1].1)).await;
        if s["status"] == "ACTIVE" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seats = json_of(
        http.get(format!("{base}/v1/performances/{performance}/seats"))
            .bearer_auth(&fans[0].0)
            .header("queue-token", &fans[0].1),
    )
    .await;
    let seat = seats["seats"][0]["seat_id"].as_i64().unwrap();
    let hold = |i: usize| {
        http.post(format!("{base}/v1/reservations"))
            .bearer_auth(&fans[i].0)
            .header("queue-token", &fans[i].1)
            .json(&json!({ "seat_id": seat }))
    };
    let held: Value = json_of(hold(0)).await;
    assert_eq!(hold(1).send().await.unwrap().status(), 409);
    http.post(format!("{base}/v1/users/me/balance/charges"))
        .bearer_auth(&fans[0].0)
        .header("idempotency-key", "c")
        .json(&json!({ "amount": 5 }))
        .send()
        .await
        .unwrap();
    let paid = http
        .post(format!("{base}/v1/payments"))
        .bearer_auth(&fans[0].0)
        .header("queue-token", &fans[0].1)
        .header("idempotency-key", "p")
        .json(&json!({ "reservation_id": held["reservation_id"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 201);

    // Wait until Prometheus holds a few scrapes of the traffic above, then
    // keep requests flowing so rates are non-zero.
    let query = |expr: String| {
        let http = http.clone();
        let prom = prom.clone();
        async move { json_of(http.get(format!("{prom}/api/v1/query")).query(&[("query", expr)])).await }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..20 {
            http.get(format!("{base}/v1/queue/tokens/current")).header("queue-token", &fans[1].1).send().await.unwrap();
        }
        let r = query("count_over_time(booking_payments_total{job=\"booking\"}[1m]) >= 3 and on() count_over_time(redis_up[1m]) >= 1".into()).await;
        if r["data"]["result"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus did not scrape the service: {r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let queries = dashboard_queries();
    assert!(queries.len() > 30, "dashboards hold their queries ({})", queries.len());
    let mut failures = Vec::new();
    for (file, expr) in &queries {
        let r = query(expr.replace("$__rate_interval", "30s").replace("$__interval", "30s")).await;
        let empty = r["data"]["result"].as_array().is_none_or(|a| a.is_empty());
        if r["status"] != "success" || empty {
            failures.push(format!("{file}: {expr} -> {r}"));
        }
    }
    assert!(failures.is_empty(), "dashboard queries without data:\n{}", failures.join("\n"));

    // The latency histogram links to traces.
    let r = json_of(http.get(format!("{prom}/api/v1/query_exemplars")).query(&[
        ("query", "http_server_request_duration_seconds_bucket"),
        ("start", "0"),
        ("end", "9999999999"),
    ]))
    .await;
    let exemplars = r["data"].to_string();
    assert!(exemplars.contains("trace_id"), "exemplars with trace ids: {r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_compose_file_and_the_collector_config_are_valid() {
    let compose = |secrets: &[(&str, &str)]| {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["-f", repo("compose/docker-compose.yml").to_str().unwrap(), "config", "-q"]);
        for name in ["ADMIN_KEY", "TOKEN_SECRET", "ALERTING_API_KEY"] {
            cmd.env_remove(name);
        }
        cmd.envs(secrets.iter().copied()).output().expect("docker-compose is installed (scripts/test.sh installs it)")
    };
    // Made up here: no secret that passes the guards is written in the repository.
    let key = &format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let out = compose(&[("ADMIN_KEY", key), ("TOKEN_SECRET", key), ("ALERTING_API_KEY", key)]);
    assert!(
        out.status.success(),
        "docker-compose config rejects compose/docker-compose.yml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without its secrets the stack does not start on placeholders.
    let out = compose(&[("TOKEN_SECRET", key), ("ALERTING_API_KEY", key)]);
    assert!(!out.status.success(), "the compose file must require ADMIN_KEY");
    assert!(String::from_utf8_lossy(&out.stderr).contains("set ADMIN_KEY"), "{}", String::from_utf8_lossy(&out.stderr));

    let config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo("otel/collector.yaml")).unwrap())
            .expect("collector.yaml parses");
    let defined = |section: &str| -> Vec<String> {
        config[section]
            .as_mapping()
            .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (receivers, processors, exporters) = (defined("receivers"), defined("processors"), defined("exporters"));
    assert!(receivers.iter().any(|r| r == "otlp"));
    let otlp = &config["receivers"]["otlp"]["protocols"];
    assert!(otlp["grpc"].is_mapping() && otlp["http"].is_mapping(), "OTLP over gRPC and HTTP");
    for p in ["memory_limiter", "batch", "resource"] {
        assert!(processors.iter().any(|x| x == p), "processor {p}");
    }
    let pipelines = config["service"]["pipelines"].as_mapping().expect("pipelines");
    for signal in ["traces", "logs", "metrics"] {
        assert!(pipelines.keys().any(|k| k.as_str() == Some(signal)), "a {signal} pipeline");
    }
    for (name, pipeline) in pipelines {
        let list = |key: &str| -> Vec<String> {
            pipeline[key]
                .as_sequence()
                .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        for r in list("receivers") {
            assert!(receivers.contains(&r), "{name:?}: receiver {r} is not defined");
        }
        for e in list("exporters") {
            assert!(exporters.contains(&e), "{name:?}: exporter {e} is not defined");
        }
        let procs = list("processors");
        assert_eq!(procs.first().map(String::as_str), Some("memory_limiter"), "{name:?}: memory_limiter comes first");
        for p in procs {
            assert!(processors.contains(&p), "{name:?}: processor {p} is not defined");
        }
    }
}
