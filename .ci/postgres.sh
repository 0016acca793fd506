#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the Prefect-server integration tests and print its URL.
#
# CI runs as root on Debian 12. This script installs PostgreSQL when it is missing, creates a
# dedicated Debian cluster "realnet" that listens on 127.0.0.1 only (on a port away from 5432
# so it never fights a system cluster), creates role `realnet` and database `prefect`, and
# prints
#     postgresql+asyncpg://realnet:PASS@127.0.0.1:PORT/prefect
# as the LAST line of stdout. Everything else goes to stderr so callers can take `tail -n1`.
#
# Safe to run any number of times: an existing cluster is reused (and started if down), the
# role and database are only created when absent, and a generated password is kept in the
# cluster's data directory so every run prints the same URL.
#
# Environment:
#   REALNET_PG_PORT      port for the cluster (default 55432); ignored once the cluster exists
#   REALNET_PG_PASSWORD  password for role realnet (default: generated once, then reused)
#   REALNET_PG_CLUSTER   Debian cluster name (default realnet)
set -euo pipefail

PORT="${REALNET_PG_PORT:-55432}"
CLUSTER="${REALNET_PG_CLUSTER:-realnet}"
ROLE=realnet
DB=prefect

log() { echo "postgres.sh: $*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
    # apt, pg_createcluster and switching to the postgres user all need root.
    log "must run as root (CI does); set REALNET_TEST_PG_URL to use an existing server instead"
    exit 2
fi

if ! command -v pg_createcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The package's own post-install creates and starts a "main" cluster on 5432; harmless,
    # and we never use it.
    apt-get install -y -qq postgresql >&2
fi

# Newest installed major version; Debian 12 ships 15.
VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
[[ -n "$VERSION" ]] || { log "no PostgreSQL under /usr/lib/postgresql"; exit 1; }

cluster_line() { pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c'; }

if [[ -z "$(cluster_line)" ]]; then
    log "creating cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
    # --start-conf=manual: a reboot or a `service postgresql start` must not bring it back on
    # its own; only this script owns it.
    pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" --start-conf=manual >&2
fi

# Our settings live in conf.d (Debian clusters include it), rewritten every run so a rerun
# repairs them. pg_createcluster -o does not quote values, which breaks listen_addresses.
# fsync and friends are off because this database is disposable and test speed matters more.
CONFDIR="/etc/postgresql/$VERSION/$CLUSTER/conf.d"
install -d -o postgres -g postgres "$CONFDIR"
cat >"$CONFDIR/90-realnet.conf" <<'CONF'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
chown postgres:postgres "$CONFDIR/90-realnet.conf"

# Reuse the port the cluster was created with, whatever REALNET_PG_PORT says now.
PORT="$(cluster_line | awk '{print $3}')"
STATUS="$(cluster_line | awk '{print $4}')"
DATADIR="$(cluster_line | awk '{print $6}')"

if [[ "$STATUS" != online* ]]; then
    log "starting cluster $VERSION/$CLUSTER on port $PORT"
    # pg_ctlcluster needs its socket directory; containers often lack /run/postgresql.
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

# Keep the password beside the data so reruns print the same URL and clients stay valid.
PWFILE="$DATADIR/realnet-password"
if [[ -n "${REALNET_PG_PASSWORD:-}" ]]; then
    PASS="$REALNET_PG_PASSWORD"
elif [[ -s "$PWFILE" ]]; then
    PASS="$(cat "$PWFILE")"
else
    # Hex only, so it needs no escaping inside the URL.
    PASS="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi
umask 077
printf '%s' "$PASS" >"$PWFILE"
chown postgres:postgres "$PWFILE"

psql_admin() {
    runuser -u postgres -- psql --cluster "$VERSION/$CLUSTER" -X -q -v ON_ERROR_STOP=1 "$@"
}

# Wait for the server to accept connections (start returns before that on slow disks).
for _ in $(seq 1 60); do
    if runuser -u postgres -- pg_isready -q --cluster "$VERSION/$CLUSTER" 2>/dev/null \
        || psql_admin -d postgres -c 'select 1' >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done

# The password travels as a psql variable so quoting is handled by :'pass'.
# CREATEDB lets tests make a fresh database each so runs do not see each other's state.
psql_admin -d postgres -v pass="$PASS" -v role="$ROLE" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pass')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pass') \gexec
SQL

if [[ -z "$(psql_admin -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]]; then
    log "creating database $DB"
    runuser -u postgres -- createdb --cluster "$VERSION/$CLUSTER" -O "$ROLE" -E UTF8 -T template0 "$DB"
fi

# Percent-encode so a hand-picked password with @, / or : still yields a valid URL.
urlencode() {
    local s="$1" out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "$c" in
            [a-zA-Z0-9.~_-]) out+="$c" ;;
            *) out+="$(printf '%%%02X' "'$c")" ;;
        esac
    done
    printf '%s' "$out"
}

echo "postgresql+asyncpg://$ROLE:$(urlencode "$PASS")@127.0.0.1:$PORT/$DB"
