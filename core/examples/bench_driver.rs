//! Drives the parts of the benchmark that wrk cannot: putting seeded users
//! in line and waiting for their admission, and the 1,000-users-on-100-seats
//! race, timed from the first request sent to the last answer.
//!
//! ```text
//! bench_driver admit BASE TOKENS_FILE CONCERT_ID OUT_FILE
//! bench_driver race  BASE PAIRS_FILE FIRST_SEAT_ID SEATS ATTEMPTS
//! ```

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, future::join_all, stream};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    match args.first().map(String::as_str) {
        Some("admit") if args.len() == 5 => admit(&client, &args[1], &args[2], args[3].parse()?, &args[4]).await,
        Some("race") if args.len() == 6 => {
            race(&client, &args[1], &args[2], args[3].parse()?, args[4].parse()?, args[5].parse()?).await
        }
        _ => bail!("usage: bench_driver admit BASE TOKENS CONCERT OUT | race BASE PAIRS FIRST_SEAT SEATS ATTEMPTS"),
    }
}

async fn admit(client: &reqwest::Client, base: &str, tokens: &str, concert: i64, out: &str) -> anyhow::Result<()> {
    let users: Vec<String> = std::fs::read_to_string(tokens)
        .context("reading tokens")?
        .lines()
        .filter_map(|l| l.split_once(',').map(|(_, t)| t.to_owned()))
        .collect();
    let started = Instant::now();
    let entered: Vec<anyhow::Result<(String, String)>> = stream::iter(users)
        .map(|token| async move {
            let r: Value = client
                .post(format!("{base}/v1/queue/tokens"))
                .bearer_auth(&token)
                .json(&json!({ "concert_id": concert }))
                .send()
                .await?
                .json()
                .await?;
            let q = r["queue_token"].as_str().context("no queue token")?.to_owned();
            Ok((token, q))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let pairs: Vec<(String, String)> = entered.into_iter().collect::<anyhow::Result<_>>()?;
    // Everyone is admitted at a coming tick; wait for the last in line.
    let last = &pairs.last().context("no users")?.1;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r: Value = client
            .get(format!("{base}/v1/queue/tokens/current"))
            .header("queue-token", last)
            .send()
            .await?
            .json()
            .await?;
        if r["status"] == "ACTIVE" {
            break;
        }
        if Instant::now() > deadline {
            bail!("users were not admitted within 120 s: {r}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lines: String = pairs.iter().map(|(t, q)| format!("{t} {q}\n")).collect();
    std::fs::write(out, lines)?;
    println!("{}", json!({ "admitted": pairs.len(), "seconds": started.elapsed().as_secs_f64() }));
    Ok(())
}

async fn race(
    client: &reqwest::Client,
    base: &str,
    pairs: &str,
    first_seat: i64,
    seats: i64,
    attempts: usize,
) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = std::fs::read_to_string(pairs)?
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .take(attempts)
        .collect();
    if pairs.len() < attempts {
        bail!("need {attempts} admitted users, have {}", pairs.len());
    }
    // Connections are opened before the clock starts, as a browser's would be.
    join_all((0..64).map(|_| client.get(format!("{base}/healthz")).send())).await;
    let started = Instant::now();
    let results = join_all(pairs.iter().enumerate().map(|(i, (token, queue))| async move {
        let seat = first_seat + (i as i64 % seats);
        let r = client
            .post(format!("{base}/v1/reservations"))
            .bearer_auth(token)
            .header("queue-token", queue)
            .json(&json!({ "seat_id": seat }))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await?;
        anyhow::Ok((status, body))
    }))
    .await;
    let elapsed = started.elapsed();
    let mut held = HashSet::new();
    let (mut wins, mut conflicts, mut other) = (0, 0, 0);
    for r in results {
        match r? {
            (201, body) => {
                wins += 1;
                held.insert(body["seat_id"].as_i64().unwrap_or_default());
            }
            (409, _) => conflicts += 1,
            _ => other += 1,
        }
    }
    println!(
        "{}",
        json!({
            "attempts": attempts, "seats": seats, "holds": wins, "distinct_seats_held": held.len(),
            "conflicts": conflicts, "other": other, "seconds": elapsed.as_secs_f64(),
        })
    );
    if wins != held.len() || wins as i64 > seats {
        bail!("a seat was held twice");
    }
    Ok(())
}
