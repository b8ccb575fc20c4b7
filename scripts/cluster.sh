#!/usr/bin/env bash
# A scaled-out booking platform on loopback, all of it in one scratch
# directory, beside (never on) the machine's shared PostgreSQL :5432 and
# Redis :6379:
# - redis: a Redis Cluster of six nodes, three masters with a replica each; a
#   replica takes over within a few seconds when its master dies;
# - postgres: a primary and a streaming replica, database "booking";
# - booking: CLUSTER_BOOKING_INSTANCES (3) instances, writing to the primary
#   and reading from the replica, all with the same secrets;
# - haproxy: round robin over the instances that pass /readyz
#   (compose/haproxy.cfg, the same file docker-compose uses).
#
#   scripts/cluster.sh up [PART...]   PART: redis postgres booking haproxy (default: all four, in that order)
#   scripts/cluster.sh status         one line per part from real checks; exit 0 only if every started part is healthy
#   scripts/cluster.sh down           stops what this CLUSTER_DIR started, by its pid files; removes nothing else
#
# CLUSTER_DIR (default ./cluster) holds the data, logs/, run/ (pid files),
# secrets.env and cluster.env: export lines with the URLs, ports and secrets
# of the parts that are up (`. cluster/cluster.env`). Ports, from
# CLUSTER_PORT_BASE (default 7100): +0 haproxy, +1..+6 redis (their cluster
# bus on +10001..+10006), +11 postgres primary, +12 replica, +21.. booking,
# +30 haproxy stats. BOOKING_BIN runs that binary instead of building
# target/release/booking.
#
# Every port is checked before anything starts. If a part fails to start,
# the end of its log is shown, what this run started is stopped, and the
# exit is 1.
set -euo pipefail
caller_pwd="$PWD"
cd "$(dirname "$0")/.."
root="$PWD"
umask 022

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }
usage() {
  say "usage: scripts/cluster.sh up [redis|postgres|booking|haproxy ...] | status | down"
  exit 2
}

[ $# -ge 1 ] || usage
command=$1
shift

absolute() { case $1 in /*) echo "$1" ;; *) echo "$caller_pwd/$1" ;; esac; }
dir=$(absolute "${CLUSTER_DIR:-cluster}")
case $dir in *[[:space:]\'\"\\]*) fail "CLUSTER_DIR must not contain spaces, quotes or backslashes: $dir" ;; esac
# The physical path: a process's /proc/PID/cwd, which tells our processes
# from others, is one.
[ -d "$dir" ] && dir=$(cd "$dir" && pwd -P)
run="$dir/run"
logs="$dir/logs"

# The port base this directory was started with wins over the environment
# for status and down, so they look where the parts really are.
requested_base=${CLUSTER_PORT_BASE:-7100}
recorded_base=$(cat "$run/port-base" 2>/dev/null || true)
base=${recorded_base:-$requested_base}
[ "$command" = up ] && base=$requested_base
[[ $base =~ ^[0-9]+$ ]] && [ "$base" -ge 1024 ] && [ $((base + 10006)) -le 65535 ] ||
  fail "CLUSTER_PORT_BASE=$base: must be a number from 1024 to 55529 (the cluster uses BASE..BASE+30 and BASE+10001..BASE+10006)"

haproxy_port=$base
stats_port=$((base + 30))
redis_ports=()
for i in 1 2 3 4 5 6; do redis_ports+=($((base + i))); done
redis_masters=("${redis_ports[@]:0:3}")
redis_replicas=("${redis_ports[@]:3:3}")
pg_primary_port=$((base + 11))
pg_replica_port=$((base + 12))
booking_port() { echo $((base + 20 + $1)); }

pg_dir="$dir/postgres"
pg_primary="$pg_dir/primary"
pg_replica="$pg_dir/replica"
pg_socket="$pg_dir/socket"
pg_slot=cluster_replica
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

redis_url="redis+cluster://127.0.0.1:${redis_masters[0]},127.0.0.1:${redis_masters[1]},127.0.0.1:${redis_masters[2]}"
database_url="postgres://postgres@127.0.0.1:$pg_primary_port/booking"
database_read_url="postgres://postgres@127.0.0.1:$pg_replica_port/booking"
booking_url="http://127.0.0.1:$haproxy_port"
stats_url="http://127.0.0.1:$stats_port/stats"

# Microseconds since the epoch, and the seconds since such a time (0.1 s).
now() { echo "${EPOCHREALTIME/./}"; }
since() { local d=$(($(now) - $1)); printf '%d.%d' $((d / 1000000)) $((d / 100000 % 10)); }

# --- processes -------------------------------------------------------------

# Running, and not a zombie nobody reaped.
alive() {
  local state
  state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# running FILE [WORD]: prints the pid in FILE if that process is alive, works
# in CLUSTER_DIR (its cwd is there) and has WORD in its command line. A pid
# file outliving its process may name someone else's process by now, and
# that one is never touched.
running() {
  local file=$1 word=${2:-} pid cwd
  [ -r "$file" ] || return 1
  pid=$(head -n 1 "$file" 2>/dev/null | tr -d '[:space:]') || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
  case "$cwd/" in "$dir"/*) ;; *) return 1 ;; esac
  if [ -n "$word" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word" || return 1
  fi
  echo "$pid"
}

gone_within() {
  local pid=$1 deadline=$(($(now) + $2 * 1000000))
  while alive "$pid"; do
    [ "$(now)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# stop_pidfile NAME FILE [WORD]: SIGTERM, up to 30 s to exit (booking drains
# for SHUTDOWN_GRACE_SECS, 10 s), then SIGKILL.
stop_pidfile() {
  local name=$1 file=$2 word=${3:-} pid
  [ -e "$file" ] || return 0
  if ! pid=$(running "$file" "$word"); then
    say "$name was not running (its pid file $file named no live process of $dir; removed the file)"
    rm -f "$file"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! gone_within "$pid" 30; then
    say "$name (pid $pid) did not exit within 30 s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    gone_within "$pid" 5 || say "$name (pid $pid) is still there after SIGKILL"
  fi
  rm -f "$file"
  say "stopped $name (pid $pid)"
}

# --- checks ----------------------------------------------------------------

rcli() { local p=$1; shift; redis-cli -h 127.0.0.1 -p "$p" "$@" 2>/dev/null | tr -d '\r'; }
field() { sed -n "s/^$1://p"; }
psql_at() { local p=$1; shift; "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" -U postgres "$@"; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true; }
taken() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# poll SECS COMMAND...: until COMMAND succeeds (0) or SECS pass (1).
poll() {
  local deadline=$(($(now) + $1 * 1000000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# Six nodes in one healthy cluster: each says cluster_state:ok and knows the
# other five; each of the first three is a master with an online replica,
# each of the others a replica whose link to its master is up.
redis_formed() {
  local p info
  for p in "${redis_ports[@]}"; do
    info=$(rcli "$p" cluster info)
    [ "$(field cluster_state <<<"$info")" = ok ] && [ "$(field cluster_known_nodes <<<"$info")" = 6 ] || return 1
  done
  for p in "${redis_masters[@]}"; do
    info=$(rcli "$p" info replication)
    [ "$(field role <<<"$info")" = master ] && grep -q '^slave0:.*state=online' <<<"$info" || return 1
  done
  for p in "${redis_replicas[@]}"; do
    info=$(rcli "$p" info replication)
    [ "$(field role <<<"$info")" = slave ] && [ "$(field master_link_status <<<"$info")" = up ] || return 1
  done
}

pg_streaming() {
  [ "$(psql_at "$pg_primary_port" -d postgres -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" -ge 1 ]
}

booking_ready() { [ "$(http_code "http://127.0.0.1:$1/readyz")" = 200 ]; }

# "UP TOTAL" over the booking servers in HAProxy's stats CSV; UP counts the
# servers whose state is UP and whose last check passed (L7OK).
haproxy_backends() {
  curl -fsS --max-time 2 "$stats_url;csv" 2>/dev/null | awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/^# /, "", h); col[h] = i }; next }
    $1 == "booking" && $2 != "FRONTEND" && $2 != "BACKEND" {
      total++
      if ($col["status"] ~ /^UP/ && $col["check_status"] == "L7OK") up++
    }
    END { print up + 0, total + 0 }'
}

haproxy_all_up() {
  local up total
  read -r up total < <(haproxy_backends)
  [ "$total" -gt 0 ] && [ "$up" = "$total" ]
}

booking_pidfiles() { ls "$run"/booking-*.pid 2>/dev/null | sort -V || true; }
redis_pidfiles() { ls "$run"/redis-*.pid 2>/dev/null | sort -V || true; }

# Whether any process of PART still runs from this directory.
part_running() {
  local f
  case $1 in
    redis) for f in $(redis_pidfiles); do running "$f" redis-server >/dev/null && return 0; done ;;
    postgres) for f in "$pg_primary/postmaster.pid" "$pg_replica/postmaster.pid"; do running "$f" postgres >/dev/null && return 0; done ;;
    booking) for f in $(booking_pidfiles); do running "$f" >/dev/null && return 0; done ;;
    haproxy) running "$run/haproxy.pid" haproxy >/dev/null && return 0 ;;
  esac
  return 1
}

# --- cluster.env -----------------------------------------------------------

# Each part's lines live in run/env.PART; cluster.env is their union, so it
# says exactly what is up. Mode 600: the booking lines carry the secrets.
write_env() {
  local part=$1
  shift
  (umask 077 && printf "export %s='%s'\n" "$@" >"$run/env.$part")
  assemble_env
}
assemble_env() {
  local part
  (umask 077 && for part in redis postgres booking haproxy; do
    if [ -e "$run/env.$part" ]; then cat "$run/env.$part"; fi
  done >"$dir/cluster.env.tmp")
  chmod 600 "$dir/cluster.env.tmp"
  mv -f "$dir/cluster.env.tmp" "$dir/cluster.env"
}

# --- stopping --------------------------------------------------------------

stop_redis() {
  local f
  for f in $(redis_pidfiles); do stop_pidfile "redis :$(basename "$f" .pid | sed 's/^redis-//')" "$f" redis-server; done
}

stop_postgres() {
  local name d pid
  for name in replica primary; do
    d="$pg_dir/$name"
    [ -e "$d/postmaster.pid" ] || continue
    if ! pid=$(running "$d/postmaster.pid" postgres); then
      say "postgres $name was not running (PostgreSQL clears its stale postmaster.pid itself at the next start)"
      continue
    fi
    if runuser -u postgres -- "$pg_bin/pg_ctl" -D "$d" -m fast -w -t 60 -s stop; then
      say "stopped postgres $name (pid $pid)"
    else
      say "pg_ctl could not stop postgres $name (pid $pid); the end of $logs/postgres-$name.log:"
      tail -n 10 "$logs/postgres-$name.log" >&2 || true
    fi
  done
}

stop_booking() {
  local f
  for f in $(booking_pidfiles); do stop_pidfile "$(basename "$f" .pid)" "$f"; done
}

stop_haproxy() { stop_pidfile haproxy "$run/haproxy.pid" haproxy; }

stop_part() {
  "stop_$1"
  rm -f "$run/env.$1"
  if [ -d "$run" ]; then assemble_env; fi
}

# --- up --------------------------------------------------------------------

started=()
finished=0
on_exit() {
  local i
  [ "$finished" = 1 ] && return
  [ ${#started[@]} -gt 0 ] || return
  say "stopping what this run started: ${started[*]}"
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_part "${started[i]}" || true; done
}

# Logs are appended to across runs; a failure shows only what this run
# wrote. mark LOG notes where this run's part of LOG begins.
declare -A log_start=()
mark() { log_start[$1]=$(stat -c %s "$1" 2>/dev/null || echo 0); }

# part_failed PART WHAT LOG: says why, shows the end of what this run wrote
# to LOG, and exits (the EXIT trap stops what this run started).
part_failed() {
  local part=$1 what=$2 log=$3 new
  new=$(tail -c +$((${log_start[$log]:-0} + 1)) "$log" 2>/dev/null | tail -n 20 || true)
  if [ -n "$new" ]; then
    say "$part failed to start: $what; the end of $log:"
    printf '%s\n' "$new" >&2
  else
    say "$part failed to start: $what (it wrote nothing to $log)"
  fi
  exit 1
}

up_redis() {
  local t0 p log
  t0=$(now)
  mkdir -p "$dir/redis"
  started+=(redis)
  for p in "${redis_ports[@]}"; do
    log="$logs/redis-$p.log"
    mark "$log"
    # A fresh cluster each time: nothing is saved (--save '', no AOF), so
    # an old nodes file would only describe a cluster that no longer exists.
    rm -f "$dir/redis/nodes-$p.conf"
    # cluster-replica-validity-factor 0: a replica may take over however long
    # it was cut off from its master. cluster-require-full-coverage no: while
    # a master is down, the slots of the other two keep serving.
    # repl-diskless-sync-delay 0: replicas sync at once, not after 5 s.
    redis-server --port "$p" --bind 127.0.0.1 --dir "$dir/redis" \
      --cluster-enabled yes --cluster-config-file "$dir/redis/nodes-$p.conf" --cluster-node-timeout 2000 \
      --cluster-replica-validity-factor 0 --cluster-require-full-coverage no \
      --save '' --appendonly no --repl-diskless-sync-delay 0 \
      --daemonize yes --pidfile "$run/redis-$p.pid" --logfile "$log" >>"$log" 2>&1 ||
      part_failed redis "redis-server on :$p exited" "$log"
  done
  for p in "${redis_ports[@]}"; do
    poll 10 bash -c "[ \"\$(redis-cli -h 127.0.0.1 -p $p ping 2>/dev/null)\" = PONG ]" ||
      part_failed redis "the node on :$p did not answer PING within 10 s" "$logs/redis-$p.log"
  done
  log="$logs/redis-create.log"
  local nodes=()
  for p in "${redis_ports[@]}"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$log" 2>&1 ||
    part_failed redis "redis-cli --cluster create failed" "$log"
  if ! poll 20 redis_formed; then
    for p in "${redis_ports[@]}"; do
      say "  :$p $(rcli "$p" cluster info | grep -E '^cluster_(state|known_nodes):' | tr '\n' ' ')$(rcli "$p" info replication | grep -E '^(role|connected_slaves|master_link_status):' | tr '\n' ' ')"
    done
    part_failed redis "the cluster did not settle (every node cluster_state:ok, 3 masters each with an online replica) within 20 s" "$log"
  fi
  write_env redis REDIS_URL "$redis_url" REDIS_CLUSTER_PORTS "${redis_ports[*]}"
  say "redis is up in $(since "$t0") s: masters ${redis_masters[*]}, replicas ${redis_replicas[*]} (127.0.0.1)"
}

# The settings both servers share; each gets its own port. Kept in a file of
# its own (included from postgresql.conf) so a later `up` rewrites it whole.
pg_conf() {
  cat <<EOF
# Written by scripts/cluster.sh on each start.
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$pg_socket'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
# booking holds up to DATABASE_MAX_CONNECTIONS (16) per instance and pool.
max_connections = 200
hot_standby = on
# Queries on the replica are not cancelled for rows the primary vacuumed.
hot_standby_feedback = on
# fsync and synchronous_commit keep their defaults (on): a benchmark against
# this cluster pays for durable commits, as production does.
EOF
}

up_postgres() {
  local t0 log n
  t0=$(now)
  mkdir -p "$pg_dir" "$pg_socket"
  chown postgres:postgres "$pg_dir" "$pg_socket"
  chmod 700 "$pg_dir"
  for n in init primary basebackup replica; do
    touch "$logs/postgres-$n.log"
    chown postgres:postgres "$logs/postgres-$n.log"
    mark "$logs/postgres-$n.log"
  done
  started+=(postgres)

  log="$logs/postgres-init.log"
  if [ ! -e "$pg_primary/PG_VERSION" ]; then
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_primary" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >>"$log" 2>&1 ||
      part_failed postgres "initdb of the primary failed" "$log"
    echo "include_if_exists = 'cluster.conf'" >>"$pg_primary/postgresql.conf"
  fi
  pg_conf "$pg_primary_port" >"$pg_primary/cluster.conf"
  cat >"$pg_primary/pg_hba.conf" <<EOF
# Written by scripts/cluster.sh: loopback only, no passwords.
local all         all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
EOF
  chown postgres:postgres "$pg_primary/cluster.conf" "$pg_primary/pg_hba.conf"
  log="$logs/postgres-primary.log"
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_primary" -l "$log" -w -t 30 -s start >>"$log" 2>&1 ||
    part_failed postgres "the primary did not start" "$log"
  if [ "$(psql_at "$pg_primary_port" -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'booking'" 2>>"$log")" = 0 ]; then
    psql_at "$pg_primary_port" -d postgres -c "CREATE DATABASE booking" >>"$log" 2>&1 ||
      part_failed postgres "CREATE DATABASE booking failed" "$log"
  fi

  # The replica is copied afresh each time: a base backup of a small
  # database takes a second, and the copy's settings then always match.
  # A replication slot keeps the WAL it has not received yet.
  log="$logs/postgres-basebackup.log"
  rm -rf "$pg_replica"
  psql_at "$pg_primary_port" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$pg_slot'" >>"$log" 2>&1 ||
    part_failed postgres "could not drop the old replication slot $pg_slot" "$log"
  runuser -u postgres -- "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$pg_primary_port" -U postgres -D "$pg_replica" \
    -R -X stream -C -S "$pg_slot" -c fast --no-sync >>"$log" 2>&1 ||
    part_failed postgres "pg_basebackup of the primary failed" "$log"
  pg_conf "$pg_replica_port" >"$pg_replica/cluster.conf"
  chown postgres:postgres "$pg_replica/cluster.conf"
  log="$logs/postgres-replica.log"
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_replica" -l "$log" -w -t 30 -s start >>"$log" 2>&1 ||
    part_failed postgres "the replica did not start" "$log"
  poll 20 pg_streaming ||
    part_failed postgres "the replica did not stream from the primary within 20 s (pg_stat_replication)" "$log"
  write_env postgres DATABASE_URL "$database_url" DATABASE_READ_URL "$database_read_url" \
    PG_PRIMARY_PORT "$pg_primary_port" PG_REPLICA_PORT "$pg_replica_port"
  say "postgres is up in $(since "$t0") s: primary :$pg_primary_port, replica :$pg_replica_port streaming"
}

# ADMIN_KEY and TOKEN_SECRET, made once per CLUSTER_DIR so every instance,
# and every later `up`, signs and checks with the same keys.
secrets() {
  local file="$dir/secrets.env"
  if [ ! -s "$file" ]; then
    (umask 077 && printf 'ADMIN_KEY=%s\nTOKEN_SECRET=%s\n' "$(random_hex)" "$(random_hex)" >"$file.tmp")
    mv -f "$file.tmp" "$file"
  fi
  chmod 600 "$file"
  admin_key=$(sed -n 's/^ADMIN_KEY=//p' "$file")
  token_secret=$(sed -n 's/^TOKEN_SECRET=//p' "$file")
  [ ${#admin_key} -ge 32 ] && [ ${#token_secret} -ge 32 ] ||
    fail "$file must hold ADMIN_KEY= and TOKEN_SECRET= lines of at least 32 characters each (remove it to have new ones made)"
}
random_hex() {
  if command -v openssl >/dev/null; then openssl rand -hex 32; else od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; fi
}

start_booking() {
  local i=$1 port log
  port=$(booking_port "$i")
  log="$logs/booking-$i.log"
  mark "$log"
  # setsid: the instance leaves this terminal's session, like the daemons
  # redis and PostgreSQL become; exec keeps the pid the pid file names.
  (cd "$dir" && BOOKING_LISTEN="127.0.0.1:$port" DATABASE_URL="$database_url" DATABASE_READ_URL="$database_read_url" \
    REDIS_URL="$redis_url" ADMIN_KEY="$admin_key" TOKEN_SECRET="$token_secret" TRUSTED_PROXIES=127.0.0.1/32 \
    exec setsid "$booking_bin" serve) </dev/null >>"$log" 2>&1 &
  echo $! >"$run/booking-$i.pid"
}

await_booking() {
  local i=$1 port pid log deadline status
  port=$(booking_port "$i")
  pid=$(cat "$run/booking-$i.pid")
  log="$logs/booking-$i.log"
  # Migrations run before the first instance is ready: up to 60 s.
  deadline=$((SECONDS + 60))
  until booking_ready "$port"; do
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null && status=0 || status=$?
      part_failed booking "booking-$i exited (status $status)" "$log"
    fi
    [ "$SECONDS" -lt "$deadline" ] || part_failed booking "booking-$i did not answer 200 on http://127.0.0.1:$port/readyz within 60 s" "$log"
    sleep 0.1
  done
}

up_booking() {
  local t0 i urls=()
  t0=$(now)
  secrets
  rm -f "$run"/booking-*.pid
  started+=(booking)
  # The first instance migrates the database; the others start once it is
  # ready, so no two run the migrations at once.
  start_booking 1
  await_booking 1
  for ((i = 2; i <= instances; i++)); do start_booking "$i"; done
  for ((i = 2; i <= instances; i++)); do await_booking "$i"; done
  for ((i = 1; i <= instances; i++)); do urls+=("http://127.0.0.1:$(booking_port "$i")"); done
  write_env booking BOOKING_INSTANCE_URLS "${urls[*]}" ADMIN_KEY "$admin_key" TOKEN_SECRET "$token_secret"
  say "booking is up in $(since "$t0") s: ${urls[*]} (logs $logs/booking-N.log)"
}

# compose/haproxy.cfg takes its addresses from the environment: one
# BOOKING_<n> per instance (up to 9), HAPROXY_BIND, HAPROXY_STATS_BIND.
haproxy_env() {
  local i f n=0
  for f in $(booking_pidfiles); do n=$((n + 1)); done
  for i in 1 2 3 4 5 6 7 8 9; do
    if [ "$i" -le "$n" ]; then export "BOOKING_$i=127.0.0.1:$(booking_port "$i")"; else unset "BOOKING_$i"; fi
  done
  export HAPROXY_BIND="127.0.0.1:$haproxy_port" HAPROXY_STATS_BIND="127.0.0.1:$stats_port"
  # The config allows 20000 clients, which takes about two file descriptors
  # each (HAProxy refuses to start when it cannot raise its limit that far).
  # Under a lower hard limit, as in some containers, fewer clients, said out
  # loud; an HAPROXY_MAXCONN of the caller's own is left to HAProxy to judge.
  local hard fits
  hard=$(ulimit -Hn)
  if [ -z "${HAPROXY_MAXCONN:-}" ] && [ "$hard" != unlimited ] && [ "$hard" -lt 40100 ]; then
    fits=$(((hard - 100) / 2))
    export HAPROXY_MAXCONN=$fits
    say "haproxy: the open-files hard limit is $hard (ulimit -Hn), too low for 20000 clients; running with maxconn $fits (raise the limit to 40100 for 20000)"
  fi
}

up_haproxy() {
  local t0 log="$logs/haproxy.log" cfg="$root/compose/haproxy.cfg"
  t0=$(now)
  mark "$log"
  haproxy_env
  haproxy -c -q -f "$cfg" >>"$log" 2>&1 || part_failed haproxy "haproxy -c -f $cfg refused the configuration" "$log"
  started+=(haproxy)
  # -db: in the foreground (of this background job), so its log lines reach
  # the log file through stdout.
  (cd "$dir" && exec setsid haproxy -db -f "$cfg") </dev/null >>"$log" 2>&1 &
  local pid=$! deadline=$(($(now) + 15000000))
  echo "$pid" >"$run/haproxy.pid"
  until haproxy_all_up; do
    alive "$pid" || part_failed haproxy "haproxy exited" "$log"
    [ "$(now)" -lt "$deadline" ] ||
      part_failed haproxy "not every booking server was UP with a passing check on $stats_url within 15 s ($(haproxy_backends | awk '{ print $1 "/" $2 }') up)" "$log"
    sleep 0.1
  done
  [ "$(http_code "$booking_url/readyz")" = 200 ] || part_failed haproxy "$booking_url/readyz did not answer 200 through haproxy" "$log"
  write_env haproxy BOOKING_URL "$booking_url" HAPROXY_STATS_URL "$stats_url"
  say "haproxy is up in $(since "$t0") s: $booking_url, stats $stats_url"
}

cmd_up() {
  local parts=() part p name
  [ $# -gt 0 ] || set -- redis postgres booking haproxy
  for part in "$@"; do
    case $part in redis | postgres | booking | haproxy) ;; *) say "unknown part: $part"; usage ;; esac
  done
  # Always in dependency order, whatever order they were named in.
  for part in redis postgres booking haproxy; do
    for p in "$@"; do [ "$p" = "$part" ] && { parts+=("$part"); break; }; done
  done
  want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

  instances=${CLUSTER_BOOKING_INSTANCES:-3}
  [[ $instances =~ ^[1-9]$ ]] || fail "CLUSTER_BOOKING_INSTANCES=$instances: must be 1 to 9 (ports BASE+21..BASE+29)"

  # Nothing starts unless all of it can.
  for part in "${parts[@]}"; do
    part_running "$part" && fail "$part already runs from $dir; scripts/cluster.sh down first (or use another CLUSTER_DIR). Nothing was started."
  done
  for part in redis postgres booking haproxy; do
    if part_running "$part" && [ -n "$recorded_base" ] && [ "$recorded_base" != "$base" ]; then
      fail "$dir runs on CLUSTER_PORT_BASE=$recorded_base, not $base; scripts/cluster.sh down first, or use that base. Nothing was started."
    fi
  done
  if want booking; then
    want redis || part_running redis || fail "booking needs this CLUSTER_DIR's redis: scripts/cluster.sh up redis postgres booking. Nothing was started."
    want postgres || part_running postgres || fail "booking needs this CLUSTER_DIR's postgres: scripts/cluster.sh up postgres booking. Nothing was started."
  fi
  if want haproxy && ! want booking && ! part_running booking; then
    fail "haproxy needs this CLUSTER_DIR's booking instances: scripts/cluster.sh up booking haproxy. Nothing was started."
  fi
  want booking || instances=$(booking_pidfiles | wc -l)

  for part in "${parts[@]}"; do
    case $part in
      redis) command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
        fail "redis-server and redis-cli are needed (apt-get install -y redis-server). Nothing was started." ;;
      postgres) [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_basebackup" ] ||
        fail "PostgreSQL's server programs are not in /usr/lib/postgresql/*/bin (apt-get install -y postgresql). Nothing was started."
        id postgres >/dev/null 2>&1 || fail "there is no postgres user to run PostgreSQL as. Nothing was started." ;;
      haproxy) command -v haproxy >/dev/null ||
        fail "haproxy is not installed (apt-get install -y --no-install-recommends haproxy). Nothing was started." ;;
    esac
  done
  command -v curl >/dev/null || fail "curl is needed for the readiness checks. Nothing was started."

  # Every port first: a clash is reported before anything runs.
  local ports=() names=()
  add_port() { ports+=("$1"); names+=("$2"); }
  if want redis; then
    for p in "${redis_ports[@]}"; do add_port "$p" "redis node"; done
    for p in "${redis_ports[@]}"; do add_port $((p + 10000)) "redis cluster bus of :$p"; done
  fi
  if want postgres; then add_port "$pg_primary_port" "postgres primary"; add_port "$pg_replica_port" "postgres replica"; fi
  if want booking; then for ((p = 1; p <= instances; p++)); do add_port "$(booking_port "$p")" "booking-$p"; done; fi
  if want haproxy; then add_port "$haproxy_port" "haproxy"; add_port "$stats_port" "haproxy stats"; fi
  for p in "${!ports[@]}"; do
    if taken "${ports[p]}"; then
      fail "127.0.0.1:${ports[p]} (${names[p]}) is taken: something already listens there. Nothing was started. Free it, or pick another CLUSTER_PORT_BASE (now $base; the cluster uses BASE..BASE+30 and BASE+10001..BASE+10006)."
    fi
  done

  mkdir -p "$dir" "$run" "$logs"
  dir=$(cd "$dir" && pwd -P)
  run="$dir/run" logs="$dir/logs" pg_dir="$dir/postgres"
  pg_primary="$pg_dir/primary" pg_replica="$pg_dir/replica" pg_socket="$pg_dir/socket"
  if want postgres; then
    runuser -u postgres -- test -x "$dir" ||
      fail "the postgres user cannot enter $dir (it or a directory above it is not searchable by others, as with /root or a 0700 temporary directory); use a CLUSTER_DIR it can reach, or chmod o+x the blocking directory. Nothing was started."
    name="$pg_socket/.s.PGSQL.$pg_replica_port"
    [ ${#name} -le 100 ] || fail "CLUSTER_DIR is too long for PostgreSQL's socket path ($name is ${#name} bytes, at most 100 fit); use a shorter one. Nothing was started."
  fi

  if want booking; then
    if [ -n "${BOOKING_BIN:-}" ]; then
      booking_bin=$(absolute "$BOOKING_BIN")
    else
      say "building booking (release; the first build takes 10-15 minutes on 2 cores)"
      cargo build --release -p booking || fail "cargo build --release -p booking failed. Nothing was started."
      # cargo reads a relative CARGO_TARGET_DIR from where it runs: here.
      case ${CARGO_TARGET_DIR:-target} in
        /*) booking_bin="$CARGO_TARGET_DIR/release/booking" ;;
        *) booking_bin="$root/${CARGO_TARGET_DIR:-target}/release/booking" ;;
      esac
    fi
    [ -x "$booking_bin" ] || fail "$booking_bin is not an executable (BOOKING_BIN). Nothing was started."
  fi

  echo "$base" >"$run/port-base"
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  for part in "${parts[@]}"; do "up_$part"; done
  finished=1
  say "up: ${parts[*]}; the URLs, ports and secrets are in $dir/cluster.env (. $dir/cluster.env), logs in $logs"
}

# --- status ----------------------------------------------------------------

healthy=0 unhealthy=0
report() {
  local part=$1 state=$2
  shift 2
  printf '%-10s %-12s %s\n' "$part" "$state" "$*"
  case $state in ok) healthy=$((healthy + 1)) ;; "not started") ;; *) unhealthy=$((unhealthy + 1)) ;; esac
}

status_redis() {
  local files f p info state role masters=() replicas=() down=() notok=() unlinked=()
  files=$(redis_pidfiles)
  [ -n "$files" ] || { report redis "not started"; return; }
  for f in $files; do
    p=$(basename "$f" .pid | sed 's/^redis-//')
    if ! running "$f" redis-server >/dev/null || [ "$(rcli "$p" ping)" != PONG ]; then down+=("$p"); continue; fi
    info=$(rcli "$p" cluster info)
    state=$(field cluster_state <<<"$info")
    [ "$state" = ok ] || notok+=("$p:${state:-?}")
    info=$(rcli "$p" info replication)
    role=$(field role <<<"$info")
    if [ "$role" = master ]; then
      masters+=("$p")
      grep -q '^slave0:.*state=online' <<<"$info" || unlinked+=("$p(no online replica)")
    else
      replicas+=("$p")
      [ "$(field master_link_status <<<"$info")" = up ] || unlinked+=("$p(link $(field master_link_status <<<"$info"))")
    fi
  done
  local text="cluster_state ok on $((${#masters[@]} + ${#replicas[@]} - ${#notok[@]}))/6; masters ${masters[*]:-none}; replicas ${replicas[*]:-none}"
  [ ${#down[@]} -eq 0 ] || text+="; not answering: ${down[*]}"
  [ ${#notok[@]} -eq 0 ] || text+="; not ok: ${notok[*]}"
  [ ${#unlinked[@]} -eq 0 ] || text+="; replication: ${unlinked[*]}"
  if [ ${#down[@]} -eq 0 ] && [ ${#notok[@]} -eq 0 ] && [ ${#unlinked[@]} -eq 0 ] && [ ${#masters[@]} = 3 ] && [ ${#replicas[@]} = 3 ]; then
    report redis ok "$text"
  else
    report redis FAILING "$text"
  fi
}

status_postgres() {
  local primary replica row
  if [ ! -e "$pg_primary/postmaster.pid" ] && [ ! -e "$pg_replica/postmaster.pid" ] && [ ! -e "$run/env.postgres" ]; then
    report postgres "not started"
    return
  fi
  if [ -z "$pg_bin" ]; then report postgres FAILING "psql not found in /usr/lib/postgresql/*/bin"; return; fi
  primary=$(psql_at "$pg_primary_port" -d booking -c "SELECT pg_is_in_recovery()" 2>/dev/null || true)
  replica=$(psql_at "$pg_replica_port" -d booking -c "SELECT pg_is_in_recovery()" 2>/dev/null || true)
  # Lag as the primary sees it: the bytes of WAL the replica has not
  # replayed yet, and replay_lag, how long recent WAL took to be replayed
  # there ("idle" when there was no recent WAL to measure).
  row=$(psql_at "$pg_primary_port" -d postgres -F ' ' -c "SELECT state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), coalesce(round(extract(epoch FROM replay_lag)::numeric, 3)::text || ' s', 'idle') FROM pg_stat_replication LIMIT 1" 2>/dev/null || true)
  local state lag_bytes lag_secs text
  read -r state lag_bytes lag_secs <<<"$row"
  case $primary in
    f) text="primary :$pg_primary_port accepting writes" ;;
    t) text="primary :$pg_primary_port is in recovery (not a primary)" ;;
    *) text="primary :$pg_primary_port not answering" ;;
  esac
  case $replica in
    t) text+="; replica :$pg_replica_port in recovery" ;;
    f) text+="; replica :$pg_replica_port is NOT in recovery (promoted?)" ;;
    *) text+="; replica :$pg_replica_port not answering" ;;
  esac
  if [ "$state" = streaming ]; then
    text+=", streaming, lag ${lag_bytes:-?} bytes, replay lag ${lag_secs:-?}"
  else
    text+=", not streaming (pg_stat_replication: ${state:-no replica connected})"
  fi
  if [ "$primary" = f ] && [ "$replica" = t ] && [ "$state" = streaming ]; then report postgres ok "$text"; else report postgres FAILING "$text"; fi
}

status_booking() {
  local files f i port code
  files=$(booking_pidfiles)
  [ -n "$files" ] || { report booking "not started"; return; }
  for f in $files; do
    i=$(basename "$f" .pid | sed 's/^booking-//')
    port=$(booking_port "$i")
    if ! running "$f" >/dev/null; then report "booking-$i" FAILING "process $(head -n 1 "$f") is not running (see $logs/booking-$i.log)"; continue; fi
    code=$(http_code "http://127.0.0.1:$port/readyz")
    if [ "$code" = 200 ]; then report "booking-$i" ok "http://127.0.0.1:$port/readyz 200"; else report "booking-$i" FAILING "http://127.0.0.1:$port/readyz ${code:-no answer}"; fi
  done
}

status_haproxy() {
  local up total code
  [ -e "$run/haproxy.pid" ] || { report haproxy "not started"; return; }
  running "$run/haproxy.pid" haproxy >/dev/null || { report haproxy FAILING "process $(head -n 1 "$run/haproxy.pid") is not running (see $logs/haproxy.log)"; return; }
  read -r up total < <(haproxy_backends)
  code=$(http_code "$booking_url/readyz")
  local text="$booking_url/readyz ${code:-no answer}; backends UP $up/$total ($stats_url)"
  if [ "$total" -gt 0 ] && [ "$up" = "$total" ] && [ "$code" = 200 ]; then report haproxy ok "$text"; else report haproxy FAILING "$text"; fi
}

cmd_status() {
  [ $# -eq 0 ] || usage
  if [ ! -d "$dir" ]; then say "nothing was started in $dir"; exit 1; fi
  status_redis
  status_postgres
  status_booking
  status_haproxy
  if [ "$unhealthy" -gt 0 ]; then exit 1; fi
  if [ "$healthy" -eq 0 ]; then say "nothing is started in $dir"; exit 1; fi
}

# --- down ------------------------------------------------------------------

cmd_down() {
  [ $# -eq 0 ] || usage
  if [ ! -d "$run" ]; then say "nothing to stop in $dir"; return; fi
  local part
  for part in haproxy booking postgres redis; do stop_part "$part"; done
  say "down: nothing of $dir runs any more (its data and logs stay)"
}

case $command in
  up) cmd_up "$@" ;;
  status) cmd_status "$@" ;;
  down) cmd_down "$@" ;;
  *) usage ;;
esac
