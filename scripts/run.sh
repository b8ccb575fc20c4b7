#!/usr/bin/env bash
# Starts the booking service on its embedded defaults: SQLite in ./booking.db
# and the in-process queue, on http://127.0.0.1:8080. Set DATABASE_URL and
# REDIS_URL to use PostgreSQL and Redis instead (see README: settings).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p booking -- serve
