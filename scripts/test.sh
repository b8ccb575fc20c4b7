#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL and Redis are installed and
# running on loopback (installing or starting them when they are not), and
# that Prometheus, docker-compose, k6, rotel, aiosmtpd and schemathesis are
# installed, then checks formatting (`cargo fmt --check`, rustfmt.toml)
# and lints (`cargo clippy -D warnings`) and runs every test of the
# workspace against them. A formatting or lint error fails the run before
# any test.
#
#   scripts/test.sh            # everything
#   scripts/test.sh some_name  # only tests whose name contains some_name
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

if [ -z "${TEST_DATABASE_URL:-}" ]; then ensure_postgres; fi
if [ -z "${TEST_REDIS_URL:-}" ]; then ensure_redis; fi
ensure_test_tools

log "cargo fmt --all --check"
cargo fmt --all --check || { log "formatting differs from rustfmt.toml: run cargo fmt --all"; exit 1; }
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings || { log "clippy found warnings (above)"; exit 1; }

if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  log "cargo test --workspace"
  cargo test --workspace --no-fail-fast -- "$@"
fi
