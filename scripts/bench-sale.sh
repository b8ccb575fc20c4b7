#!/usr/bin/env bash
# The seed's sale at full scale on the 3-instance cluster (seed 004, issue 15):
# starts a fresh scripts/cluster.sh cluster (3 booking instances behind
# HAProxy, a 6-node Redis Cluster, a PostgreSQL primary and replica), seeds
# 1 concert × 20 dates × 1,000 seats and 20,000 funded users, runs
# k6/sale-20k.js through HAProxy (20,000 users joining within 10 s, 500
# admitted every 15 s: about 11 minutes), measures the CPU seconds of every
# process and the commands of every Redis node meanwhile, audits the
# database, stops the cluster and prints a Markdown table (also written to
# .bench/<run>/results.md).
#
#   scripts/bench-sale.sh                                   # the full sale, ~12 minutes
#   USERS=2000 ADMISSION_INTERVAL_SECS=2 scripts/bench-sale.sh   # a short one, ~1 minute
#
# Environment: USERS (20000), ARRIVAL_SECONDS (10), ADMISSION_BATCH (500),
# ADMISSION_INTERVAL_SECS (15), PERFORMANCES (20), SEATS (1000 per date),
# VUS (k6 VUs; default one per 2,000 users), CLUSTER_PORT_BASE (7400),
# CPU_INTERVAL (2 s between CPU samples), KEEP_DATA=1 (keep the cluster's
# data directories), K6_ARGS (more `-e NAME=VALUE` for k6).
#
# Exits 1 when a threshold fails (admitted P95 >= 500 ms, any 5xx, more than
# 1% unexpected answers) or the audit is not clean, saying which.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

USERS=${USERS:-20000}
ARRIVAL_SECONDS=${ARRIVAL_SECONDS:-10}
PERFORMANCES=${PERFORMANCES:-20}
SEATS=${SEATS:-1000}
CPU_INTERVAL=${CPU_INTERVAL:-2}
export ADMISSION_BATCH=${ADMISSION_BATCH:-500} ADMISSION_INTERVAL_SECS=${ADMISSION_INTERVAL_SECS:-15}
BASE_PORT=${CLUSTER_PORT_BASE:-7400}
RUN=$PWD/.bench/$(date -u +%Y%m%dT%H%M%SZ)-sale-$USERS
CLUSTER=$RUN/cluster
mkdir -p "$RUN"
. scripts/lib/sale.sh

COMMAND="USERS=$USERS ARRIVAL_SECONDS=$ARRIVAL_SECONDS ADMISSION_BATCH=$ADMISSION_BATCH ADMISSION_INTERVAL_SECS=$ADMISSION_INTERVAL_SECS PERFORMANCES=$PERFORMANCES SEATS=$SEATS${VUS:+ VUS=$VUS}${K6_ARGS:+ K6_ARGS=\"$K6_ARGS\"} scripts/bench-sale.sh"
echo "$COMMAND" >"$RUN/command.txt"

SAMPLER_PID=
cleanup() {
  sale_watch_stop
  [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
  [ -z "${K6_PID:-}" ] || kill "$K6_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  sale_cluster_down "$CLUSTER"
}
trap cleanup EXIT

sale_build
sale_build_info
command -v haproxy >/dev/null || apt_install haproxy
command -v redis-server >/dev/null || apt_install redis-server redis-tools

sale_cluster_up "$CLUSTER" "$BASE_PORT"
sale_seed "$PERFORMANCES" "$SEATS" "$USERS"

sale_wait_quiet before
sale_redis_info before
sale_pg_counts before
sale_metrics before
log "sale: $USERS users within ${ARRIVAL_SECONDS}s, $ADMISSION_BATCH admitted every ${ADMISSION_INTERVAL_SECS}s"
# shellcheck disable=SC2086
sale_k6_start "$USERS" -e ARRIVAL_SECONDS="$ARRIVAL_SECONDS" -e ADMISSION_BATCH="$ADMISSION_BATCH" \
  -e ADMISSION_INTERVAL_SECS="$ADMISSION_INTERVAL_SECS" -e PERFORMANCES="$PERFORMANCES" -e SEATS="$SEATS" \
  ${VUS:+-e VUS=$VUS} ${K6_ARGS:-}

# CPU per process while k6 runs.
specs=()
for f in "$CLUSTER"/run/booking-*.pid; do specs+=("$(basename "$f" .pid)=pidfile:$f"); done
specs+=("haproxy=pidfile:$CLUSTER/run/haproxy.pid")
for p in $REDIS_CLUSTER_PORTS; do specs+=("redis-$p=pidfile:$CLUSTER/run/redis-$p.pid"); done
specs+=("postgres-primary=tree:$CLUSTER/postgres/primary/postmaster.pid" "postgres-replica=tree:$CLUSTER/postgres/replica/postmaster.pid")
specs+=("k6=pid:$K6_PID")
python3 scripts/lib/proc_cpu.py "$RUN/cpu.jsonl" "$CPU_INTERVAL" "${specs[@]}" &
SAMPLER_PID=$!
sale_watch_start

sale_k6_wait
sale_watch_stop
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
log "k6 exited with $(cat "$RUN/k6.exit") after $(python3 -c "import sys; print(round(float(open(sys.argv[2]).read()) - float(open(sys.argv[1]).read())))" "$RUN/k6-start.txt" "$RUN/k6-end.txt") s"
{ uptime; ps -eo pid,pcpu,etimes,comm,args --sort=-pcpu | head -n 15; } >"$RUN/ps-after.txt" 2>&1 || true
sale_redis_info after
sale_pg_counts after
sale_metrics after
curl -s "$HAPROXY_STATS_URL;csv" >"$RUN/haproxy-stats.csv" || true
log "auditing"
sale_audit
log "stopping the cluster"
trap - EXIT
cleanup

rc=0
python3 scripts/lib/sale_report.py bench "$RUN" | tee "$RUN/results.md" || rc=$?
exit "$rc"
