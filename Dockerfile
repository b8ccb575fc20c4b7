# The booking service, the alerting service and the runbook CLI, in one image. Build from the repository root:
#   docker build -t booking .            (or: cd compose && docker-compose build booking)
# Works with the classic builder and BuildKit alike (no RUN --mount).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace (see .dockerignore): every member in Cargo.toml must be present for cargo.
COPY . .
RUN cargo build --release --locked -p booking -p alerting -p runbook \
    && install -m 0755 target/release/booking target/release/alerting target/release/runbook /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 booking \
    && useradd --system --uid 10001 --gid booking --home-dir /var/lib/booking --create-home \
       --shell /usr/sbin/nologin booking \
    && install -d -o booking -g booking /var/lib/alerting
COPY --from=builder /usr/local/bin/booking /usr/local/bin/alerting /usr/local/bin/runbook /usr/local/bin/
# What runbook links point at unless RUNBOOK_BASE_URL names your repository's copy.
COPY runbooks/*.md /usr/share/booking/runbooks/
# The working directory is writable, for the SQLite fallback (sqlite://booking.db) when DATABASE_URL is unset.
WORKDIR /var/lib/booking
USER 10001:10001
# Inside a container the service must listen beyond loopback; it then refuses the public dev
# ADMIN_KEY/TOKEN_SECRET, so those must be given at run time.
ENV BOOKING_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["booking"]
CMD ["serve"]
