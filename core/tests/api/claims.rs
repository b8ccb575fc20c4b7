//! What one claim costs the database, by what it reads (PostgreSQL only).

use booking::store::{HoldRequest, NewConcert, NewPerformance, NewSeat, Store};
use sqlx::Row;

/// Index and table tuples read from `reservations` so far, as the server's
/// statistics count them (this connection's pending counts flushed first).
async fn reservation_tuples_read(store: &Store) -> i64 {
    let pool = store.pool();
    sqlx::query("SELECT 1 FROM (SELECT pg_stat_force_next_flush()) f").execute(pool).await.unwrap();
    let row = sqlx::query(
        "SELECT (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = 'reservations')::BIGINT,
                (SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'reservations')::BIGINT",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    row.try_get::<i64, _>(0).unwrap() + row.try_get::<i64, _>(1).unwrap()
}

/// The hold limit counts the claimant's own live holds. Its query used to
/// fit the expiry index as well as the per-user one; a plan cached while
/// `reservations` was still empty could take the expiry index, and then
/// every claim read every live hold of the sale. One connection, so the
/// plans made on the first claims are the ones measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_only_the_claimants_holds_whatever_plan_was_cached_first() {
    let db = testkit::Database::create("booking_test").await;
    let store = Store::connect(&db.url, 1).await.unwrap();
    let seats = (0..3000).map(|n| NewSeat { seat_no: format!("A{n}"), grade: "R".into(), price: 100 }).collect();
    let concert =
        NewConcert { title: "plans".into(), performances: vec![NewPerformance { starts_at: 10_000_000, seats }] };
    let created = store.create_concert(&concert, 0).await.unwrap();
    let performance_id = created.performances[0].performance_id;
    let concert_id = created.concert_id;
    sqlx::query("INSERT INTO users (name, created_at) SELECT 'u' || g, 0 FROM generate_series(1, 3000) g")
        .execute(store.pool())
        .await
        .unwrap();
    let pool = store.pool();
    let column = |rows: Vec<sqlx::any::AnyRow>| rows.iter().map(|r| r.get::<i64, _>(0)).collect::<Vec<_>>();
    let seat_ids = column(
        sqlx::query("SELECT id FROM seats WHERE performance_id = $1 ORDER BY id")
            .bind(performance_id)
            .fetch_all(pool)
            .await
            .unwrap(),
    );
    let user_ids = column(sqlx::query("SELECT id FROM users ORDER BY id").fetch_all(pool).await.unwrap());
    let claim = |i: usize| HoldRequest {
        user_id: user_ids[i],
        concert_id,
        seat_id: seat_ids[i],
        now: 1_000,
        expires_at: 9_000_000,
        max_holds: 4,
    };

    // The first claims, on an empty table: the function plans its queries now.
    for i in 0..8 {
        store.hold_seat(&claim(i)).await.unwrap();
    }
    // The sale goes on: 2,000 more live holds, of other users.
    sqlx::query(
        "INSERT INTO reservations (id, user_id, seat_id, performance_id, price, status, expires_at, created_at)
         SELECT 'r' || u.id, u.id, s.id, $1, 100, 'HELD', 9000000, 0
           FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM users) u
           JOIN (SELECT id, row_number() OVER (ORDER BY id) n FROM seats WHERE performance_id = $1) s ON s.n = u.n
          WHERE u.n BETWEEN 1001 AND 3000",
    )
    .bind(performance_id)
    .execute(store.pool())
    .await
    .unwrap();

    let before = reservation_tuples_read(&store).await;
    store.hold_seat(&claim(8)).await.unwrap();
    let read = reservation_tuples_read(&store).await - before;
    assert!(read < 20, "one claim read {read} reservation tuples: the hold limit scanned other users' holds");
}
