#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL and Redis are installed and
# running on loopback (installing or starting them when they are not), and
# that Prometheus, docker-compose, k6, rotel, aiosmtpd and schemathesis are
# installed, then runs every test of the workspace against them.
#
#   scripts/test.sh            # everything
#   scripts/test.sh some_name  # only tests whose name contains some_name
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

if [ -z "${TEST_DATABASE_URL:-}" ]; then ensure_postgres; fi
if [ -z "${TEST_REDIS_URL:-}" ]; then ensure_redis; fi
ensure_test_tools

if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  log "cargo test --workspace"
  cargo test --workspace --no-fail-fast -- "$@"
fi
