#!/usr/bin/env bash
# The README's chaos drill on real processes, timed: booking and the alerting
# service on their embedded defaults (scratch directory, own ports), steady
# traffic of 5 requests a second, the chaos switch failing every request for
# FAULT_SECS (180), then WATCH_SECS (600) of recovery. Prints every page the
# console received with its time, and when the fault began and ended, so the
# README's "one incident, paged about 2m05s after, resolved about 3 minutes
# after the fix" can be checked as written.
#
#   scripts/drill.sh                 # the 3-minute outage
#   FAULT_SECS=10 scripts/drill.sh   # a fixed blip: expect no page
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p booking -p alerting
dir="$(mktemp -d)"
booking_port="${BOOKING_PORT:-18080}"
alerting_port="${ALERTING_PORT:-19095}"
BOOKING_LISTEN="127.0.0.1:$booking_port" DATABASE_URL="sqlite://$dir/booking.db" RUST_LOG=warn \
  target/release/booking serve >"$dir/booking.log" 2>&1 &
booking=$!
ALERTING_LISTEN="127.0.0.1:$alerting_port" ALERTING_DATABASE_URL="sqlite://$dir/alerting.db" \
  ALERTING_SCRAPE="booking=http://127.0.0.1:$booking_port/metrics" ALERTING_CONSOLE_FILE="$dir/console.jsonl" \
  RUST_LOG=warn target/release/alerting serve >"$dir/alerting.log" 2>&1 &
alerting=$!
traffic=""
trap 'kill $traffic $alerting $booking 2>/dev/null || true; wait 2>/dev/null || true' EXIT
url="http://127.0.0.1:$booking_port"
for _ in $(seq 100); do curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && break; sleep 0.1; done
( while true; do curl -s -o /dev/null "$url/v1/concerts"; sleep 0.2; done ) &
traffic=$!
echo "scratch: $dir; healthy traffic for ${WARMUP_SECS:-60} s"
sleep "${WARMUP_SECS:-60}"
curl -fsS -X PUT "$url/v1/admin/chaos" -H 'x-admin-key: dev-admin-key' -H 'content-type: application/json' \
  -d '{"error_ratio":1.0}' >/dev/null
on="$(date -u +%FT%TZ)"
echo "$on chaos on"
sleep "${FAULT_SECS:-180}"
curl -fsS -X DELETE "$url/v1/admin/chaos" -H 'x-admin-key: dev-admin-key' >/dev/null
off="$(date -u +%FT%TZ)"
echo "$off chaos off; watching ${WATCH_SECS:-600} s"
sleep "${WATCH_SECS:-600}"
echo "pages (sent_at, kind, alert, severity, recipients):"
python3 - "$dir/console.jsonl" "$on" "$off" <<'PY'
import json, sys
from datetime import datetime
on, off = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in sys.argv[2:4])
try:
    lines = open(sys.argv[1]).read().splitlines()
except FileNotFoundError:
    lines = []
for line in lines:
    p = json.loads(line)
    at = datetime.fromisoformat(p["sent_at"][:26] + "+00:00")
    rel = f"+{(at - on).total_seconds():.0f} s after chaos on, {(at - off).total_seconds():+.0f} s from chaos off"
    print(p["sent_at"][:19], p["page"]["kind"]["type"], p["page"]["alert"], p["page"]["severity"], len(p["to"]), "people,", rel)
print(f"{len(lines)} page(s)")
PY
