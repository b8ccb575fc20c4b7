#!/bin/sh
# Lets the streaming replica (the compose service postgres-replica) connect
# for replication with the postgres user's password. Runs once, on the
# volume's first start, before the server starts for real.
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
