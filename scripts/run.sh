#!/usr/bin/env bash
# Starts the platform on its embedded defaults:
# - the booking service: SQLite in ./booking.db and the in-process queue, on
#   http://127.0.0.1:8080 (DATABASE_URL / REDIS_URL switch to PostgreSQL and
#   Redis, see README: settings);
# - the alert engine watching it: it scrapes booking's /metrics itself (no
#   Prometheus needed), pages the console with runbook links, and keeps
#   incidents in ./alerting.db; its API is on http://127.0.0.1:9095.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p booking -p alerting
port="${BOOKING_LISTEN:-127.0.0.1:8080}"
port="${port##*:}"
ALERTING_SCRAPE="${ALERTING_SCRAPE:-booking=http://127.0.0.1:${port}/metrics}" RUST_LOG="${ALERTING_LOG:-warn}" \
  target/release/alerting serve &
alerting=$!
trap 'kill "$alerting" 2>/dev/null || true; wait "$alerting" 2>/dev/null || true' EXIT INT TERM
target/release/booking serve
