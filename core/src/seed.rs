//! `booking seed`: a catalogue and funded users, at any scale.
//!
//! The seed's full scale (500 concerts × 20 dates × 1,000 seats = 10 million
//! seats) loads on PostgreSQL through COPY on two connections, in under a
//! minute on the two-core benchmark machine (BENCHMARKS.md, "Issue 15: 10
//! million seats"); SQLite gets multi-row INSERTs. Concerts and dates are
//! written first, then the seats, one concert at a time: a seed that fails
//! part-way leaves every concert and date, and the seats of the concerts
//! whose seats were committed.

use std::{io::Write, path::PathBuf, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sqlx::{Connection, Row};

use crate::{
    domain::{Clock, tokens::UserClaims},
    settings::Settings,
    store::{Dialect, Store, StoreError},
};

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Concerts to create.
    #[arg(long, default_value_t = 2)]
    pub concerts: u32,
    /// Performances (dates) per concert.
    #[arg(long, default_value_t = 2)]
    pub performances: u32,
    /// Seats per performance. The first 20% are grade VIP (the hot seats).
    #[arg(long, default_value_t = 100)]
    pub seats: u32,
    /// Users to create, each with `--balance` won charged.
    #[arg(long, default_value_t = 10)]
    pub users: u32,
    /// Starting balance of each seeded user, in won.
    #[arg(long, default_value_t = 1_000_000)]
    pub balance: i64,
    /// Where to write `user_id,token` lines for load tests.
    #[arg(long)]
    pub tokens_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct SeedSummary {
    pub first_concert_id: i64,
    pub concerts: u32,
    pub performances: u64,
    pub seats: u64,
    pub users: u32,
    pub tokens_out: Option<PathBuf>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("writing tokens: {0}")]
    Io(#[from] std::io::Error),
}

/// Price and grade of seat `n` (1-based) of `total`.
pub fn seat_class(n: u32, total: u32) -> (&'static str, i64) {
    let share = n as f64 / total.max(1) as f64;
    if share <= 0.2 {
        ("VIP", 150_000)
    } else if share <= 0.5 {
        ("R", 120_000)
    } else {
        ("S", 90_000)
    }
}

pub async fn run(settings: &Settings, args: &SeedArgs) -> Result<SeedSummary, SeedError> {
    let started = std::time::Instant::now();
    let store = Store::connect(settings.database_url.expose(), 4).await?;
    let now = Clock::default().now_ms();
    let catalogue = seed_dates(&store, args, now).await?;
    let first_concert_id = catalogue.first().map_or(0, |(concert_id, _)| *concert_id);
    match store.dialect() {
        Dialect::Postgres => {
            // Statistics of the whole date table before the first seat is
            // written: each seat's foreign-key check runs a plan the COPY
            // connection made at its first row and keeps until the table's
            // statistics change. Made while performances held one page, it
            // was a sequential scan, and every seat read every date until
            // autovacuum happened to analyze the table: 1.26 million seats
            // read 932 million date rows, and the 10-million-seat seed took
            // 86 to 152 s depending on when that was.
            sqlx::query("ANALYZE concerts, performances").execute(store.pool()).await?;
            copy_seats(settings.database_url.expose(), &catalogue, args.seats).await?;
        }
        Dialect::Sqlite => insert_seats(&store, &catalogue, args.seats).await?,
    }
    let tokens = seed_users(&store, settings, args, now).await?;
    if store.dialect() == Dialect::Postgres {
        // The service's first plans after a seed are made on statistics of
        // what the seed wrote, not on whatever autovacuum has got to.
        let bar = spinner("analyzing seats, users, ledger");
        sqlx::query("ANALYZE seats, users, ledger").execute(store.pool()).await?;
        bar.finish_and_clear();
    }
    if let Some(path) = &args.tokens_out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (id, token) in &tokens {
            writeln!(f, "{id},{token}")?;
        }
        f.flush()?;
    }
    Ok(SeedSummary {
        first_concert_id,
        concerts: args.concerts,
        performances: args.concerts as u64 * args.performances as u64,
        seats: args.concerts as u64 * args.performances as u64 * args.seats as u64,
        users: args.users,
        tokens_out: args.tokens_out.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every concert with its performances (one transaction per concert): the
/// concert ids, each with its performance ids.
async fn seed_dates(store: &Store, args: &SeedArgs, now: i64) -> Result<Vec<(i64, Vec<i64>)>, SeedError> {
    let bar = progress(args.concerts as u64, "concerts");
    let mut catalogue = Vec::with_capacity(args.concerts as usize);
    for c in 0..args.concerts {
        let mut tx = store.pool().begin().await?;
        let concert_id: i64 = sqlx::query("INSERT INTO concerts (title, created_at) VALUES ($1, $2) RETURNING id")
            .bind(format!("Concert {}", c + 1))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let mut performance_ids = Vec::with_capacity(args.performances as usize);
        for d in 0..args.performances {
            // Evenings at 19:00 UTC on the following days.
            let day = 86_400_000;
            let starts_at = (now / day + 1 + d as i64) * day + 19 * 3_600_000;
            let id: i64 = sqlx::query("INSERT INTO performances (concert_id, starts_at) VALUES ($1, $2) RETURNING id")
                .bind(concert_id)
                .bind(starts_at)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            performance_ids.push(id);
        }
        tx.commit().await?;
        catalogue.push((concert_id, performance_ids));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(catalogue)
}

/// COPY streams side by side. The server does nearly all the work of a
/// seed (each seat row's foreign-key check and two index entries, about
/// 9 µs of one core a seat); the client spends about 2 s of CPU on 10
/// million.
const COPY_STREAMS: usize = 2;

/// PostgreSQL: one COPY per concert, the concerts dealt out to
/// [`COPY_STREAMS`] connections; the bar counts seats committed.
async fn copy_seats(url: &str, catalogue: &[(i64, Vec<i64>)], seats: u32) -> Result<(), SeedError> {
    let total: u64 = catalogue.iter().map(|(_, dates)| dates.len() as u64 * seats as u64).sum();
    let bar = progress(total, "seats");
    let streams = (0..COPY_STREAMS).map(|stream| {
        let bar = bar.clone();
        async move {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let mut buf = String::with_capacity(seats as usize * 24);
            for (_, performance_ids) in catalogue.iter().skip(stream).step_by(COPY_STREAMS) {
                let mut copy =
                    conn.copy_in_raw("COPY seats (performance_id, seat_no, grade, price) FROM STDIN").await?;
                for pid in performance_ids {
                    buf.clear();
                    for n in 1..=seats {
                        let (grade, price) = seat_class(n, seats);
                        buf.push_str(&format!("{pid}\t{n}\t{grade}\t{price}\n"));
                    }
                    copy.send(buf.as_bytes()).await?;
                }
                copy.finish().await?;
                bar.inc(performance_ids.len() as u64 * seats as u64);
            }
            conn.close().await?;
            Ok::<(), SeedError>(())
        }
    });
    futures::future::try_join_all(streams).await?;
    bar.finish_and_clear();
    Ok(())
}

/// SQLite: multi-row INSERTs, one transaction per concert.
async fn insert_seats(store: &Store, catalogue: &[(i64, Vec<i64>)], seats: u32) -> Result<(), SeedError> {
    let total: u64 = catalogue.iter().map(|(_, dates)| dates.len() as u64 * seats as u64).sum();
    let bar = progress(total, "seats");
    let numbers: Vec<u32> = (1..=seats).collect();
    for (_, performance_ids) in catalogue {
        let mut tx = store.pool().begin().await?;
        for pid in performance_ids {
            for chunk in numbers.chunks(500) {
                let sql = crate::store::seat_insert_sql(chunk.len());
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for &n in chunk {
                    let (grade, price) = seat_class(n, seats);
                    q = q.bind(*pid).bind(n.to_string()).bind(grade).bind(price);
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        bar.inc(performance_ids.len() as u64 * seats as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Users with a charged balance (and its ledger row, so money adds up).
async fn seed_users(
    store: &Store,
    settings: &Settings,
    args: &SeedArgs,
    now: i64,
) -> Result<Vec<(i64, String)>, SeedError> {
    let keys = settings.token_key();
    let expires_at = now + settings.user_token_ttl.as_millis() as i64;
    let bar = progress(args.users as u64, "users");
    let mut tokens = Vec::with_capacity(args.users as usize);
    let mut tx = store.pool().begin().await?;
    for i in 0..args.users {
        let id: i64 = sqlx::query("INSERT INTO users (name, balance, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(format!("fan-{}", i + 1))
            .bind(args.balance)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if args.balance > 0 {
            sqlx::query("INSERT INTO ledger (id, user_id, kind, amount, reference, created_at) VALUES ($1, $2, 'CHARGE', $3, 'seed', $4)")
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(id)
                .bind(args.balance)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tokens.push((id, keys.issue_user(UserClaims { user_id: id, expires_at })));
        bar.inc(1);
    }
    tx.commit().await?;
    bar.finish_and_clear();
    Ok(tokens)
}

/// A spinner for a step whose progress PostgreSQL does not report.
fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} ({{elapsed}})"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
