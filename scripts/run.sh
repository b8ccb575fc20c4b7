#!/usr/bin/env bash
# Starts the platform on its embedded defaults, all of it or none of it:
# - booking: SQLite in ./booking.db and the in-process queue, on
#   http://127.0.0.1:8080 (BOOKING_LISTEN; DATABASE_URL / REDIS_URL switch to
#   PostgreSQL and Redis, see README: settings);
# - alerting: scrapes booking's /metrics itself (no Prometheus needed), keeps
#   incidents in ./alerting.db, API on http://127.0.0.1:9095 (ALERTING_LISTEN);
# - runbook: built next to them, for the commands a page prints.
# Pages appear on this terminal, one coloured block each; the services' JSON
# logs go to ./logs/booking.log and ./logs/alerting.log. If a port is taken or
# a part fails to start, everything started is stopped and the exit is
# non-zero. Ctrl-C stops everything.
#
#   scripts/run.sh
#   BOOKING_LISTEN=127.0.0.1:8081 ALERTING_LISTEN=127.0.0.1:9096 scripts/run.sh
#
# RUN_DIR (default: the checkout) is where the databases and logs/ go;
# RUN_BIN_DIR runs already-built binaries from there instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
run_dir="${RUN_DIR:-$root}"
booking_listen="${BOOKING_LISTEN:-127.0.0.1:8080}"
alerting_listen="${ALERTING_LISTEN:-127.0.0.1:9095}"

# Appended (a fresh O_APPEND open of our stderr), so that with the output in a
# file the messages land after the pages alerting appends there, not over them.
say() { printf 'run.sh: %s\n' "$*" >>/dev/fd/2; }
fail() { say "$*"; exit 1; }

# Something accepts connections there (bash's /dev/tcp, no extra tools).
taken() { (exec 9<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for pair in "booking:$booking_listen:BOOKING_LISTEN" "alerting:$alerting_listen:ALERTING_LISTEN"; do
  IFS=: read -r part host port setting <<<"$pair"
  if taken "$host:$port"; then
    fail "$host:$port is taken (something already listens there; is the platform running already?). Nothing was started. Free the port, or give $part another: $setting=127.0.0.1:<port> scripts/run.sh"
  fi
done

if [ -n "${RUN_BIN_DIR:-}" ]; then
  bin="$(cd "$RUN_BIN_DIR" && pwd)"
else
  say "building booking, alerting and runbook (release; the first build takes 10-15 minutes on 2 cores)"
  cargo build --release -p booking -p alerting -p runbook
  bin="$(cd "${CARGO_TARGET_DIR:-$root/target}/release" && pwd)"
fi
for b in booking alerting runbook; do [ -x "$bin/$b" ] || fail "$bin/$b is missing"; done

mkdir -p "$run_dir/logs"
booking_log="$run_dir/logs/booking.log"
alerting_log="$run_dir/logs/alerting.log"
booking_url="http://$booking_listen"
alerting_url="http://$alerting_listen"
booking="" alerting=""

stop() {
  for pid in $alerting $booking; do kill "$pid" 2>/dev/null || true; done
  for pid in $alerting $booking; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop; say "stopped"; exit 0' INT TERM
trap stop EXIT

# Up once /healthz answers; failed if the process exits first or 60 s pass.
await() {
  local name="$1" pid="$2" url="$3" log="$4"
  for _ in $(seq 600); do
    curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null && status=0 || status=$?
      say "$name failed to start (exit $status); the end of $log:"
      tail -n 5 "$log" >>/dev/fd/2 || true
      say "stopping everything"
      exit 1
    fi
    sleep 0.1
  done
  say "$name did not answer $url/healthz within 60 s; stopping everything"
  exit 1
}

(cd "$run_dir" && BOOKING_LISTEN="$booking_listen" exec "$bin/booking" serve) >>"$booking_log" 2>&1 &
booking=$!
await booking "$booking" "$booking_url" "$booking_log"

# Pages go to this terminal (descriptor 3), logs to the file.
(cd "$run_dir" && ALERTING_LISTEN="$alerting_listen" \
  ALERTING_SCRAPE="${ALERTING_SCRAPE:-booking=$booking_url/metrics}" \
  ALERTING_CONSOLE_FILE="${ALERTING_CONSOLE_FILE:-/dev/fd/3}" ALERTING_CONSOLE_FORMAT="${ALERTING_CONSOLE_FORMAT:-text}" \
  ALERTING_PAGE_COMMAND_DIR="${ALERTING_PAGE_COMMAND_DIR:-$bin}" \
  exec "$bin/alerting" serve) 3>&1 >>"$alerting_log" 2>&1 &
alerting=$!
await alerting "$alerting" "$alerting_url" "$alerting_log"

db() { case "$1" in sqlite:///*) echo "/${1#sqlite:///}" ;; sqlite://*) echo "$run_dir/${1#sqlite://}" ;; *) echo "$1" | sed -E 's#(://[^:/@]+:)[^@]*@#\1***@#' ;; esac; }
cat >>/dev/fd/1 <<EOF
The platform is up (pids: booking $booking, alerting $alerting):
  booking   $booking_url   data $(db "${DATABASE_URL:-sqlite://booking.db}")   log $booking_log
  alerting  $alerting_url   data $(db "${ALERTING_DATABASE_URL:-sqlite://alerting.db}")   log $alerting_log
  pages     here, on this terminal, as they are sent
  commands  $bin/alerting (incidents list, ack), $bin/runbook (show, run)
EOF
if [ "$booking_url" != "http://127.0.0.1:8080" ] || [ "$alerting_url" != "http://127.0.0.1:9095" ]; then
  echo "  other ports: in another shell, export BOOKING_URL=$booking_url ALERTING_URL=$alerting_url" >>/dev/fd/1
fi
echo "Stop with Ctrl-C." >>/dev/fd/1

# Runs until Ctrl-C, or until one part dies: then the other is stopped too.
wait -n "$booking" "$alerting" && status=0 || status=$?
kill -0 "$booking" 2>/dev/null && survivor=booking || survivor=alerting
if [ "$survivor" = booking ]; then died=alerting; log="$alerting_log"; else died=booking; log="$booking_log"; fi
say "$died exited (status $status); the end of $log:"
tail -n 5 "$log" >>/dev/fd/2 || true
say "stopping everything"
exit 1
