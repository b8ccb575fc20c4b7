#!/usr/bin/env bash
# Fault drills on the 3-instance cluster (issue 15): for each drill a fresh
# scripts/cluster.sh cluster, a short sale (k6/sale-20k.js through HAProxy:
# 2,000 users on 20 dates × 100 seats, 50 admitted every 2 s, so admitted
# users book for about 80 s) and one fault FAULT_AFTER (20) seconds into it:
#
#   booking      kill -9 of booking-2: HAProxy must route around it
#   redis        kill -9 of the Redis master holding the sale's queue (the
#                master with the most keys); its replica takes over
#   pg-replica   pg_ctl stop -m fast of the PostgreSQL replica: catalogue
#                reads must fall back to the primary
#   pg-primary   pg_ctl restart -m fast of the primary: 503s meanwhile, never
#                a 500, and recovery without an operator
#   pg-primary-outage  (not in the default set) the primary stopped for
#                PG_OUTAGE_SECONDS (10) and started again: a restart long
#                enough for requests to meet it
#
# After each: responses by status (k6's own counts), every 5xx other than
# 503, the payments k6 saw against the database's, `booking audit`, and when
# errors stopped. Prints one Markdown table row per drill (also in
# .bench/<run>/drills.md); details and log excerpts stay in
# .bench/<run>/<drill>/.
#
#   scripts/drill-cluster.sh                       # all four, ~10 minutes
#   scripts/drill-cluster.sh pg-primary booking    # some of them
#
# Environment: USERS (2000), ARRIVAL_SECONDS (10), ADMISSION_BATCH (50),
# ADMISSION_INTERVAL_SECS (2), PERFORMANCES (20), SEATS (100 per date),
# FAULT_AFTER (20 s after k6 starts), PG_OUTAGE_SECONDS (10),
# CLUSTER_PORT_BASE (7500), KEEP_DATA=1.
#
# Exits 1 when a drill shows a 5xx other than 503, a payment k6 saw that the
# database lacks (or more payments in the database than k6 saw and could not
# know of), or an audit that is not clean.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

DRILLS=("$@")
[ ${#DRILLS[@]} -gt 0 ] || DRILLS=(booking redis pg-replica pg-primary)
for d in "${DRILLS[@]}"; do
  case $d in
    booking | redis | pg-replica | pg-primary | pg-primary-outage) ;;
    *) echo "unknown drill: $d (booking redis pg-replica pg-primary pg-primary-outage)" >&2; exit 2 ;;
  esac
done
USERS=${USERS:-2000}
ARRIVAL_SECONDS=${ARRIVAL_SECONDS:-10}
PERFORMANCES=${PERFORMANCES:-20}
SEATS=${SEATS:-100}
FAULT_AFTER=${FAULT_AFTER:-20}
PG_OUTAGE_SECONDS=${PG_OUTAGE_SECONDS:-10}
export ADMISSION_BATCH=${ADMISSION_BATCH:-50} ADMISSION_INTERVAL_SECS=${ADMISSION_INTERVAL_SECS:-2}
BASE_PORT=${CLUSTER_PORT_BASE:-7500}
TOP=$PWD/.bench/$(date -u +%Y%m%dT%H%M%SZ)-drills
mkdir -p "$TOP"
RUN=$TOP
. scripts/lib/sale.sh
# shellcheck disable=SC2012 # as scripts/cluster.sh finds it
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
COMMAND="USERS=$USERS ARRIVAL_SECONDS=$ARRIVAL_SECONDS ADMISSION_BATCH=$ADMISSION_BATCH ADMISSION_INTERVAL_SECS=$ADMISSION_INTERVAL_SECS PERFORMANCES=$PERFORMANCES SEATS=$SEATS FAULT_AFTER=$FAULT_AFTER PG_OUTAGE_SECONDS=$PG_OUTAGE_SECONDS scripts/drill-cluster.sh ${DRILLS[*]}"
echo "$COMMAND" >"$TOP/command.txt"

CLUSTER=
cleanup() {
  sale_watch_stop
  [ -z "${K6_PID:-}" ] || kill "$K6_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -z "$CLUSTER" ] || sale_cluster_down "$CLUSTER"
}
trap cleanup EXIT

sale_build

# The master with the most keys: the one holding the sale's queue (a concert's
# keys share one hash slot).
busiest_master() {
  local p best='' most=-1 n
  for p in $REDIS_CLUSTER_PORTS; do
    [ "$(redis-cli -h 127.0.0.1 -p "$p" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^role://p')" = master ] || continue
    n=$(redis-cli -h 127.0.0.1 -p "$p" dbsize 2>/dev/null | tr -d '\r')
    if [ "${n:-0}" -gt "$most" ]; then most=$n; best=$p; fi
  done
  echo "$best $most"
}

# inject DRILL: the fault; what was done goes to $RUN/fault.txt.
inject() {
  local pid p keys t0
  case $1 in
    booking)
      pid=$(cat "$CLUSTER/run/booking-2.pid")
      kill -9 "$pid"
      echo "kill -9 booking-2 (pid $pid)" >"$RUN/fault.txt"
      ;;
    redis)
      read -r p keys < <(busiest_master)
      pid=$(cat "$CLUSTER/run/redis-$p.pid")
      redis-cli -h 127.0.0.1 -p "$p" cluster nodes 2>/dev/null | tr -d '\r' >"$RUN/redis-nodes-before.txt" || true
      kill -9 "$pid"
      echo "kill -9 the Redis master :$p (pid $pid, $keys keys)" >"$RUN/fault.txt"
      ;;
    pg-replica)
      t0=$(date +%s.%N)
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$CLUSTER/postgres/replica" -m fast -w -t 60 -s stop
      echo "pg_ctl stop -m fast of the replica (took $(python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 1))" "$t0") s)" >"$RUN/fault.txt"
      ;;
    pg-primary)
      t0=$(date +%s.%N)
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$CLUSTER/postgres/primary" -l "$CLUSTER/logs/postgres-primary.log" \
        -m fast -w -t 60 -s restart
      echo "pg_ctl restart -m fast of the primary (took $(python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 1))" "$t0") s)" >"$RUN/fault.txt"
      ;;
    pg-primary-outage)
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$CLUSTER/postgres/primary" -m fast -w -t 60 -s stop
      sleep "$PG_OUTAGE_SECONDS"
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$CLUSTER/postgres/primary" -l "$CLUSTER/logs/postgres-primary.log" \
        -w -t 60 -s start
      echo "the primary stopped (pg_ctl stop -m fast) for ${PG_OUTAGE_SECONDS} s, then started" >"$RUN/fault.txt"
      ;;
  esac
}

# Log lines around the fault: warnings and errors of each booking instance,
# every HAProxy line (it logs only requests that went wrong), the end of the
# PostgreSQL and Redis logs.
excerpts() {
  local f out=$RUN/log-excerpts.txt
  : >"$out"
  for f in "$CLUSTER"/logs/booking-*.log; do
    echo "== $(basename "$f"): WARN/ERROR lines ($(grep -ciE '"level":"(warn|error)"|level=(warn|error)| (WARN|ERROR) |panick' "$f" || true) in all; the first 15)" >>"$out"
    grep -iE '"level":"(warn|error)"|level=(warn|error)| (WARN|ERROR) |panick' "$f" | head -n 15 | cut -c1-400 >>"$out" || true
  done
  # HAProxy's fields: status $6, termination state $10, retries the last of $11 ("+N": redispatched).
  echo "== haproxy.log ($(wc -l <"$CLUSTER/logs/haproxy.log") lines): count, status, termination state, retried" >>"$out"
  awk '{ n = split($11, a, "/"); print $6, $10, (a[n] ~ /^\+/ ? "retried" : "-") }' "$CLUSTER/logs/haproxy.log" | sort | uniq -c | sort -rn >>"$out" || true
  echo "== haproxy.log: the first 10 lines with a 5xx status" >>"$out"
  awk '$6 ~ /^5/' "$CLUSTER/logs/haproxy.log" | head -n 10 | cut -c1-300 >>"$out" || true
  for f in "$CLUSTER"/logs/postgres-primary.log "$CLUSTER"/logs/postgres-replica.log; do
    echo "== $(basename "$f") (the last 10 lines)" >>"$out"
    tail -n 10 "$f" | cut -c1-300 >>"$out" || true
  done
}

rows=()
started_all=$(date +%s)
for drill in "${DRILLS[@]}"; do
  RUN=$TOP/$drill
  CLUSTER=$RUN/cluster
  mkdir -p "$RUN"
  cp "$TOP/command.txt" "$RUN/command.txt"
  sale_build_info
  t_drill=$(date +%s)
  log "drill $drill"
  sale_cluster_up "$CLUSTER" "$BASE_PORT"
  sale_seed "$PERFORMANCES" "$SEATS" "$USERS"
  sale_wait_quiet before
  sale_k6_start "$USERS" -e ARRIVAL_SECONDS="$ARRIVAL_SECONDS" -e ADMISSION_BATCH="$ADMISSION_BATCH" \
    -e ADMISSION_INTERVAL_SECS="$ADMISSION_INTERVAL_SECS" -e PERFORMANCES="$PERFORMANCES" -e SEATS="$SEATS" \
    -e MAX_WARNINGS=3
  sale_watch_start
  sleep "$FAULT_AFTER"
  fault_at=$(date +%s.%N)
  inject "$drill" || echo "fault injection FAILED (exit $?)" >>"$RUN/fault.txt"
  log "  fault at +${FAULT_AFTER}s: $(cat "$RUN/fault.txt")"
  sale_k6_wait
  sale_watch_stop
  log "  k6 exited with $(cat "$RUN/k6.exit")"
  CLUSTER_DIR=$CLUSTER scripts/cluster.sh status >"$RUN/status-after.txt" 2>&1 || true
  [ -z "${HAPROXY_STATS_URL:-}" ] || curl -s "$HAPROXY_STATS_URL;csv" >"$RUN/haproxy-stats.csv" || true
  sale_audit
  excerpts
  sale_cluster_down "$CLUSTER"
  CLUSTER=
  row=$(python3 scripts/lib/sale_report.py drill "$RUN" "$drill: $(cat "$RUN/fault.txt")" "$fault_at" 2>"$RUN/drill-details.json")
  rows+=("$row")
  log "  $row"
  log "  drill $drill took $(($(date +%s) - t_drill)) s"
done

{
  echo "Command: \`$COMMAND\` ($(($(date +%s) - started_all)) s in all; runs in .bench/$(basename "$TOP")/)"
  echo
  echo "| fault | requests | 503s | other 5xx | network errors | payments k6 / DB | audit | errors and recovery |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$TOP/drills.md"

# The verdict: a 5xx other than 503, a payment lost or doubled, a dirty audit.
python3 - "$TOP" "${DRILLS[@]}" <<'PY'
import json, sys
top, drills = sys.argv[1], sys.argv[2:]
bad = []
for d in drills:
    r = json.load(open(f"{top}/{d}/drill.json"))
    other = {k: v for k, v in r["by_status"].items() if int(k) >= 500 and k != "503"}
    if other:
        bad.append(f"{d}: 5xx other than 503: {other}")
    try:
        db = int(r["db_payments"])
        if db < r["k6_paid"]:
            bad.append(f"{d}: k6 saw {r['k6_paid']} payments, the database has {db}")
        elif db > r["k6_paid"] + r["payments_unknown"]:
            bad.append(f"{d}: the database has {db} payments, k6 saw {r['k6_paid']} (+{r['payments_unknown']} unanswered)")
    except ValueError:
        bad.append(f"{d}: no payments count from the database")
    if r["audit_exit"] != "0":
        bad.append(f"{d}: audit exit {r['audit_exit']}: {r['audit']}")
if bad:
    print("\nFAILED: " + "; ".join(bad))
    sys.exit(1)
print("\nNo 5xx other than 503, no payment lost or doubled, every audit clean.")
PY
