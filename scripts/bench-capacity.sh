#!/usr/bin/env bash
# CPU per request, by request type, of one booking instance and of the
# PostgreSQL and Redis behind it: the measured inputs of docs/capacity.md.
# Builds in release, starts one instance on the local PostgreSQL and Redis
# (a database and key prefix of its own, telemetry on as in production),
# seeds, lets USERS users in, then for each request type runs wrk for
# DURATION seconds and divides each process's CPU seconds (utime + stime
# from /proc, scripts/lib/proc_cpu.py) by the requests served.
#
#   scripts/bench-capacity.sh                 # 10 s per request type
#   DURATION=20 USERS=5000 scripts/bench-capacity.sh
#   CAPACITY_REDIS_URL=redis+cluster://127.0.0.1:7101,... scripts/bench-capacity.sh   # on a Redis Cluster
#                                   # (scripts/cluster.sh up redis); its CPU is then not in the table
#
# On two shared cores the load generator (wrk) takes CPU too; it is listed,
# and the per-request figures of the service are its own process's CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

DURATION=${DURATION:-10}
USERS=${USERS:-5000}
SEATS=5000
RUN=.bench/$(date -u +%Y%m%dT%H%M%SZ)-capacity
mkdir -p "$RUN"
PORT=${PORT:-18180}
BASE=http://127.0.0.1:$PORT
ID=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
DB=booking_capacity_$ID
PREFIX=capacity-$ID
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "{$PREFIX*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_postgres
ensure_redis
command -v wrk >/dev/null || apt_install wrk
log "building (release)"
cargo build --release -q -p booking --bins --examples
BIN=target/release

createdb -h 127.0.0.1 -U postgres "$DB"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB REDIS_URL=${CAPACITY_REDIS_URL:-redis://127.0.0.1:6379} REDIS_KEY_PREFIX=$PREFIX \
  BOOKING_LISTEN=127.0.0.1:$PORT ADMISSION_BATCH=1000000 ADMISSION_INTERVAL_SECS=1 ADMISSION_MAX_ACTIVE=1000000 \
  MAX_HOLDS_PER_USER=1000000 SIGNUP_RATE_PER_MINUTE=off RUST_LOG=info
# Performance 1: hot seats (taken by the hot-seat phase's first claims); 2-5: free-seat claims.
"$BIN/booking" seed --concerts 1 --performances 5 --seats $SEATS --users "$USERS" --tokens-out "$RUN/tokens.csv" > "$RUN/seed.json"
OTLP_PORT=${OTLP_PORT:-14417}
start_blackhole_rotel "$RUN" "$OTLP_PORT"
PIDS+=("$(cat "$RUN/rotel.pid")")
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$((OTLP_PORT + 1)) "$BIN/booking" serve > "$RUN/booking.log" 2>&1 &
BOOKING_PID=$!; PIDS+=($BOOKING_PID)
wait_for "booking service" 30 curl -sf "$BASE/readyz"

redis_pid=$(pgrep -f 'redis-server 127.0.0.1:6379' | head -n1)
pg_pidfile=$(ls /var/lib/postgresql/*/main/postmaster.pid 2>/dev/null | head -n1)
[ -n "$redis_pid" ] && [ -n "$pg_pidfile" ] || { log "cannot find the local Redis or PostgreSQL process"; exit 1; }

# measure NAME WRK-ARGS...: wrk while sampling CPU; $RUN/NAME.json and $RUN/NAME.cpu.jsonl.
measure() {
  local name=$1 sampler; shift
  python3 scripts/lib/proc_cpu.py "$RUN/$name.cpu.jsonl" 1 booking="pid:$BOOKING_PID" redis="pid:$redis_pid" \
    postgres="tree:$pg_pidfile" rotel="pidfile:$RUN/rotel.pid" & sampler=$!
  sleep 1.2
  wrk "$@" > "$RUN/$name.txt" 2>&1
  kill -TERM "$sampler"; wait "$sampler" 2>/dev/null || true
  grep '^WRK_JSON ' "$RUN/$name.txt" | sed 's/^WRK_JSON //' > "$RUN/$name.json"
  log "$name: $(cat "$RUN/$name.json")"
}

log "entering and admitting $USERS users (enter + polls until admitted)"
python3 scripts/lib/proc_cpu.py "$RUN/admit.cpu.jsonl" 1 booking="pid:$BOOKING_PID" redis="pid:$redis_pid" \
  postgres="tree:$pg_pidfile" rotel="pidfile:$RUN/rotel.pid" & sampler=$!
sleep 1.2
"$BIN/examples/bench_driver" admit "$BASE" "$RUN/tokens.csv" 1 "$RUN/pairs.txt" > "$RUN/admit.json"
kill -TERM "$sampler"; wait "$sampler" 2>/dev/null || true

export PAIRS=$RUN/pairs.txt
measure queue-poll -t1 -c64 -d"${DURATION}s" -s bench/wrk/queue-poll.lua "$BASE"
PERFORMANCE_ID=1 measure seat-map -t1 -c64 -d"${DURATION}s" -s bench/wrk/seat-map.lua "$BASE"
FIRST_SEAT=1 ALL_SEATS=$SEATS HOT_SEATS=$((SEATS / 5)) measure hot-seat -t1 -c64 -d"${DURATION}s" -s bench/wrk/hot-seat.lua "$BASE"
FIRST_SEAT=$((SEATS + 1)) SEATS=$((4 * SEATS)) measure claim -t1 -c32 -d"${DURATION}s" -s bench/wrk/claim.lua "$BASE"

log "checking the invariants"
"$BIN/booking" audit > "$RUN/audit.json"

python3 - "$RUN" "$USERS" "$DURATION" <<'PY' | tee "$RUN/results.md"
import json, sys
run, users, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def last(path):
    lines = open(path).read().split("\n")
    return json.loads([l for l in lines if l.strip()][-1])
import os
redis = os.environ.get("REDIS_URL", "")
print(f"`DURATION={duration} USERS={users} scripts/bench-capacity.sh` (REDIS_URL={redis}), run {run.split('/')[-1]}: CPU per request, µs (utime+stime / requests)\n")
print("| request | requests | rate (/s) | booking | PostgreSQL | Redis | collector | machine (all processes) |")
print("|---|---|---|---|---|---|---|---|")
rows = [("enter + polls until admitted (per user)", "admit", None), ("queue poll", "queue-poll", "queue-poll"),
        ("seat map (1 s per-instance cache)", "seat-map", "seat-map"), ("hot-seat rejection", "hot-seat", "hot-seat"),
        ("claim of a free seat", "claim", "claim")]
for label, cpu, wrk in rows:
    c = last(f"{run}/{cpu}.cpu.jsonl")
    if wrk:
        w = json.load(open(f"{run}/{wrk}.json")); n, rate = w["requests"], f"{w['rps']:,.0f}"
    else:
        n, rate = users, ""
    per = lambda name: f"{c['cpu'].get(name, 0) / n * 1e6:,.1f}"
    print(f"| {label} | {n:,} | {rate} | {per('booking')} | {per('postgres')} | {per('redis')} | {per('rotel')} | {c['machine'] / n * 1e6:,.1f} |")
print("\nbooking audit: every invariant holds (it exits non-zero otherwise, and so would this script)")
PY
