#!/usr/bin/env bash
# Did a change slow the hot paths? The service built from an earlier commit
# (A) against the working tree (B), as an alternating A/B on PostgreSQL +
# Redis: each side on a database and key prefix of its own (a newer
# migration would not let the older binary start on the other's), seeded and
# admitted as scripts/bench.sh does, its hot seats taken by a warm-up run.
# Then ROUNDS times, in ABBA order: start the side, the queue poll and the
# hot-seat attempts under wrk for DURATION s each, stop. Telemetry is off on
# both sides unless TELEMETRY=on (then both export to a collector that
# discards). Prints each path's median per side and the median of B/A per
# round pair (also written to .bench/<run>-ab/results.md).
#
#   scripts/bench-ab.sh f6cc7ca                 # 6 rounds of 8 s per path and side
#   ROUNDS=10 TELEMETRY=on scripts/bench-ab.sh HEAD~3
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

REV=${1:?usage: scripts/bench-ab.sh REV (the commit to compare the working tree with)}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-6}
USERS=${USERS:-20000}
TELEMETRY=${TELEMETRY:-off}
SEATS_PER_PERF=5000
RUN=.bench/$(date -u +%Y%m%dT%H%M%SZ)-ab
mkdir -p "$RUN"
PORT=${PORT:-18080}
OTLP_PORT=${OTLP_PORT:-14317}
BASE=http://127.0.0.1:$PORT
ID=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
BOOKING_PID=
ROTEL_PID=
WORKTREE=.bench/ab-worktree-$ID

cleanup() {
  if [ -n "$BOOKING_PID" ]; then kill "$BOOKING_PID" 2>/dev/null || true; fi
  if [ -n "$ROTEL_PID" ]; then kill "$ROTEL_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  for side in a b; do
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS booking_ab_${side}_$ID WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 --scan --pattern "{ab-$side-$ID}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  done
  git worktree remove --force "$WORKTREE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_postgres
ensure_redis
command -v wrk >/dev/null || apt_install wrk

log "building B (the working tree, release)"
cargo build --release -q -p booking --bins --examples
log "building A ($REV, release, in its own worktree and target directory)"
git worktree add -q --detach "$WORKTREE" "$REV"
(cd "$WORKTREE" && CARGO_TARGET_DIR="$PWD/../ab-target" cargo build --release -q -p booking --bin booking)
declare -A BIN=([a]=.bench/ab-target/release/booking [b]=target/release/booking)
DRIVER=target/release/examples/bench_driver

if [ "$TELEMETRY" = on ]; then
  start_blackhole_rotel "$RUN" "$OTLP_PORT"
  ROTEL_PID=$(cat "$RUN/rotel.pid")
fi

export BOOKING_LISTEN=127.0.0.1:$PORT RUST_LOG=warn ADMISSION_BATCH=1000000 ADMISSION_INTERVAL_SECS=1 \
  ADMISSION_MAX_ACTIVE=1000000 MAX_HOLDS_PER_USER=1000000 DATABASE_MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-16} \
  SIGNUP_RATE_PER_MINUTE=off ACTIVE_WINDOW_SECS=7200
start_side() { # start_side a|b
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/booking_ab_$1_$ID REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX=ab-$1-$ID
  if [ "$TELEMETRY" = on ]; then
    RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$((OTLP_PORT + 1)) "${BIN[$1]}" serve > "$RUN/booking-$1.log" 2>&1 &
  else
    OTEL_SDK_DISABLED=true "${BIN[$1]}" serve > "$RUN/booking-$1.log" 2>&1 &
  fi
  BOOKING_PID=$!
  wait_for "booking ($1)" 30 curl -sf "$BASE/readyz"
}
stop_side() { kill -TERM "$BOOKING_PID"; wait "$BOOKING_PID" 2>/dev/null || true; BOOKING_PID=; }
wrk_run() { # wrk_run NAME SCRIPT: one wrk run, its JSON line kept as $RUN/NAME.json
  wrk -t1 -c64 -d"${DURATION}s" -s "bench/wrk/$2.lua" "$BASE" > "$RUN/$1.txt" 2>&1
  grep '^WRK_JSON ' "$RUN/$1.txt" | sed 's/^WRK_JSON //' > "$RUN/$1.json"
}

export FIRST_SEAT=1 ALL_SEATS=$SEATS_PER_PERF HOT_SEATS=$((SEATS_PER_PERF / 5))
for side in a b; do
  log "side $side: seeding, admitting $USERS users, taking the hot seats"
  createdb -h 127.0.0.1 -U postgres "booking_ab_${side}_$ID"
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/booking_ab_${side}_$ID "${BIN[$side]}" seed --concerts 1 --performances 1 \
    --seats $SEATS_PER_PERF --users "$USERS" --tokens-out "$RUN/tokens-$side.csv" > "$RUN/seed-$side.json"
  start_side "$side"
  "$DRIVER" admit "$BASE" "$RUN/tokens-$side.csv" 1 "$RUN/pairs-$side.txt" > "$RUN/admit-$side.json"
  PAIRS=$RUN/pairs-$side.txt wrk_run "warmup-$side" hot-seat
  stop_side
done

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for side in $order; do
    start_side "$side"
    PAIRS=$RUN/pairs-$side.txt wrk_run "poll-$side-$round" queue-poll
    PAIRS=$RUN/pairs-$side.txt wrk_run "hot-$side-$round" hot-seat
    stop_side
  done
  log "round $round done"
done

python3 - "$RUN" "$ROUNDS" "$REV" "$TELEMETRY" "$DURATION" <<'PY' | tee "$RUN/results.md"
import json, statistics, sys
run, rounds, rev, telemetry, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def rps(name):
    return json.load(open(f"{run}/{name}.json"))["rps"]
print(f"A = {rev}, B = the working tree; PostgreSQL + Redis, telemetry {telemetry}, {rounds} ABBA rounds of {duration} s per path and side\n")
print("| path | A median req/s | B median req/s | median of B/A per round | B/A per round |")
print("|---|---|---|---|---|")
for path, label in (("poll", "queue status poll"), ("hot", "hot-seat attempts")):
    a = [rps(f"{path}-a-{r}") for r in range(1, rounds + 1)]
    b = [rps(f"{path}-b-{r}") for r in range(1, rounds + 1)]
    ratios = [y / x for x, y in zip(a, b)]
    print(f"| {label} | {statistics.median(a):,.0f} | {statistics.median(b):,.0f} | {statistics.median(ratios):.3f} | "
          + " ".join(f"{r:.2f}" for r in ratios) + " |")
PY
