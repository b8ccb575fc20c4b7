#!/usr/bin/env bash
# What telemetry costs on the hot reservation path, measured as an alternating
# A/B on PostgreSQL + Redis. Set up exactly as scripts/bench.sh does (same
# seed, same rotel collector discarding what it receives, same service
# settings), every seat taken by a warm-up run, then ROUNDS times:
# restart the service with telemetry on, hot-seat wrk, stop; restart with
# telemetry off, the same wrk, stop (in ABBA order). Restarting for every run keeps both
# sides equal; the queue lives in Redis, so the admitted users stay admitted
# (for ACTIVE_WINDOW_SECS, default 600 s, after the admission).
# CPU time of the service and of rotel is sampled around every run.
# Prints a table (also written to .bench/<run>-telemetry/results.md). Each
# run's log is cut to its first 1,000 lines afterwards (an "on" run writes
# 30-100 MB); KEEP_LOGS=1 keeps them whole.
# Single rounds scatter by several points on a shared two-core machine; the
# default of 10 rounds (about 4 minutes) gives a median worth quoting, printed
# with a 95% bootstrap interval (rounds resampled) that says how sure it is.
#
#   scripts/bench-telemetry.sh                          # 10 rounds of 8 s per side
#   DURATION=5 ROUNDS=2 scripts/bench-telemetry.sh
#   EXTRA_ON_ENV="OTEL_LOGS_EXPORTER=none" scripts/bench-telemetry.sh   # a variant of "on"
#   EXTRA_ON_ENV="OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317" \
#     scripts/bench-telemetry.sh                        # gRPC instead of the default HTTP/protobuf
#   NO_BUILD=1 scripts/bench-telemetry.sh               # use what is in target/release
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-10}
USERS=${USERS:-20000}
EXTRA_ON_ENV=${EXTRA_ON_ENV:-}
SEATS_PER_PERF=5000
RUN=.bench/$(date -u +%Y%m%dT%H%M%SZ)-telemetry
mkdir -p "$RUN"
PORT=${PORT:-18080}
OTLP_PORT=${OTLP_PORT:-14317}
BASE=http://127.0.0.1:$PORT
ID=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
DB=booking_bench_$ID
PREFIX=bench-$ID
BOOKING_PID=
ROTEL_PID=
read -ra EXTRA <<< "$EXTRA_ON_ENV"
# PIN=1: the service on CPU 0, wrk and the collector on CPU 1 (PostgreSQL
# and Redis float), so the collector's work is not taken from the service,
# as when it runs on its own host.
if [ "${PIN:-0}" = 1 ]; then ON_SERVICE_CPU="taskset -c 0"; ON_CLIENT_CPU="taskset -c 1"; else ON_SERVICE_CPU=; ON_CLIENT_CPU=; fi

cleanup() {
  if [ -n "$BOOKING_PID" ]; then kill "$BOOKING_PID" 2>/dev/null || true; fi
  if [ -z "$ROTEL_PID" ] && [ -s "$RUN/rotel.pid" ]; then ROTEL_PID=$(cat "$RUN/rotel.pid"); fi
  if [ -n "$ROTEL_PID" ]; then kill "$ROTEL_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "{$PREFIX}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Someone else's service on our ports would be measured instead of ours.
for p in "$PORT" "$OTLP_PORT" $((OTLP_PORT + 1)); do
  if (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    log "port $p is already in use (ss -ltnp 'sport = :$p'); free it or set PORT / OTLP_PORT"
    exit 1
  fi
done

ensure_postgres
ensure_redis
command -v wrk >/dev/null || apt_install wrk

if [ "${NO_BUILD:-0}" = 1 ]; then
  log "NO_BUILD=1: using the binaries already in target/release"
else
  log "building (release)"
  cargo build --release -q -p booking --bins --examples
fi
BIN=${BIN:-target/release}
COMMIT=$(git rev-parse --short HEAD)
DIRTY=$([ -n "$(git status --porcelain --untracked-files=no)" ] && echo dirty || echo clean)
BIN_TIME=$(date -u -r "$BIN/booking" +%Y-%m-%dT%H:%M:%SZ)

wrk_json() { # wrk_json NAME WRK-ARGS...: runs wrk, keeps its JSON line as $RUN/NAME.json
  local name=$1; shift
  $ON_CLIENT_CPU wrk "$@" > "$RUN/$name.txt" 2>&1
  grep '^WRK_JSON ' "$RUN/$name.txt" | sed 's/^WRK_JSON //' > "$RUN/$name.json"
  log "$name: $(cat "$RUN/$name.json")"
}

# CPU time (user + system, all threads) of a process so far, in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# Busy clock ticks of the whole machine so far (everything but idle and iowait).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

hot_seat() { # hot_seat NAME: one hot-seat wrk run, CPU sampled around it into $RUN/NAME.cpu.json
  local name=$1 b0 r0 m0
  b0=$(cpu_ticks "$BOOKING_PID"); r0=$(cpu_ticks "$ROTEL_PID"); m0=$(machine_ticks)
  FIRST_SEAT=1 ALL_SEATS=$SEATS_PER_PERF HOT_SEATS=$((SEATS_PER_PERF / 5)) \
    wrk_json "$name" -t1 -c64 -d"${DURATION}s" -s bench/wrk/hot-seat.lua "$BASE"
  printf '{"booking_ticks": %d, "rotel_ticks": %d, "machine_ticks": %d, "clk_tck": %d}\n' \
    $(($(cpu_ticks "$BOOKING_PID") - b0)) $(($(cpu_ticks "$ROTEL_PID") - r0)) $(($(machine_ticks) - m0)) \
    "$(getconf CLK_TCK)" > "$RUN/$name.cpu.json"
}

log "starting the booking service (postgres)"
createdb -h 127.0.0.1 -U postgres "$DB"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX=$PREFIX
export BOOKING_LISTEN=127.0.0.1:$PORT RUST_LOG=warn ADMISSION_BATCH=1000000 ADMISSION_INTERVAL_SECS=1 \
  ADMISSION_MAX_ACTIVE=1000000 MAX_HOLDS_PER_USER=1000000 DATABASE_MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-16} \
  SIGNUP_RATE_PER_MINUTE=off
# Performance 1: hot seats (the only one used here; seeded as bench.sh does).
"$BIN/booking" seed --concerts 1 --performances 14 --seats $SEATS_PER_PERF --users "$USERS" \
  --tokens-out "$RUN/tokens.csv" > "$RUN/seed.json"
# Telemetry on, as in production and as in bench.sh: every request logged at
# info, traces sampled at 100% and exported over OTLP to a real collector
# (rotel, discarding what it receives).
start_blackhole_rotel "$RUN" "$OTLP_PORT" $ON_CLIENT_CPU
ROTEL_PID=$(cat "$RUN/rotel.pid")
start_booking() { # start_booking on|off LOG-NAME
  BOOKING_LOG=$RUN/booking-$2.log
  if [ "$1" = on ]; then
    env RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$((OTLP_PORT + 1)) ${EXTRA[@]+"${EXTRA[@]}"} \
      $ON_SERVICE_CPU "$BIN/booking" serve > "$BOOKING_LOG" 2>&1 &
  else
    RUST_LOG=warn OTEL_SDK_DISABLED=true $ON_SERVICE_CPU "$BIN/booking" serve > "$BOOKING_LOG" 2>&1 &
  fi
  BOOKING_PID=$!
  wait_for "booking service" 30 curl -sf "$BASE/readyz"
}
# `sync` after every run: an "on" run writes tens of MB of log lines, and
# the next run must not pay for flushing them to disk.
stop_booking() {
  kill -TERM "$BOOKING_PID"; wait "$BOOKING_PID" 2>/dev/null || true; BOOKING_PID=
  if [ "${KEEP_LOGS:-0}" != 1 ]; then
    head -n 1000 "$BOOKING_LOG" > "$BOOKING_LOG.head" && mv "$BOOKING_LOG.head" "$BOOKING_LOG"
  fi
  sync
}

start_booking on warmup
log "admitting $USERS users"
"$BIN/examples/bench_driver" admit "$BASE" "$RUN/tokens.csv" 1 "$RUN/pairs.txt" > "$RUN/admit.json"
export PAIRS=$RUN/pairs.txt
# Every seat of the performance is taken before anything is measured (the
# warm-up spreads its attempts over all of them, HOT_SHARE=0, and repeats
# until a run takes no seat), so every measured request is the same refusal;
# a seat left free would make the first measured run pay for its hold.
log "warm-up: taking every seat (telemetry on)"
for attempt in 1 2 3 4 5; do
  HOT_SHARE=0 hot_seat warmup
  grep -q '"201"' "$RUN/warmup.json" || break
  if [ "$attempt" = 5 ]; then
    log "warning: seats were still being taken after 5 warm-up runs; the first measured run pays for the rest"
  fi
done
stop_booking

# The warm-up's writes are checkpointed and vacuumed first, so neither side
# pays for them (the first measured run used to be the slowest by far).
psql -q -h 127.0.0.1 -U postgres -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
measure() { # measure on|off ROUND
  log "round $2/$ROUNDS: telemetry $1${EXTRA_ON_ENV:+$([ "$1" = on ] && echo " ($EXTRA_ON_ENV)")}"
  start_booking "$1" "$1-$2"
  hot_seat "$1-$2"
  stop_booking
}
# ABBA: odd rounds on then off, even rounds off then on, so drift over the
# session falls on both sides alike.
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then measure on "$round"; measure off "$round"; else measure off "$round"; measure on "$round"; fi
done

python3 - "$RUN" "$ROUNDS" "$DURATION" "$USERS" "$COMMIT" "$DIRTY" "$BIN_TIME" "$EXTRA_ON_ENV" "${NO_BUILD:-0}" <<'PY' | tee "$RUN/results.md"
import json, os, random, statistics, sys

run, rounds, duration, users, commit, dirty, bin_time, extra, no_build = sys.argv[1:]
rounds = int(rounds)
load = lambda name: json.load(open(os.path.join(run, name + ".json")))


def unexpected(r):
    """Responses other than 200/201 and the expected 409 conflicts (as bench_report.py counts them)."""
    return {s: n for s, n in r["statuses"].items() if s not in ("200", "201", "409")}


def share(r, status):
    return r["statuses"].get(status, 0) / max(r["requests"], 1)


print(f"### Telemetry cost on the hot reservation path — run {os.path.basename(run)}\n")
print(f"booking commit `{commit}` ({dirty} tree; binary built {bin_time}{', NO_BUILD=1' if no_build == '1' else ''}), "
      f"{os.cpu_count()} CPUs, `wrk -t1 -c64 -d{duration}s` hot-seat.lua, {users} users, "
      f"{rounds} rounds (ABBA: on/off, off/on, ...), each run on a freshly started service. "
      f"On: `RUST_LOG=info`, OTLP to rotel (blackhole){', plus `' + extra + '`' if extra else ''}; "
      f"off: `RUST_LOG=warn OTEL_SDK_DISABLED=true`.\n")
print("| round | on req/s | off req/s | cost (1 - on/off) | on P99 ms | off P99 ms |")
print("|---|---|---|---|---|---|")
costs, problems = [], []
for i in range(1, rounds + 1):
    on, off = load(f"on-{i}"), load(f"off-{i}")
    cost = 1 - on["rps"] / off["rps"]
    costs.append(cost)
    print(f"| {i} | {on['rps']:,.0f} | {off['rps']:,.0f} | {cost:+.1%} | {on['p99_ms']:.2f} | {off['p99_ms']:.2f} |")
    for name, r in ((f"on-{i}", on), (f"off-{i}", off)):
        if unexpected(r) or r["socket_errors"] or share(r, "409") < 0.9:
            problems.append(f"{name}: 409 share {share(r, '409'):.1%}, unexpected statuses {unexpected(r) or 'none'}, "
                            f"socket errors {r['socket_errors']}")
print(f"| **median** | | | **{statistics.median(costs):+.1%}** | | |\n")

# How sure the median is: rounds resampled with replacement (a fixed seed,
# so the same data always gives the same interval).
rng = random.Random(4)
medians = sorted(statistics.median(rng.choices(costs, k=len(costs))) for _ in range(10_000))
low, high = medians[249], medians[9_749]
print(f"Cost: median {statistics.median(costs):+.1%} (95% bootstrap interval {low:+.1%} to {high:+.1%}), "
      f"mean {statistics.mean(costs):+.1%}, spread of rounds {min(costs):+.1%} to {max(costs):+.1%}.\n")

print("CPU seconds per 10k requests (user + system, sampled around each wrk run; machine = all busy CPU):\n")
print("| side | booking | rotel | machine | req/s (mean) |\n|---|---|---|---|---|")
for side in ("on", "off"):
    req = ticks_b = ticks_r = ticks_m = 0
    rps = []
    for i in range(1, rounds + 1):
        r, c = load(f"{side}-{i}"), load(f"{side}-{i}.cpu")
        req += r["requests"]; rps.append(r["rps"])
        ticks_b += c["booking_ticks"] / c["clk_tck"]; ticks_r += c["rotel_ticks"] / c["clk_tck"]
        ticks_m += c["machine_ticks"] / c["clk_tck"]
    per = lambda s: f"{s / req * 1e4:.3f}"
    print(f"| {side} | {per(ticks_b)} | {per(ticks_r)} | {per(ticks_m)} | {statistics.mean(rps):,.0f} |")

warm = load("warmup")
print(f"\nStatuses: warm-up {warm['statuses']}; "
      + "; ".join(f"{n} {load(n)['statuses']}" for i in range(1, rounds + 1) for n in (f"on-{i}", f"off-{i}")))
if problems:
    print("\n**Warning**: runs not answered mostly with 409 (seats taken) — not the hot path being measured:\n")
    print("\n".join(f"- {p}" for p in problems))
else:
    print("\nEvery measured run: ≥ 90% 409 (hot seats taken), no 401/403/5xx, no socket errors.")
PY
