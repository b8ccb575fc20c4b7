#!/usr/bin/env bash
# The README's chaos drill against a running platform (scripts/run.sh, or
# yours: BOOKING_URL, ALERTING_URL, ADMIN_KEY, ALERTING_API_KEY): steady
# traffic, the chaos switch on, then it waits for the page, acks it, runs the
# runbook with --apply --yes and waits for the resolve, printing each stage
# (fault, pending, page, ack, mitigated, resolved) with its time. Exits 1 when
# a stage does not happen within its limit (scripts/lib/drill.py lists them),
# 2 when there is no platform to drill. About 5 minutes on the shipped rules.
#
#   scripts/run.sh          # in one terminal
#   scripts/drill.sh        # in another
set -euo pipefail
exec python3 "$(dirname "$0")/lib/drill.py" "$@"
